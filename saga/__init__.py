"""knative-saga's saga framework: define a saga with the DSL, run it with the engine, serve
participants idempotently, and publish through the transactional outbox."""

from saga.dsl import SagaDefinition, StepFailed, fail, step
from saga.engine import SagaEngine
from saga.messages import Command, Outcome, Reply

__all__ = ["Command", "Outcome", "Reply", "SagaDefinition", "SagaEngine", "StepFailed", "fail", "step"]
