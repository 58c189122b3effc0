"""The soak's generator waits out every remote outage its faults make: the hour soak of 2026-12-07
died at minute 19 when the remote broker came back 65 s after it stopped (held 40 s, restarted
under load) while the generator's batches could wait 60 s."""

from __future__ import annotations

from bench.soak.faults import Timing
from bench.soak.traffic import Traffic


def test_the_generator_outlasts_a_double_remote_outage_with_its_restart() -> None:
    traffic = Traffic("t", 1, 1.0, 1, 6)
    longest_outage_s = 2 * (Timing().outage_s + 60)  # a double fault: two holds, each with a slow restart
    assert traffic.delivery_timeout_s >= longest_outage_s
