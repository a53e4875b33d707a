"""docker-compose.yml, .env.example and deploy/Dockerfile, checked without a container engine:
the compose file against the compose-spec JSON schema (vendored by check-jsonschema), then what
the Operation Manual and the services rely on (names, healthchecks, start order, replicas, ports,
the variables each service reads)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.common.settings import Settings, SettingsError, load_settings
from services.gateway.tokens import gateway_tokens
from services.ingestor.settings import IngestSettings
from services.mockai.settings import MockaiSettings
from tests.schema_check import check_builtin_schema

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# the names the Operation Manual uses (`docker compose logs mcp`, ...), and the rest of the stack
MANUAL_SERVICES = {"redis", "qdrant", "mcp", "worker", "prometheus"}
STACK_SERVICES = MANUAL_SERVICES | {"postgres", "ingestor", "projector", "mockai"}
SETTINGS_VARIABLES = set(Settings.ENVIRONMENT) | set(IngestSettings.ENVIRONMENT)
SETTINGS_VARIABLES |= set(MockaiSettings.ENVIRONMENT)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping, please"
    return {str(k): str(v) for k, v in env.items()}


def check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return check_builtin_schema("vendor.compose-spec", path)


def test_the_compose_file_follows_the_compose_spec() -> None:
    checked = check_schema(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_rejects_a_malformed_compose_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  mcp:\n    image: x\n    healthcheck: {test: 5, every: 10s}\n")
    assert check_schema(bad).returncode != 0


def test_the_manual_service_names_exist() -> None:
    assert set(services()) == STACK_SERVICES


@pytest.mark.parametrize("name", sorted(STACK_SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = services()[name].get("healthcheck", {})
    assert check.get("test"), f"{name} has no healthcheck"
    assert not check.get("disable", False)


def test_every_dependency_waits_until_healthy() -> None:
    for name, service in services().items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on as a list cannot wait for health"
        for other, how in depends.items():
            assert other in services(), f"{name} depends on unknown {other}"
            assert how == {"condition": "service_healthy"}, f"{name} -> {other}: {how}"


def test_the_gateway_and_runners_start_after_what_they_need() -> None:
    depends = {name: set(s.get("depends_on", {})) for name, s in services().items()}
    assert {"redis", "postgres", "ingestor", "projector"} <= depends["mcp"]
    assert {"redis", "postgres", "ingestor", "mockai"} <= depends["worker"]
    assert {"redis", "postgres"} <= depends["projector"]
    assert {"redis", "qdrant", "mockai"} <= depends["ingestor"]


def test_worker_runs_two_replicas_of_the_runner() -> None:
    worker = services()["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["command"] == ["runner"]


def test_mcp_is_the_gateway_on_port_8001_with_sentinels() -> None:
    mcp = services()["mcp"]
    assert mcp["command"] == ["gateway"]
    # published on the host's loopback unless MCP_PUBLISH says otherwise
    assert mcp["ports"] == ["${MCP_PUBLISH:-127.0.0.1:8001}:8001"]
    assert environment("mcp")["RAGPOC_SENTINEL_DIR"] == "/tmp"
    assert environment("mcp")["GATEWAY_PORT"] == "8001"


@pytest.mark.parametrize("name", ["mcp", "worker"])
def test_test_hold_seconds_reaches_the_runs(name: str) -> None:
    assert environment(name)["TEST_HOLD_SECONDS"] == "${TEST_HOLD_SECONDS:-0}"


def test_the_rag_poc_services_share_one_image_and_reach_the_backing_services() -> None:
    ragpoc = {"mcp": "gateway", "worker": "runner", "ingestor": "ingestor"}
    ragpoc |= {"projector": "projector", "mockai": "mockai"}
    images = {services()[name]["image"] for name in ragpoc}
    assert len(images) == 1
    for name, command in ragpoc.items():
        service = services()[name]
        assert service["command"] == [command]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        env = environment(name)
        assert env["REDIS_URL"].startswith("redis://:${VALKEY_PASSWORD")
        assert env["REDIS_URL"].endswith("@redis:6379/0")
        assert env["RAGPOC_HOST"] == "0.0.0.0"  # reachable from the other containers
        assert env["RAGPOC_INTERNAL_HOST"] == "0.0.0.0"  # the ingestor and mockai too
        assert env["QDRANT_URL"] == "http://qdrant:6333"
        assert env["INGESTOR_URL"] == "http://ingestor:8002"
        assert "@postgres:5432/" in env["DATABASE_URL"]


def substituted(service: str, shell: dict[str, str]) -> dict[str, str]:
    """The service's `environment` as compose hands it over: `${NAME:-default}` replaced by
    `shell`'s NAME, or the default."""

    def value(match: re.Match[str]) -> str:
        return shell.get(match.group(1)) or match.group(2)

    pattern = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")
    return {name: pattern.sub(value, text) for name, text in environment(service).items()}


def test_the_gateway_takes_its_api_tokens_from_the_shell_or_env_file() -> None:
    assert environment("mcp")["RAGPOC_API_TOKENS"] == "${RAGPOC_API_TOKENS:-}"
    others = [name for name in services() if name != "mcp"]
    assert all("RAGPOC_API_TOKENS" not in environment(name) for name in others)
    # Prometheus scrapes mcp's /metrics without a token
    assert environment("mcp").get("RAGPOC_METRICS_PUBLIC", "1") not in ("0", "false")
    assert environment("mcp").get("RAGPOC_ALLOW_OPEN", "0") in ("0", "false")


