"""Reading a service's ``/metrics`` text in tests, with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample_sum(text: str, sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` (e.g. ``…_total``) whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )
