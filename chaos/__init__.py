"""Fault injection under load with an invariant checker (`make chaos`); see docs/guarantees.md."""
