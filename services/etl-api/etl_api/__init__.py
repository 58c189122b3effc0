"""Hop 3 of the pipeline: MongoDB raw events → PostgreSQL star schema, with Spark, behind FastAPI.

``python -m etl_api`` serves the HTTP API (``app.create_app``); every run is its own process,
``python -m etl_api.job --run-id <uuid>`` (``job.main``), launched by the API (``runs.RunLauncher``).
"""
