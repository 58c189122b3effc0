"""Dead letters as a working queue: count, read, export and replay them (``./pipeline dlq``).

Here, in ``shared``, because every service image holds ``shared/``: ``python -m shared.dlqtool``
runs in any of them (replaying ``bridge.*`` letters needs the bridge image, whose rules it runs).

- :mod:`shared.dlqtool.letters`: a dead letter decoded, the selection filters, the stats (pure);
- :mod:`shared.dlqtool.replay`: the replay plan (pure) and the ledger's record format;
- :mod:`shared.dlqtool.kafka_io`: the one Kafka layer (read a topic to its end, publish in transactions);
- :mod:`shared.dlqtool.cli`: the commands and their output.
"""
