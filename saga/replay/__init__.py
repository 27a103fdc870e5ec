"""`saga replay`: re-deliver the broker's history to its Triggers' subscribers, redrive dead letters,
or send one saga's events somewhere to look at them (docs/replay.md)."""
