"""Hop 1 of the pipeline: remote Kafka → local Kafka, exactly once, with a dead-letter topic."""
