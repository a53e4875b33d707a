"""The wheel is what the image installs: build it from the files the Dockerfile copies, install it
into a fresh virtualenv, and check that `ragpoc gateway` from there serves the web UI.

To stay fast and offline the new venv borrows this venv's already-installed dependencies (a .pth
line), but never the project's source tree: it runs from a temporary folder, and the test checks
that `services` is imported from the new venv. The image's health-check script (embedded in
deploy/Dockerfile) is run against that gateway too, and the lock files are checked against the
ranges in pyproject.toml, so a forgotten `make lock` fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from packaging.requirements import Requirement

from tests.conftest import free_port, unavailable
from tests.e2e.processes import stop_all, wait_healthy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# What deploy/Dockerfile copies into its builder stage: the wheel is built from these alone.
BUILD_INPUTS = ("pyproject.toml", "README.md", "libs", "services")
STATIC_FILES = ("index.html", "favicon.svg", "css/app.css", "js/main.js", "js/pages/tasks.js")
PIP = (sys.executable, "-m", "pip")
LOCKS = ("requirements/lock.txt", "requirements/dev-lock.txt", "requirements/peers-lock.txt")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [found] = out.glob("rag_poc-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed, reusing this venv's dependencies."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    python = home / "bin" / "python"
    installed = subprocess.run(
        [
            *PIP,
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    # A directory named in a .pth is only appended to sys.path: the .pth files inside it (this
    # venv's editable install of the source tree) are not processed, so the source stays out.
    (Path(site) / "borrowed-dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return home


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that could point Python at the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | extra


def test_the_wheel_carries_the_web_ui(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in STATIC_FILES if f"services/gateway/static/{f}" not in names]
    assert not missing, f"the wheel lacks the UI's {missing}"
    assert not any(name.startswith("tests/") for name in names)


def test_the_venv_imports_the_installed_wheel_not_the_source(venv: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import services; print(services.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).resolve().is_relative_to(venv.resolve()), found


@pytest.fixture(scope="module")
def gateway(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ragpoc gateway` of the installed wheel on a free port; its base URL."""
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(redis_url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"no Redis at {redis_url}: {exc}")
    work = tmp_path_factory.mktemp("gateway")
    namespace = f"wheel{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = clean_env(
        REDIS_URL=redis_url,
        RAGPOC_NAMESPACE=namespace,
        RAGPOC_DATA_DIR=str(work / "data"),
        DATABASE_URL=f"sqlite:///{work / 'ragpoc.db'}",
        GATEWAY_PORT=str(port),
        RAGPOC_LOG_FORMAT="json",
    )
    log_path = work / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "ragpoc"), "gateway"],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = wait_healthy("the gateway", process, port, lambda: log_path.read_text()[-4000:])
        yield url
    finally:
        stop_all([process])
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def test_the_installed_gateway_serves_the_web_ui(gateway: str) -> None:
    page = httpx.get(f"{gateway}/", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<title>rag-poc operator console</title>" in page.text
    script = httpx.get(f"{gateway}/static/js/main.js", timeout=10)
    assert script.status_code == 200, "a nested static file is missing from the wheel"


def dockerfile_healthcheck(folder: Path) -> Path:
    """The health-check script deploy/Dockerfile writes into the image, as a file."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    match = re.search(r"^COPY <<'EOF' \S*ragpoc-healthcheck\n(.*?)^EOF$", text, re.M | re.S)
    assert match, "deploy/Dockerfile no longer embeds ragpoc-healthcheck"
    script = folder / "ragpoc-healthcheck"
    script.write_text(match.group(1))
    return script


def run_healthcheck(
    venv: Path, script: Path, service: str = "gateway", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), str(script), service],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_image_healthcheck_passes_on_a_ready_gateway(
    venv: Path, gateway: str, tmp_path: Path
) -> None:
    script = dockerfile_healthcheck(tmp_path)
    ready = run_healthcheck(venv, script, GATEWAY_PORT=gateway.rsplit(":", 1)[1])
    assert ready.returncode == 0, ready.stderr
    nobody = run_healthcheck(venv, script, GATEWAY_PORT=str(free_port()))
    assert nobody.returncode != 0
    assert "unhealthy: gateway" in nobody.stderr


def test_the_image_healthcheck_of_the_projector_asks_redis(
    venv: Path, gateway: str, tmp_path: Path
) -> None:
    """(`gateway` is there for its check that the Redis answers, else a skip or failure.)"""
    script = dockerfile_healthcheck(tmp_path)
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    assert run_healthcheck(venv, script, "projector", REDIS_URL=redis_url).returncode == 0
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    refused = run_healthcheck(venv, script, "projector", REDIS_URL=nowhere)
    assert refused.returncode != 0
    assert "unhealthy: projector" in refused.stderr


def locked_versions(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", path.read_text(), re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


@pytest.mark.parametrize(
    ("lock", "groups"),
    [(LOCKS[0], ()), (LOCKS[1], ("dev",)), (LOCKS[2], ("dev", "peers"))],
)
def test_each_lock_satisfies_pyproject(lock: str, groups: tuple[str, ...]) -> None:
    """Every requirement of pyproject.toml (and the lock's groups) is pinned, inside its range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for group in groups:
        wanted += project["optional-dependencies"][group]
    pins = locked_versions(ROOT / lock)
    wrong = []
    for line in wanted:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        version = pins.get(name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{line}: locked {version}")
    assert not wrong, f"{lock} is stale, run `make lock`: {wrong}"


def test_the_image_ships_the_versions_ci_tests() -> None:
    """The dev and peers locks pin the runtime packages exactly as the image's lock does."""
    runtime = locked_versions(ROOT / LOCKS[0])
    for lock in LOCKS[1:]:
        pins = locked_versions(ROOT / lock)
        differ = {name: (v, pins.get(name)) for name, v in runtime.items() if pins.get(name) != v}
        # a package pinned per Python version (numpy) is compared by its last pin
        assert not differ, f"{lock} disagrees with {LOCKS[0]}: {differ}"
