"""The operation manual's scripts against real processes: scripts/run_lock_smoke.py on a
`ragpoc up` stack started with RAGPOC_SENTINEL_DIR (PASS, and FAIL when pointed at the wrong
files or an unreachable gateway), its --compose path through a stand-in compose command, two
gateway processes appending to one sentinel folder, and scripts/run_openai_mock.py answering as
OpenAI does."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from services.cli.settings import RunningStack
from tests.conftest import free_port
from tests.e2e.processes import Cluster
from tests.eventually import eventually_sync
from tests.stackproc import UpProcess, ragpoc_up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scripts" / "run_lock_smoke.py"
MOCK = ROOT / "scripts" / "run_openai_mock.py"
KINDS = {
    "run_agents_entered.log": "ENTERED",
    "run_agents_lock_acquired.log": "LOCK_ACQUIRED",
    "run_agents_lock_conflict.log": "LOCK_CONFLICT",
}


class Stack(msgspec.Struct):
    up: UpProcess
    data: Path
    sentinels: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("smoke-stack")
    sentinels = data / "sentinels"
    env = {"RAGPOC_DEV": "1", "RAGPOC_SENTINEL_DIR": str(sentinels), "RAGPOC_LOG_FORMAT": "json"}
    with ragpoc_up(data, env) as up:
        yield Stack(up, data, sentinels)


def smoke(*args: str) -> tuple[int, list[str]]:
    """Run the smoke script; its exit status and printed lines (the verdict last)."""
    done = subprocess.run(
        [sys.executable, str(SMOKE), *args], capture_output=True, text=True, timeout=90
    )
    printed = done.stdout.splitlines()
    assert printed, done.stderr
    return done.returncode, printed


def sentinel_lines(folder: Path) -> dict[str, list[list[str]]]:
    """Each sentinel file's lines, split into words; every line must be whole."""
    found: dict[str, list[list[str]]] = {}
    for name, kind in KINDS.items():
        path = folder / name
        text = path.read_text() if path.exists() else ""
        assert text == "" or text.endswith("\n"), name
        found[kind] = [line.split(" ") for line in text.splitlines()]
        for words in found[kind]:
            assert words[1] == kind, words
            assert words[-2].startswith("pid="), words
            assert words[-1].startswith("host="), words
    return found


def count_for(lines: list[list[str]], task_id: int) -> int:
    return sum(f"task_id={task_id}" in words for words in lines)


def test_the_lock_smoke_script_passes_and_sees_the_sentinel_lines(stack: Stack) -> None:
    status, printed = smoke("--base-url", stack.up.base_url, "--sentinel-dir", str(stack.sentinels))
    assert status == 0, "\n".join(printed)
    assert printed[-1].startswith("PASS: task "), printed
    # either layer may refuse: the two requests race to the precheck and to the lock
    assert re.search(r"one refused \(409 at (precheck|lock|db)\)", printed[-1]), printed
    task_id = int(printed[-1].split()[2].rstrip(":"))
    lines = sentinel_lines(stack.sentinels)
    assert count_for(lines["ENTERED"], task_id) == 2
    assert count_for(lines["LOCK_ACQUIRED"], task_id) == 1
    assert count_for(lines["LOCK_CONFLICT"], task_id) == 1


def test_the_smoke_script_fails_on_an_empty_stale_or_wrong_sentinel_folder(
    stack: Stack, tmp_path: Path
) -> None:
    stale = tmp_path / "stale"  # lines of earlier runs, none written while the script runs
    stale.mkdir()
    smoke("--base-url", stack.up.base_url)
    for name in KINDS:
        (stale / name).write_bytes((stack.sentinels / name).read_bytes())
    for folder in (tmp_path / "empty", tmp_path / "missing", stale):
        (tmp_path / "empty").mkdir(exist_ok=True)
        status, printed = smoke("--base-url", stack.up.base_url, "--sentinel-dir", str(folder))
        assert status == 1, printed
        verdict = printed[-1]
        assert verdict.startswith("FAIL: "), verdict
        assert "no new LOCK_ACQUIRED or LOCK_CONFLICT line" in verdict, verdict
        assert str(folder) in verdict


def test_the_smoke_script_says_fail_when_the_gateway_does_not_answer() -> None:
    status, printed = smoke("--base-url", f"http://127.0.0.1:{free_port()}")
    assert status == 2
    assert printed[-1].startswith("FAIL: cannot talk to the gateway"), printed


