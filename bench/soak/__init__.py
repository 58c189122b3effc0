"""The fault soak: the whole pipeline on the local stack under steady traffic and scheduled faults,
then a checker that compares every store with the generator's own accounting.

    .venv/bin/python -m bench.soak --minutes 60 --rate 1000 --fault-every 60

By part: ``traffic`` (the generator's records at a steady rate, and what they must become,
counted as they are produced), ``services`` (the pipeline's processes with the soak's own topics,
database and schema), ``faults`` (the menu and the seeded scheduler), ``proxy`` (a TCP path that
can be slowed, reset or cut), ``watch`` (readiness, lag, RSS and Prometheus' alerts over time),
``checker`` (the invariants after the drain), ``report`` (the table and ``soak.json``) and
``runner`` (one soak, start to end).
"""
