// Reads every record of a topic as Knative's Kafka broker dispatcher does (CloudEvents Java SDK 4.0.1,
// KafkaMessageFactory over the record's headers and value) and prints one tab-separated line per
// record: partition, offset, OK or the decoding error, the event id, its partitionkey extension, the
// record key. Run with Java's single-file launcher: java -cp JARS DecodeRecords.java BOOTSTRAP TOPIC
import io.cloudevents.CloudEvent;
import io.cloudevents.kafka.KafkaMessageFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

public class DecodeRecords {
  public static void main(String[] args) {
    Properties props = new Properties();
    props.put("bootstrap.servers", args[0]);
    props.put("enable.auto.commit", "false");
    try (KafkaConsumer<String, byte[]> consumer =
        new KafkaConsumer<>(props, new StringDeserializer(), new ByteArrayDeserializer())) {
      List<TopicPartition> partitions = new ArrayList<>();
      for (PartitionInfo info : consumer.partitionsFor(args[1])) {
        partitions.add(new TopicPartition(args[1], info.partition()));
      }
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      Map<TopicPartition, Long> ends = consumer.endOffsets(partitions);
      long deadline = System.currentTimeMillis() + 60_000;
      while (System.currentTimeMillis() < deadline && !reachedEnd(consumer, ends)) {
        for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(500))) {
          String line;
          try {
            CloudEvent event = KafkaMessageFactory.createReader(record).toEvent();
            Object key = event.getExtension("partitionkey");
            line = "OK\t" + event.getId() + "\t" + (key == null ? "" : key);
          } catch (RuntimeException e) {
            line = "ERROR " + e.getClass().getSimpleName() + ": " + String.valueOf(e.getMessage()).replace('\n', ' ') + "\t\t";
          }
          System.out.println(record.partition() + "\t" + record.offset() + "\t" + line + "\t"
              + (record.key() == null ? "" : record.key()));
        }
      }
    }
  }

  private static boolean reachedEnd(KafkaConsumer<String, byte[]> consumer, Map<TopicPartition, Long> ends) {
    for (Map.Entry<TopicPartition, Long> end : ends.entrySet()) {
      if (consumer.position(end.getKey()) < end.getValue()) {
        return false;
      }
    }
    return true;
  }
}
