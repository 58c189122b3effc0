"""pipeline_v1: drive the product-view pipeline over HTTP, one DAG run per hourly data interval.

Runs on Airflow 3.x (the default) and on Airflow 2.10 from the same file. It is configuration: no
I/O at import. Services are reached through Airflow HTTP connections given as environment
variables (nothing stored in Airflow's database):

    AIRFLOW_CONN_BRIDGE_API=http://127.0.0.1:8101
    AIRFLOW_CONN_SINK_API=http://127.0.0.1:8102
    AIRFLOW_CONN_ETL_API=http://:<token>@127.0.0.1:8103     (the password is the bearer token)

Tasks (what waits on what):

    plan_etl_run → sink_ready → capture_end_offsets → sink_caught_up → choose_etl_path
        choose_etl_path → start_etl_run → wait_etl_run ────────────┐
        choose_etl_path → ensure_continuous → wait_continuous ─────┴→ reconcile
    bridge_ready   (informational: blocks nothing)

- ``plan_etl_run`` turns the params and the data interval into the ``POST /runs`` body (below)
  and fails at once, without retry, on an invalid combination.
- ``sink_ready`` / ``sink_caught_up``: the sink answers ``/ready`` and has committed the local
  topic's end offsets captured by ``capture_end_offsets``, so what is in Kafka is in MongoDB.
- ``bridge_ready`` only reports: a remote-cluster outage (bridge not ready) must not block the
  ETL of data already in MongoDB. It waits up to 5 minutes and is then *skipped* (soft fail);
  the DAG run's state does not depend on it.
- ``choose_etl_path`` reads the ETL API's ``GET /continuous`` (continuous mode: a worker turning
  new documents into the star schema in micro-batches, every few seconds) and picks one path
  (the other is skipped), see "Continuous mode" below.
- ``start_etl_run`` (a 409, another ETL run active, is retried: nothing was created) →
  ``wait_etl_run`` (fails at once, without retry, when the run failed, with the run's error) →
  ``reconcile``: the run's own count check, then ``GET /reconciliation`` — MongoDB's product-view
  documents against what the star schema accounts for, per ingest hour, over the last
  ``PIPELINE_V1_RECONCILE_HOURS`` (24) hours up to the watermark; a disagreeing hour fails the
  task, naming the hour (a ``late`` one is healed by the next incremental run); then
  ``GET /reconciliation/kafka`` — the bridge's, the sink's and MongoDB's counts per remote
  partition; an ``over`` or ``missing`` partition fails the task, naming it. ``reconcile``
  produces the star-schema asset: downstream DAGs can be scheduled on ``STAR_SCHEMA``.

Continuous mode (no Airflow Variable, no param: the ETL API's own state decides). When
``GET /continuous`` says ``desired: true`` and the planned run is ``incremental`` (a current
interval), the DAG does not ``POST /runs``: the worker already does that work. Instead

- ``ensure_continuous`` reads ``GET /continuous`` again; if the worker is not ``alive`` it calls
  ``PUT /continuous`` (bearer token; the API launches a worker), and it records the target
  instant: the ETL API's own "now" (``star_as_of + behind_seconds``, the database's clock; the
  DAG's clock only when nothing is loaded yet). The sink has committed everything the local
  topic held at ``capture_end_offsets`` before this, so those documents were ingested before it;
- ``wait_continuous`` pokes ``GET /continuous`` until the worker is ``alive`` (``state:
  running``, or ``yielding`` to a one-off run), ``behind_seconds`` is below
  ``PIPELINE_V1_MAX_BEHIND_SECONDS`` (600) and
  ``star_as_of`` reached the target: the star schema counts every event the sink had stored. It
  fails (no retry) when continuous mode is turned off meanwhile; it times out after an hour,
  like ``wait_etl_run``, each poke logging the worker's state and reason;
- ``reconcile`` (trigger rule ``none_failed_min_one_success``: whichever path ran) skips the
  one-off run's own count check (there is none) and runs the same ``GET /reconciliation`` and
  ``GET /reconciliation/kafka`` checks. The worker keeps committing micro-batches meanwhile; an
  ETL API that reads the watermark and the hour ledger in two snapshots (before commit debad5b;
  the current one reads both in one) makes the watermark's hour look ``missing`` when a
  micro-batch commits during the check. So on this path a disagreement in that hour alone is
  checked again (3 checks, 3 s apart); a lasting one, or any other hour, fails the task as on the
  one-off path.

Backfills and cleared past runs (range runs over past data intervals), ``full`` and ``range``
params keep issuing ``POST /runs`` whether or not the worker runs: the ETL serializes them with
micro-batches (a micro-batch holds the one-active-run slot for a second or so; a 409 is retried by
``start_etl_run`` as today, and the worker waits while the run is active). With continuous mode
off (or an ETL API without ``/continuous``: 404) everything is as before.

Every sensor runs in ``reschedule`` mode (no worker slot held between pokes) and keeps poking
on 5xx answers (a service that is starting answers 503) and on connection errors until its own
``timeout``; its ``execution_timeout`` bounds one poke. Other 4xx answers fail the sensor.
Pokes are 30 s apart (``PIPELINE_V1_POKE_SECONDS``; see ``POKE_SECONDS`` before lowering it).

Params (validated by JSON schema; the combination by ``plan_etl_run``):

- ``mode``: ``incremental`` (default) | ``full`` | ``range``
- ``date_from`` / ``date_to``: ``YYYY-MM-DD``, both required for ``range`` (inclusive UTC event
  dates, at most 366 days), refused otherwise.

Which run is issued:

- ``range`` / ``full`` params: exactly that run.
- ``incremental`` on a current interval (scheduled runs, manual runs, ``airflow dags test`` now):
  an incremental run (every event ingested since the last successful run).
- ``incremental`` on a *past* interval: a backfill run, or any run whose data interval ended more
  than ``PAST_AFTER`` (2 h) before ``plan_etl_run`` ran (a cleared old run): a range run over
  the interval's event dates. The interval ``[start, end)`` maps to the UTC dates
  ``start.date() .. (end - 1 µs).date()``, inclusive: the hourly interval 13:00-14:00 is that
  day, 23:00-00:00 is the day of 23:00 (the end is exclusive). The ETL recomputes whole dates,
  so a range run replaces every fact of those dates (idempotent: re-running it changes nothing).
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pendulum
import requests
from airflow.providers.http.operators.http import HttpOperator
from airflow.providers.http.sensors.http import HttpSensor

try:  # Airflow 3.x: the task SDK
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    STAR_SCHEMA = Asset(name="product_views_star_schema", uri="warehouse://product-views/star-schema")
except ImportError:  # Airflow 2.10
    from airflow.datasets import Dataset
    from airflow.exceptions import AirflowException, AirflowFailException
    from airflow.models.param import Param
    from airflow.operators.python import PythonOperator
    from airflow.timetables.interval import CronDataIntervalTimetable

    from airflow import DAG

    STAR_SCHEMA = Dataset(uri="warehouse://product-views/star-schema")

try:  # Airflow 3.x
    from airflow.providers.standard.operators.python import BranchPythonOperator
except ImportError:  # Airflow 2.10
    from airflow.operators.python import BranchPythonOperator
from airflow.providers.http.hooks.http import HttpHook

log = logging.getLogger(__name__)

ETL_TERMINAL_FAILURES = {"failed"}
MODES = ("incremental", "full", "range")
MAX_RANGE_DAYS = 366  # the ETL API's own limit (services/etl-api: MAX_RANGE_DAYS)
PAST_AFTER = timedelta(hours=2)  # an interval that ended longer ago than this is "past"
HTTP_TIMEOUT_SECONDS = 10  # one request of a sensor or operator
ONE_POKE = timedelta(minutes=2)  # execution_timeout of one poke of a reschedule-mode sensor
# Seconds between two pokes of a sensor. Under a scheduler keep it well above the few seconds an
# executor takes to report a finished poke: with 5 s, Airflow 3.3's LocalExecutor reported a poke's
# end after the scheduler had already queued the next one, and the scheduler failed the try
# ("finished with state success, but the task instance's state attribute is queued"). `airflow dags
# test` runs pokes in-process without an executor, so tests and the demo set 5 (infra/demo.py).
POKE_SECONDS = int(os.environ.get("PIPELINE_V1_POKE_SECONDS", "30"))
# Ingest hours up to the watermark that the reconcile task checks (GET /reconciliation?hours=…),
# and how long that check may take (12 s for 24 hours of 1 M documents on FerretDB: bench/README.md).
RECONCILE_HOURS = int(os.environ.get("PIPELINE_V1_RECONCILE_HOURS", "24"))
RECONCILE_TIMEOUT_SECONDS = 240
# Continuous mode: checks of GET /reconciliation when only the watermark's hour disagrees (a
# micro-batch committed during the check), and the pause between them.
RECONCILE_CHECKS = 3
RECONCILE_RECHECK_SECONDS = 3
# Continuous mode: how far behind (GET /continuous behind_seconds) the star schema may be for the
# worker to count as healthy; wait_continuous waits until it is below this.
MAX_BEHIND_SECONDS = float(os.environ.get("PIPELINE_V1_MAX_BEHIND_SECONDS", "600"))
ETL_CONN_ID = "etl_api"
RUN_PATH, CONTINUOUS_PATH = "start_etl_run", "ensure_continuous"  # the first task of each path


# --------------------------------------------------------------------------- the ETL run to issue
def utc(moment: datetime) -> datetime:
    """A plain, aware UTC datetime (Airflow hands out pendulum DateTimes)."""
    return datetime.fromtimestamp(moment.timestamp(), UTC)


def interval_dates(start: datetime, end: datetime) -> tuple[date, date]:
    """The UTC event dates of the data interval ``[start, end)``, inclusive on both ends."""
    start_utc = utc(start)
    last = utc(end) - timedelta(microseconds=1)
    return start_utc.date(), max(start_utc, last).date()


def is_past_interval(run_type: str, interval_end: datetime | None, now: datetime) -> bool:
    """A backfill run, or a run whose interval ended more than ``PAST_AFTER`` ago (a cleared run)."""
    if run_type == "backfill":  # Airflow 3 and 2.10 spell DagRunType.BACKFILL(_JOB) the same
        return True
    return interval_end is not None and utc(interval_end) < utc(now) - PAST_AFTER


def run_body(
    params: dict[str, Any], run_type: str, interval_start: datetime | None, interval_end: datetime | None, now: datetime
) -> dict[str, Any]:
    """The ``POST /runs`` body for these params and this data interval (see the module doc)."""
    mode = params.get("mode") or "incremental"
    date_from, date_to = params.get("date_from"), params.get("date_to")
    if mode not in MODES:
        raise AirflowFailException(f"param mode must be one of {MODES}, not {mode!r}")
    if mode == "range":
        if not date_from or not date_to:
            raise AirflowFailException("mode=range needs both date_from and date_to (YYYY-MM-DD)")
        try:
            first, last = date.fromisoformat(date_from), date.fromisoformat(date_to)
        except (TypeError, ValueError) as exc:
            raise AirflowFailException(f"date_from/date_to must be YYYY-MM-DD: {exc}") from None
        if last < first:
            raise AirflowFailException(f"date_to {last} is before date_from {first}")
        if (last - first).days >= MAX_RANGE_DAYS:
            raise AirflowFailException(f"a range covers at most {MAX_RANGE_DAYS} days, not {(last - first).days + 1}")
        return {"mode": "range", "date_from": first.isoformat(), "date_to": last.isoformat()}
    if date_from or date_to:
        raise AirflowFailException(f"mode={mode} takes no date_from/date_to (use mode=range)")
    if mode == "incremental" and interval_start is not None and is_past_interval(run_type, interval_end, now):
        first, last = interval_dates(interval_start, interval_end or interval_start)
        return {"mode": "range", "date_from": first.isoformat(), "date_to": last.isoformat()}
    return {"mode": mode}


def plan_etl_run(**context: Any) -> str:
    """PythonOperator callable: the body as JSON (to XCom, for ``start_etl_run``)."""
    dag_run = context["dag_run"]
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    body = run_body(dict(context["params"]), str(run_type), start, end, datetime.now(UTC))
    log.info("run type %s, data interval %s → %s: POST /runs %s", run_type, start, end, json.dumps(body))
    return json.dumps(body)


# --------------------------------------------------------------------------- continuous mode
def etl_path(body: dict[str, Any], continuous: dict[str, Any] | None) -> str:
    """The first task of the path a DAG run takes (see the module doc): ``ensure_continuous``
    when the planned run is incremental and ``GET /continuous`` says continuous mode is desired;
    ``start_etl_run`` otherwise (backfills, range and full runs, continuous mode off or unknown)."""
    if body.get("mode") == "incremental" and continuous is not None and continuous.get("desired") is True:
        return CONTINUOUS_PATH
    return RUN_PATH


def parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def worker_healthy(status: dict[str, Any], max_behind: float = MAX_BEHIND_SECONDS) -> str | None:
    """Why the continuous worker does not count as healthy (None: it does): desired, alive,
    running (or yielding to a one-off run: it resumes when the run ends, as the ETL API's
    ``ready`` counts it), and ``behind_seconds`` known and below ``max_behind``."""
    if status.get("desired") is not True:
        return "continuous mode is off"
    reason = status.get("reason")
    if status.get("alive") is not True:
        return "no live worker" + (f" ({reason})" if reason else "")
    if status.get("state") not in ("running", "yielding"):
        return f"worker {status.get('state') or 'starting'}" + (f": {reason}" if reason else "")
    behind = status.get("behind_seconds")
    if behind is None:
        return "the star schema has no freshness yet (nothing loaded)"
    if float(behind) >= max_behind:
        return f"the star schema is {float(behind):.0f} s behind (threshold {max_behind:.0f} s)"
    return None


def freshness_target(status: dict[str, Any], now: datetime) -> datetime:
    """The instant the star schema must reach: the ETL API's "now" when it answered
    (``star_as_of + behind_seconds``, on the database's clock), ``now`` when nothing is loaded yet."""
    as_of, behind = parse_instant(status.get("star_as_of")), status.get("behind_seconds")
    if as_of is None or behind is None:
        return utc(now)
    return as_of + timedelta(seconds=float(behind))


def continuous_caught_up(status: dict[str, Any], target: datetime, max_behind: float = MAX_BEHIND_SECONDS) -> tuple[bool, str]:
    """(done, why not): the worker is healthy (:func:`worker_healthy`) and ``star_as_of`` reached
    ``target``. Continuous mode turned off meanwhile fails the task, without retry."""
    if status.get("desired") is not True:
        raise AirflowFailException("continuous mode was turned off (DELETE /continuous) while waiting for the star schema")
    why = worker_healthy(status, max_behind)
    if why is not None:
        return False, why
    as_of = parse_instant(status.get("star_as_of"))
    if as_of is None or as_of < target:
        return False, f"star schema as of {as_of}, waiting for {target.isoformat()}"
    behind, batches = float(status["behind_seconds"]), status.get("batches")
    return True, f"star schema as of {as_of.isoformat()} ({behind:.1f} s behind), {batches} micro-batch{'' if batches == 1 else 'es'}"


def etl_api(method: str, endpoint: str, *, token: bool = False) -> Any:
    """One call to the ETL API through the ``etl_api`` connection (the bearer token is its
    password); the response, whatever its status."""
    hook = HttpHook(method=method, http_conn_id=ETL_CONN_ID)
    headers = {"Authorization": f"Bearer {hook.get_connection(ETL_CONN_ID).password}"} if token else {}
    return hook.run(endpoint, headers=headers, extra_options={"check_response": False, "timeout": HTTP_TIMEOUT_SECONDS})


def continuous_status(response: Any) -> dict[str, Any] | None:
    """``GET /continuous``: its body; None on 404 (an ETL API without continuous mode); a 5xx or
    429 is retried (the task's retries); any other status fails the task."""
    code = response.status_code
    if code == 200:
        body: dict[str, Any] = response.json()
        return body
    if code == 404:
        return None
    if code >= 500 or code == 429:
        raise AirflowException(f"GET /continuous answered {code}, trying again after the retry delay: {response.text[:300]}")
    raise AirflowFailException(f"GET /continuous answered {code}: {response.text[:500]}")


def choose_etl_path(**context: Any) -> str:
    """BranchPythonOperator callable: ``start_etl_run`` or ``ensure_continuous`` (:func:`etl_path`)."""
    body = json.loads(context["ti"].xcom_pull(task_ids="plan_etl_run"))
    status = continuous_status(etl_api("GET", "continuous"))
    path = etl_path(body, status)
    log.info(
        "planned %s; continuous mode %s: %s",
        json.dumps(body),
        "unknown (404)" if status is None else ("on" if status.get("desired") else "off"),
        "the worker does it" if path == CONTINUOUS_PATH else "POST /runs",
    )
    return path


def ensure_continuous(**context: Any) -> str:
    """PythonOperator callable: ``PUT /continuous`` when the worker is not alive; returns the
    freshness target (ISO instant, to XCom, for ``wait_continuous``)."""
    status = continuous_status(etl_api("GET", "continuous"))
    if status is None or status.get("desired") is not True:
        raise AirflowFailException("continuous mode was turned off after choose_etl_path chose it: run the DAG again")
    target = freshness_target(status, datetime.now(UTC))
    if status.get("alive") is not True:
        log.warning("no live continuous worker (%s, %s): PUT /continuous", status.get("state"), status.get("reason"))
        response = etl_api("PUT", "continuous", token=True)
        if response.status_code != 200:
            raise AirflowException(f"PUT /continuous answered {response.status_code}: {response.text[:500]}")
        status = response.json()
    why = worker_healthy(status)
    log.info(
        "continuous worker: %s; waiting for the star schema to reach %s",
        "healthy" if why is None else why,
        target.isoformat(),
    )
    return target.isoformat()


def continuous_reached(response: Any, ti: Any) -> bool:
    """``wait_continuous``'s check (:func:`continuous_caught_up`), against ``ensure_continuous``'s target."""
    if not answered(response):
        return False
    target = parse_instant(ti.xcom_pull(task_ids="ensure_continuous"))
    assert target is not None
    done, why = continuous_caught_up(response.json(), target)
    logging.getLogger("airflow.task").info("%s", why)
    return done


# --------------------------------------------------------------------------- HTTP checks
class WaitingHttpSensor(HttpSensor):
    """An ``HttpSensor`` that keeps poking on connection errors and timeouts.

    The provider fails a sensor at once on a connection error (and on any status but 404 unless
    the hook's status check is off, which ``extra_options={"check_response": False}`` does; the
    ``response_check`` functions below then decide per status). A service that is restarting
    refuses connections for a moment: that is a reason to wait, until the sensor's ``timeout``.
    """

    def poke(self, context: Any) -> Any:
        try:
            return super().poke(context)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            self.log.info("not reachable yet (%s: %s); poking again in %ss", type(exc).__name__, exc, self.poke_interval)
            return False


def answered(response: Any) -> bool:
    """True on 2xx; False (poke again) on 5xx and 429; other statuses fail the task: waiting
    cannot fix a wrong endpoint, token or request."""
    code = response.status_code
    if 200 <= code < 300:
        return True
    if code >= 500 or code == 429:
        logging.getLogger("airflow.task").info("answered %s, poking again: %s", code, response.text[:300])
        return False
    raise AirflowFailException(f"{response.request.method} {response.url} answered {code}: {response.text[:500]}")


def service_ready(response: Any) -> bool:
    return answered(response)


def end_offsets(response: Any) -> dict[str, int]:
    """The local topic's end offset per partition, from the sink's ``/lag``."""
    return {str(p["partition"]): int(p["end"]) for p in response.json()["partitions"]}


def sink_reached(response: Any, ti: Any) -> bool:
    """True once the sink's committed offset of every partition reached the captured end."""
    if not answered(response):
        return False
    target: dict[str, int] = ti.xcom_pull(task_ids="capture_end_offsets")
    committed = {str(p["partition"]): p["committed"] or 0 for p in response.json()["partitions"]}
    return all(committed.get(part, 0) >= end for part, end in target.items())


def etl_run_accepted(response: Any) -> bool:
    """202: the run was created. 409: another run is active (a backfill run beside a scheduled
    one, a manual run): nothing was created, so the task's retries POST again later. Anything else
    fails at once."""
    if response.status_code == 202:
        return True
    if response.status_code == 409:
        raise AirflowException(f"409: another ETL run is active, posting again after the retry delay: {response.text[:300]}")
    raise AirflowFailException(f"POST /runs answered {response.status_code}: {response.text[:500]}")


def run_id(response: Any) -> str:
    return str(response.json()["run_id"])


def run_finished(response: Any) -> bool:
    """True on success; raises (no retry) when the ETL run failed."""
    if not answered(response):
        return False
    body = response.json()
    if body["status"] in ETL_TERMINAL_FAILURES:
        raise AirflowFailException(f"ETL run {body.get('run_id')} failed: {body.get('error')}")
    return bool(body["status"] == "succeeded")


def reconciled(response: Any) -> bool:
    """The run's own reconciliation: valid product views read == what the run added to
    sum(view_count) of the dates it wrote (written after − before: an incremental run merges
    its new views into the dates' existing facts; ``view_count_before`` is 0 when it replaced
    them, and absent in runs from before merging). Anything else fails the task, loudly, without
    retry."""
    body = response.json()
    rec = body.get("reconciliation") or {}
    views, written, before = rec.get("valid_views"), rec.get("view_count_written"), rec.get("view_count_before", 0)
    if body.get("status") != "succeeded" or views is None or written is None or views != written - before:
        raise AirflowFailException(f"ETL run {body.get('run_id')} does not reconcile: {json.dumps(rec)}")
    return True


def hours_agree(body: dict[str, Any]) -> bool:
    """``GET /reconciliation``: True when every ingest hour of the span agrees (the raw store's
    product-view documents = what the star schema accounts for); else fails the task, without
    retry, naming the hours and their per-date differences."""
    if body.get("ok") is True:
        return True
    bad = body.get("disagreeing_hours") or []
    detail = [
        {k: h.get(k) for k in ("ingest_hour", "status", "mongodb", "accounted", "dates")}
        for h in body.get("hours", [])
        if h.get("ingest_hour") in bad
    ]
    raise AirflowFailException(
        f"raw store and star schema disagree in ingest hours {', '.join(bad) or '?'}: {json.dumps(detail)[:2000]}"
        " (late: documents visible after their hour was read, counted by the next incremental run;"
        " missing: counted documents are gone from MongoDB)"
    )


def only_the_watermark_hour_disagrees(body: dict[str, Any]) -> bool:
    """``GET /reconciliation`` disagrees in the watermark's ingest hour only: what a micro-batch
    committing during the check produces on an ETL API that reads the watermark before counting
    MongoDB and the hour ledger after it, in two snapshots (before commit debad5b), so the ledger
    can already hold the next micro-batch's documents of that hour: ``missing``. Worth asking
    again; any other disagreement is not."""
    bad, watermark = body.get("disagreeing_hours") or [], parse_instant(body.get("watermark"))
    return body.get("ok") is False and watermark is not None and bad == [f"{utc(watermark):%Y-%m-%dT%H}"]


def reconciled_across_hops(response: Any) -> bool:
    """The ``reconcile`` task: the run's own check (:func:`reconciled`; on the continuous path the
    task read ``GET /continuous`` instead, there is no run to check), then the raw store against
    the star schema for the last ``RECONCILE_HOURS`` ingest hours up to the watermark
    (:func:`hours_agree`), from the same API. On the continuous path (the worker commits while
    the check runs) a disagreement in the watermark's hour alone is checked again, up to
    ``RECONCILE_CHECKS`` times, ``RECONCILE_RECHECK_SECONDS`` apart
    (:func:`only_the_watermark_hour_disagrees`); a lasting one fails the task as always."""
    url = str(response.url)
    continuous = "/runs/" not in url
    if not continuous:
        reconciled(response)
        base = url.split("/runs/", 1)[0]
    else:
        base = url.rsplit("/continuous", 1)[0]
    for check in range(1, (RECONCILE_CHECKS if continuous else 1) + 1):
        answer = requests.get(f"{base}/reconciliation", params={"hours": RECONCILE_HOURS}, timeout=RECONCILE_TIMEOUT_SECONDS)
        if answer.status_code != 200:
            raise AirflowFailException(f"GET /reconciliation answered {answer.status_code}: {answer.text[:500]}")
        body = answer.json()
        if not (continuous and check < RECONCILE_CHECKS and only_the_watermark_hour_disagrees(body)):
            break
        logging.getLogger("airflow.task").warning(
            "ingest hour %s disagrees while the continuous worker commits (watermark %s): checking again in %s s (%d/%d)",
            body.get("disagreeing_hours"),
            body.get("watermark"),
            RECONCILE_RECHECK_SECONDS,
            check,
            RECONCILE_CHECKS,
        )
        time.sleep(RECONCILE_RECHECK_SECONDS)
    hours_agree(body)
    answer = requests.get(f"{base}/reconciliation/kafka", timeout=RECONCILE_TIMEOUT_SECONDS)
    if answer.status_code == 503 and "not configured" in answer.text:
        logging.getLogger("airflow.task").warning("Kafka hops not reconciled: %s", answer.text[:300])
        return True
    if answer.status_code != 200:
        raise AirflowFailException(f"GET /reconciliation/kafka answered {answer.status_code}: {answer.text[:500]}")
    return partitions_agree(answer.json())


def partitions_agree(body: dict[str, Any]) -> bool:
    """``GET /reconciliation/kafka``: True when no remote partition is ``over`` (local records
    counted that the bridge never committed) or ``missing`` (stored documents gone from MongoDB);
    else fails the task, without retry, naming the partitions and their counts."""
    if body.get("ok") is True:
        return True
    bad = body.get("disagreeing_partitions") or []
    detail = [p for p in body.get("partitions", []) if f"{p.get('source_topic')}/{p.get('source_partition')}" in bad]
    raise AirflowFailException(f"the Kafka hops disagree in remote partitions {', '.join(bad) or '?'}: {json.dumps(detail)[:2000]}")


def log_failure(context: Any) -> None:
    """on_failure_callback: one line with the task, the ETL run id (if one was started) and the error."""
    ti = context.get("ti") or context.get("task_instance")
    etl_run = None
    try:
        etl_run = ti.xcom_pull(task_ids="start_etl_run") if ti is not None else None
    except Exception as exc:  # the callback must never hide the failure it reports
        etl_run = f"<unknown: {exc}>"
    logging.getLogger("airflow.task").error(
        "pipeline_v1 task %s failed (try %s): ETL run %s, error: %s",
        getattr(ti, "task_id", "?"),
        getattr(ti, "try_number", "?"),
        etl_run,
        context.get("exception"),
    )


# --------------------------------------------------------------------------- the DAG
default_args = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=5),  # one HTTP call; sensors override it per poke
    "on_failure_callback": log_failure,
}

