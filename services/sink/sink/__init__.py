"""Hop 2 of the pipeline: local Kafka → MongoDB, batched, idempotent, never losing an event."""
