"""Code the services share: event model, serde, Kafka client factory, errors, logging, metrics.

Services never import each other; anything two of them need lives here.
"""