SENSOR = {
    "mode": "reschedule",
    "extra_options": {"check_response": False, "timeout": HTTP_TIMEOUT_SECONDS},
    "execution_timeout": ONE_POKE,
}

with DAG(
    dag_id="pipeline_v1",
    description="remote Kafka → local Kafka → MongoDB → Spark → PostgreSQL star schema",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "mode": Param(
            "incremental",
            type="string",
            enum=list(MODES),
            description="incremental: new events; full: rebuild every fact; range: the dates date_from..date_to",
        ),
        "date_from": Param(
            None,
            type=["null", "string"],
            format="date",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="first UTC event date of a range run (YYYY-MM-DD)",
        ),
        "date_to": Param(
            None,
            type=["null", "string"],
            format="date",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="last UTC event date of a range run, inclusive (YYYY-MM-DD)",
        ),
    },
    tags=["product-views", "etl", "star-schema"],
) as dag:
    plan = PythonOperator(task_id="plan_etl_run", python_callable=plan_etl_run, retries=0, execution_timeout=timedelta(minutes=1))
    bridge_ready = WaitingHttpSensor(
        task_id="bridge_ready",
        doc_md="Informational: the bridge (remote → local Kafka) is ready. Skipped after 5 min; blocks nothing.",
        http_conn_id="bridge_api",
        endpoint="ready",
        response_check=service_ready,
        poke_interval=POKE_SECONDS,
        timeout=300,
        soft_fail=True,
        retries=0,
        **SENSOR,
    )
    sink_ready = WaitingHttpSensor(
        task_id="sink_ready",
        http_conn_id="sink_api",
        endpoint="ready",
        response_check=service_ready,
        poke_interval=POKE_SECONDS,
        timeout=900,
        **SENSOR,
    )
    capture_end_offsets = HttpOperator(
        task_id="capture_end_offsets",
        http_conn_id="sink_api",
        endpoint="lag",
        method="GET",
        response_filter=end_offsets,
        log_response=True,
        extra_options={"timeout": HTTP_TIMEOUT_SECONDS},
    )
    sink_caught_up = WaitingHttpSensor(
        task_id="sink_caught_up",
        http_conn_id="sink_api",
        endpoint="lag",
        response_check=sink_reached,
        poke_interval=POKE_SECONDS,
        timeout=1800,
        **SENSOR,
    )
    choose_etl_path_task = BranchPythonOperator(
        task_id="choose_etl_path",
        doc_md="GET /continuous: the continuous worker does an incremental run's work (ensure_continuous) or POST /runs (start_etl_run).",
        python_callable=choose_etl_path,
        retries=4,
        execution_timeout=timedelta(minutes=1),
    )
    ensure_continuous_task = PythonOperator(
        task_id="ensure_continuous",
        doc_md="Continuous mode: PUT /continuous when no worker is alive; the instant the star schema must reach.",
        python_callable=ensure_continuous,
        execution_timeout=timedelta(minutes=1),
    )
    wait_continuous = WaitingHttpSensor(
        task_id="wait_continuous",
        doc_md="Continuous mode: GET /continuous until the worker is alive, under PIPELINE_V1_MAX_BEHIND_SECONDS behind, past the target.",
        http_conn_id="etl_api",
        endpoint="continuous",
        response_check=continuous_reached,
        poke_interval=POKE_SECONDS,
        timeout=3600,
        **SENSOR,
    )
    start_etl_run = HttpOperator(
        task_id="start_etl_run",
        http_conn_id="etl_api",
        endpoint="runs",
        method="POST",
        data="{{ ti.xcom_pull(task_ids='plan_etl_run') }}",
        headers={"Content-Type": "application/json", "Authorization": "Bearer {{ conn.etl_api.password }}"},
        response_check=etl_run_accepted,
        response_filter=run_id,
        log_response=True,
        extra_options={"check_response": False, "timeout": HTTP_TIMEOUT_SECONDS},
        # Retries wait out another active run (409). A POST that timed out may have created a run
        # all the same: the retry then starts a second one, which the ETL's idempotence makes harmless.
        retries=8,
        retry_delay=timedelta(minutes=1),
    )
    wait_etl_run = WaitingHttpSensor(
        task_id="wait_etl_run",
        http_conn_id="etl_api",
        endpoint="runs/{{ ti.xcom_pull(task_ids='start_etl_run') }}",
        response_check=run_finished,
        poke_interval=POKE_SECONDS,
        timeout=3600,
        **SENSOR,
    )
    reconcile = HttpOperator(
        task_id="reconcile",
        http_conn_id="etl_api",
        # the run's row after start_etl_run; GET /continuous on the continuous path (no run)
        endpoint="{% set run = ti.xcom_pull(task_ids='start_etl_run') %}{{ 'runs/' ~ run if run else 'continuous' }}",
        method="GET",
        response_check=reconciled_across_hops,
        extra_options={"timeout": HTTP_TIMEOUT_SECONDS},
        outlets=[STAR_SCHEMA],
        retries=0,
        trigger_rule="none_failed_min_one_success",  # whichever path choose_etl_path took
    )

    plan >> sink_ready >> capture_end_offsets >> sink_caught_up >> choose_etl_path_task
    choose_etl_path_task >> start_etl_run >> wait_etl_run >> reconcile
    choose_etl_path_task >> ensure_continuous_task >> wait_continuous >> reconcile