def test_without_a_token_the_gateway_container_refuses_to_start_and_says_what_to_set() -> None:
    settings = load_settings(substituted("mcp", {}))
    assert settings.host == "0.0.0.0"
    with pytest.raises(SettingsError, match="RAGPOC_API_TOKENS"):
        gateway_tokens(settings)
    token = "ops:write:" + "s" * 24
    configured = load_settings(substituted("mcp", {"RAGPOC_API_TOKENS": token}))
    assert [t.name for t in gateway_tokens(configured)] == ["ops"]
    header = COMPOSE.read_text().split("\nname:")[0]  # the comment at the top
    assert "RAGPOC_API_TOKENS" in header
    assert "refuses to start" in header


def test_redis_is_valkey_with_aof_and_a_password() -> None:
    redis = services()["redis"]
    assert redis["image"].startswith("valkey/valkey:")
    command = [str(part) for part in redis["command"]]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == "${VALKEY_PASSWORD:-ragpoc}"


def test_prometheus_mounts_its_config_and_rules_and_reaches_the_metrics() -> None:
    prometheus = services()["prometheus"]
    mounts = [str(volume) for volume in prometheus["volumes"]]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert environment("worker")["RUNNER_METRICS_PORT"] == "9101"
    assert "9101" in [str(port) for port in services()["worker"]["expose"]]


def test_data_lives_in_named_volumes() -> None:
    declared = set(compose()["volumes"])
    for name in ("redis", "postgres", "qdrant", "prometheus"):
        sources = [str(v).split(":")[0] for v in services()[name]["volumes"]]
        named = [source for source in sources if not source.startswith((".", "/"))]
        assert named, f"{name} keeps its data in no named volume"
        assert set(named) <= declared


def env_example() -> dict[str, str]:
    """Variable -> the comment lines right above it."""
    documented: dict[str, str] = {}
    comment: list[str] = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("#"):
            comment.append(line.lstrip("# "))
        elif match := re.match(r"([A-Z][A-Z0-9_]*)=", line):
            documented[match.group(1)] = " ".join(comment).strip()
            comment = []
        else:
            comment = []
    return documented


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))


def test_env_example_lists_every_setting_and_only_settings_or_compose_variables() -> None:
    listed = set(env_example())
    assert SETTINGS_VARIABLES - listed == set(), "settings missing from .env.example"
    assert listed - SETTINGS_VARIABLES - compose_variables() == set(), "read by nothing"
    assert compose_variables() - listed == set(), "compose variables missing from .env.example"


def test_every_env_example_variable_is_documented() -> None:
    undocumented = [name for name, comment in env_example().items() if not comment]
    assert not undocumented


def test_the_image_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    first_from = text.index("\nFROM ")
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text[:first_from], re.M)
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"], stages
    assert "--require-hashes -r /tmp/lock.txt" in text
    assert "COPY requirements/lock.txt" in text
    [user] = re.findall(r"^USER (\S+)", text, re.M)
    assert user not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD ", text, re.M)
    assert re.search(r'^ENTRYPOINT \["ragpoc"\]$', text, re.M)


def test_the_compose_healthchecks_name_services_the_image_knows() -> None:
    known = set(re.findall(r'^    "(\w+)": \(', DOCKERFILE.read_text(), re.M))
    for name, service in services().items():
        test = service["healthcheck"]["test"]
        if "ragpoc-healthcheck" in test:
            assert test[-1] in known, f"{name}: the image's healthcheck knows no {test[-1]}"
            assert test[-1] == service["command"][0]


# --- deploy/compose.local.yml: the same stack on the images `make images` builds ---

LOCAL_OVERRIDE = ROOT / "deploy" / "compose.local.yml"
BUILD_SCRIPT = ROOT / "deploy" / "images" / "build.sh"


class _Reset:
    """`!reset`: the value of docker-compose.yml is dropped."""


class _OverrideLoader(yaml.SafeLoader):
    """Reads compose's `!reset` and `!override` tags (plain YAML does not know them)."""


_OverrideLoader.add_constructor("!reset", lambda loader, node: _Reset())
_OverrideLoader.add_constructor(
    "!override", lambda loader, node: {"override": loader.construct_sequence(node)}
)


def local_override() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(LOCAL_OVERRIDE.read_text(), Loader=_OverrideLoader)
    return loaded


def test_the_local_override_names_only_services_of_the_stack() -> None:
    assert set(local_override()["services"]) <= set(services())


def test_every_local_image_is_one_make_images_builds() -> None:
    built = set(re.findall(r"^[A-Z_]+_IMAGE=(localhost/\S+)$", BUILD_SCRIPT.read_text(), re.M))
    for name, service in local_override()["services"].items():
        if isinstance(service, _Reset):
            continue
        assert service["image"] in built, f"{name}: {service['image']} is not built by build.sh"
    running = {
        name for name, s in local_override()["services"].items() if not isinstance(s, _Reset)
    }
    # every service of the stack that is kept runs a local image: none is pulled from a registry
    kept = {
        name
        for name in services()
        if not isinstance(local_override()["services"].get(name), _Reset)
    }
    assert kept == running


def test_without_a_qdrant_image_the_ingestor_keeps_its_index_in_local_mode() -> None:
    override = local_override()
    assert isinstance(override["services"]["qdrant"], _Reset)
    ingestor = override["services"]["ingestor"]
    assert ingestor["environment"]["QDRANT_URL"] == ""
    assert ingestor["volumes"] == ["ingestor-data:/data"]
    assert "qdrant" not in ingestor["depends_on"]["override"]
    # the runners reach the index through the ingestor only, so none of them needs Qdrant
    assert all(
        "qdrant" not in services()[name].get("depends_on", {})
        for name in services()
        if name != "ingestor"
    )