# Stands in for `docker compose` (no container engine here): checks the command line the
# script builds, and serves `exec -T mcp cat /tmp/NAME` from the stack's sentinel folder.
STAND_IN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    folder, args = Path(sys.argv[1]), sys.argv[2:]
    if args[:4] != ["exec", "-T", "mcp", "cat"] or len(args) != 5:
        print(f"service {args[2:3]} is not running: {args}", file=sys.stderr)
        sys.exit(1)
    path = folder / Path(args[4]).relative_to("/tmp")
    if not path.exists():
        print(f"cat: {args[4]}: No such file or directory", file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(path.read_text())
    """
)


def test_the_compose_path_reads_the_files_inside_the_service(stack: Stack, tmp_path: Path) -> None:
    stand_in = tmp_path / "compose_stand_in.py"
    stand_in.write_text(STAND_IN)
    command = f"{sys.executable} {stand_in} {stack.sentinels}"
    base = ["--base-url", stack.up.base_url, "--compose", "--compose-command", command]
    status, printed = smoke(*base)
    assert status == 0, printed
    assert printed[-1].startswith("PASS: "), printed
    assert "in /tmp in the 'mcp' container" in printed[-1]
    status, printed = smoke(*base, "--service", "gateway")
    assert status == 2, printed
    assert printed[-1].startswith("FAIL: "), printed
    assert "is not running" in printed[-1], printed


def test_two_gateways_sharing_the_folder_admit_each_task_once(stack: Stack, tmp_path: Path) -> None:
    running = msgspec.json.decode((stack.data / "stack.json").read_bytes(), type=RunningStack)
    cluster = Cluster.create(
        tmp_path / "logs",
        REDIS_URL=running.redis_url,
        RAGPOC_DATA_DIR=str(stack.data),
        RAGPOC_DEV="1",
        RAGPOC_SENTINEL_DIR=str(stack.sentinels),
    )
    try:
        [second] = cluster.start_http("gateway", "GATEWAY_PORT")
        gateways = [stack.up.base_url, second]
        task_ids, statuses = asyncio.run(race_on_both(gateways, tasks=8))
    finally:
        cluster.stop()
    assert all(sorted(pair) == [202, 409] for pair in statuses), statuses
    lines = sentinel_lines(stack.sentinels)
    for task_id in task_ids:
        assert count_for(lines["LOCK_ACQUIRED"], task_id) == 1, task_id
        assert count_for(lines["LOCK_CONFLICT"], task_id) == 1, task_id
        assert count_for(lines["ENTERED"], task_id) == 2, task_id
    writers = Counter(
        words[-2] for words in lines["ENTERED"] if any(count_for([words], t) for t in task_ids)
    )
    assert len(writers) == 2, writers  # both gateway processes wrote into the one folder


async def race_on_both(gateways: list[str], tasks: int) -> tuple[list[int], list[list[int]]]:
    """Create `tasks` tasks; for each, one POST /run-agents to each gateway at once."""
    async with httpx.AsyncClient(timeout=30) as client:
        task_ids = []
        for i in range(tasks):
            created = await client.post(f"{gateways[0]}/api/tasks", json={"title": f"race {i}"})
            task_ids.append(int(created.json()["id"]))

        async def race(task_id: int) -> list[int]:
            body = {"id": task_id, "hold_seconds": 2}
            replies = await asyncio.gather(
                *(client.post(f"{url}/run-agents", json=body) for url in gateways)
            )
            return [reply.status_code for reply in replies]

        return task_ids, list(await asyncio.gather(*(race(t) for t in task_ids)))


def test_the_mock_server_script_answers_models_and_chat(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "mock.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, str(MOCK), "--port", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def models() -> httpx.Response | None:
            assert server.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/v1/models", timeout=2)
            except httpx.TransportError:
                return None

        listed = eventually_sync(
            models, until=lambda r: r is not None, within=30, interval=0.1, message=log.read_text
        )
        assert listed is not None
        assert listed.status_code == 200
        assert "mock-gpt" in [m["id"] for m in listed.json()["data"]]
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "mock-gpt", "messages": [{"role": "user", "content": "Why is the sky"}]},
            timeout=10,
        )
        assert chat.status_code == 200
        assert "blue" in chat.json()["choices"][0]["message"]["content"]
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0, log.read_text()
    assert f"mockai on {url}/v1" in log.read_text()
