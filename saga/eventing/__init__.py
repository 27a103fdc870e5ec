"""What the operations tools share with the local Knative stand-in: the broker's Triggers as data
(`topology`), Knative's delivery rules (`dispatch`) and the CloudEvents Kafka binding (`records`).
Imported by the local dispatcher and by `saga replay`, never by a function."""
