"""CloudEvents on the wire, and what the operations tools share with the local Knative stand-in: the
bindings between HTTP and Kafka (`binding`, also the functions' own reader and writer of events), the
broker's Triggers as data (`topology`), Knative's delivery rules (`dispatch`) and whole events in
Kafka records (`records`, for `saga replay` and the tests)."""
