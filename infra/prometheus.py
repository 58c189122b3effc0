"""A real Prometheus on loopback: the project's own scrape config and alert rules, adapted to local targets.

Two pure renderers and a process handle:

- :func:`render_config` reads ``infra/compose/prometheus/prometheus.yml`` (the compose
  deployment's) and swaps each job's service discovery for ``static_configs`` of given
  ``host:port`` targets: the job names, hence every alert's ``job`` label, stay as in production.
- :func:`render_rules` reads ``infra/compose/prometheus/alerts.yml`` and multiplies every
  alert's ``for:`` and every PromQL range and subquery duration by a time scale. Production (the
  compose deployment, and ``./pipeline stack prometheus up``) uses the rules as written, scale 1.
  Soaks and tests inject faults lasting tens of seconds: at scale 0.1 ``PipelineServiceDown``
  (``for: 2m``) fires after 12 s, and ``delta(…[10m:1m])`` becomes ``delta(…[1m:6s])``. Thresholds
  stay as written, including the ones that are ages in seconds (``EtlStale``'s 7200,
  ``EtlStarSchemaBehind``'s 120): the services measure those in real time.
- :class:`PrometheusServer` runs Debian's ``prometheus`` binary on rendered files in a work
  directory, reloads it when targets change and reads alerts and queries back over HTTP.

Nothing here imports the stack: ``infra.stack.prometheus`` runs one for the local stack's services.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

import orjson
import yaml  # type: ignore[import-untyped]  # no stubs in the lock file

REPO = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO / "infra/compose/prometheus"
CONFIG = COMPOSE_DIR / "prometheus.yml"
RULES = COMPOSE_DIR / "alerts.yml"
BINARY = "prometheus"

# (alertname, the alert's other labels sorted) → [[fired_at, resolved_at or None], …], unix seconds
AlertKey = tuple[str, tuple[tuple[str, str], ...]]
Intervals = dict[AlertKey, list[list[float | None]]]

# ------------------------------------------------------------------ durations

_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"(?:\d+(?:ms|[smhdwy]))+")
_PART = re.compile(r"(\d+)(ms|[smhdwy])")


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration (``2m``, ``1h30m``, ``500ms``)."""
    text = text.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration of ``seconds``, rounded to the millisecond (``120`` → ``2m``,
    ``12`` → ``12s``, ``90`` → ``1m30s``, ``0.5`` → ``500ms``). Units go no higher than hours: a
    day or a year of Prometheus is a fixed number of hours anyway."""
    ms = round(seconds * 1000)
    if ms < 0:
        raise ValueError(f"negative duration: {seconds}")
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


# ------------------------------------------------------------------ rules

# A PromQL range ``[5m]`` or subquery ``[10m:1m]`` / ``[10m:]``: the brackets hold only durations.
_RANGE = re.compile(r"\[\s*(" + _DURATION.pattern + r")\s*(?::\s*(" + _DURATION.pattern + r")?\s*)?\]")
# String literals (label values, regexes) are left alone: a regex may hold ``[0-9]`` or ``[5m]``.
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_OFFSET = re.compile(r"\boffset\b|@")


def scale_expr(expr: str, time_scale: float) -> str:
    """``expr`` with every range and subquery duration multiplied by ``time_scale``.

    An ``offset`` or ``@`` modifier is refused: whether a soak should shift it is a decision to
    make when a rule first uses one, not a silent default."""

    def scale(match: re.Match[str]) -> str:
        rng, step = match.group(1), match.group(2)
        out = "[" + format_duration(parse_duration(rng) * time_scale)
        if ":" in match.group(0):
            out += ":" + (format_duration(parse_duration(step) * time_scale) if step else "")
        return out + "]"

    pieces, last = [], 0
    for lit in _STRING.finditer(expr):
        pieces.append(_scale_code(expr[last : lit.start()], scale))
        pieces.append(lit.group(0))
        last = lit.end()
    pieces.append(_scale_code(expr[last:], scale))
    return "".join(pieces)


def _scale_code(code: str, scale: Any) -> str:
    if _OFFSET.search(code):
        raise ValueError(f"offset and @ modifiers are not scaled (decide how before using one): {code!r}")
    return _RANGE.sub(scale, code)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _check_scale(time_scale: float) -> None:
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a positive number, got {time_scale}")


def render_rules(time_scale: float = 1.0, *, source: Path = RULES) -> str:
    """alerts.yml with every alert's ``for:`` and every PromQL range/subquery duration times
    ``time_scale``; names, thresholds, labels and annotations as written."""
    _check_scale(time_scale)
    model = yaml.safe_load(source.read_text())
    for group in model["groups"]:
        for rule in group["rules"]:
            rule["expr"] = scale_expr(str(rule["expr"]), time_scale)
            if "for" in rule:
                rule["for"] = format_duration(parse_duration(str(rule["for"])) * time_scale)
    header = f"# Rendered by infra/prometheus.py from {_shown(source)} at time scale {time_scale}: do not edit.\n"
    return header + yaml.safe_dump(model, sort_keys=False, allow_unicode=True, width=1000)


# ------------------------------------------------------------------ config


def render_config(
    targets: dict[str, list[str]],
    *,
    rules_path: Path | str,
    scrape_interval_s: float = 15,
    evaluation_interval_s: float = 15,
    source: Path = CONFIG,
) -> str:
    """prometheus.yml with each job scraping the given ``host:port`` targets (``static_configs``
    instead of its DNS discovery) and ``rule_files`` pointing at ``rules_path``.

    Jobs missing from ``targets`` are left out; a name that is not a job of the file is an error
    (a typo would otherwise scrape nothing, silently)."""
    model = yaml.safe_load(source.read_text())
    jobs = [c["job_name"] for c in model["scrape_configs"]]
    unknown = sorted(set(targets) - set(jobs))
    if unknown:
        raise ValueError(f"no such job in {source.name}: {unknown} (jobs: {jobs})")
    scrape = format_duration(scrape_interval_s)
    # scrape_timeout may not exceed scrape_interval: a faster scrape times out sooner
    timeout = format_duration(min(parse_duration(str(model["global"].get("scrape_timeout", "10s"))), scrape_interval_s))
    model["global"].update(scrape_interval=scrape, scrape_timeout=timeout, evaluation_interval=format_duration(evaluation_interval_s))
    model["rule_files"] = [str(rules_path)]
    configs = []
    for config in model["scrape_configs"]:
        if config["job_name"] not in targets:
            continue
        for key in [k for k in config if k.endswith("_sd_configs") or k == "static_configs"]:
            del config[key]
        config["static_configs"] = [{"targets": list(targets[config["job_name"]])}]
        configs.append(config)
    model["scrape_configs"] = configs
    header = f"# Rendered by infra/prometheus.py from {_shown(source)}: do not edit.\n"
    return header + yaml.safe_dump(model, sort_keys=False, width=1000)


# ------------------------------------------------------------------ alert intervals


def intervals_of(matrix: list[dict[str, Any]], end: float, step: float) -> Intervals:
    """Firing intervals from a ``query_range`` of ``ALERTS{alertstate="firing"}``: consecutive
    samples (one ``step`` apart) make one interval. ``fired_at`` is its first sample;
    ``resolved_at`` the step after its last one, or None when it still fires at ``end``. A
    resolved alert's series ends at once (Prometheus writes a staleness marker), so a gap is a
    resolution, not a missing scrape."""
    out: Intervals = {}
    for series in matrix:
        labels = dict(series["metric"])
        name = labels.pop("alertname")
        for drop in ("__name__", "alertstate"):
            labels.pop(drop, None)
        key: AlertKey = (name, tuple(sorted(labels.items())))
        times = sorted(float(t) for t, _ in series["values"])
        spans = out.setdefault(key, [])
        last: float | None = None
        for t in times:
            if last is not None and t - last < 1.5 * step:
                spans[-1][1] = t + step
            else:
                spans.append([t, t + step])
            last = t
        for span in spans:
            if (span[1] or 0.0) > end:
                span[1] = None  # its last sample is the last step before ``end``: still firing
    return out


# ------------------------------------------------------------------ the server


class PrometheusError(RuntimeError):
    """Prometheus could not be started, reached or asked; the message says why."""


class PrometheusServer:
    """``prometheus`` on ``host:port`` with its config, rules and TSDB in ``work_dir``.

    ``start()``/``stop()`` run it as a child of this process (tests, soaks); ``argv()``,
    ``write_files()`` and ``ready()`` let a supervisor with PID files run it instead
    (``infra.stack.prometheus``). Its own address is added as the job ``prometheus``."""

    def __init__(
        self,
        work_dir: Path,
        targets: dict[str, list[str]],
        *,
        port: int = 9090,
        host: str = "127.0.0.1",
        time_scale: float = 1.0,
        scrape_interval_s: float = 15,
        evaluation_interval_s: float = 15,
        binary: str = BINARY,
    ) -> None:
        _check_scale(time_scale)
        self.work_dir, self.host, self.port = Path(work_dir), host, port
        self.time_scale, self.scrape_interval_s, self.evaluation_interval_s = time_scale, scrape_interval_s, evaluation_interval_s
        self.binary = binary
        self.targets = dict(targets)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "prometheus.yml"

    @property
    def rules_path(self) -> Path:
        return self.work_dir / "alerts.yml"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "prometheus.log"

    def write_files(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.rules_path.write_text(render_rules(self.time_scale))
        targets = {"prometheus": [f"{self.host}:{self.port}"], **self.targets}
        self.config_path.write_text(
            render_config(
                targets,
                rules_path=self.rules_path,
                scrape_interval_s=self.scrape_interval_s,
                evaluation_interval_s=self.evaluation_interval_s,
            )
        )

    def argv(self) -> list[str]:
        path = shutil.which(self.binary)
        if path is None:
            raise PrometheusError(f"{self.binary} is not installed: ./pipeline setup installs Debian's prometheus package")
        return [
            path,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload after a target change
        ]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 60) -> Self:
        self.write_files()
        argv = self.argv()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.work_dir, start_new_session=True
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready on {self.url} after {timeout:.0f}s:\n{self.tail()}")

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -------------------------------------------------------------- HTTP API

    def _call(self, path: str, params: dict[str, str] | None = None, *, method: str = "GET") -> Any:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        req = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            raise PrometheusError(f"{method} {path} {params or ''}: HTTP {err.code} {err.read().decode(errors='replace')}") from err
        except OSError as exc:
            raise PrometheusError(f"{method} {path}: {exc}") from exc
        if not path.startswith("/api/"):
            return body
        answer = orjson.loads(body)
        if answer.get("status") != "success":
            raise PrometheusError(f"{method} {path} {params or ''}: {answer}")
        return answer["data"]

    def reload(self, targets: dict[str, list[str]] | None = None) -> None:
        """Re-render the files (with new ``targets`` if given) and make the server read them."""
        if targets is not None:
            self.targets = dict(targets)
        self.write_files()
        self._call("/-/reload", method="POST")

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [t, "v"]}, …]``."""
        params = {"query": expr} | ({"time": str(at)} if at is not None else {})
        data = self._call("/api/v1/query", params)
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self._call("/api/v1/query_range", {"query": expr, "start": str(start), "end": str(end), "step": str(step)})
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Every active alert, pending or firing: ``labels``, ``state``, ``activeAt``, ``value``."""
        return list(self._call("/api/v1/alerts")["alerts"])

    def alerts_firing(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["state"] == "firing"]

    def alert_intervals(self, start: float, end: float, step: float = 1.0) -> Intervals:
        """Per (alertname, labels) the ``[fired_at, resolved_at or None]`` intervals between
        ``start`` and ``end`` (unix seconds), to within ``step``."""
        return intervals_of(self.query_range('ALERTS{alertstate="firing"}', start, end, step), end, step)
