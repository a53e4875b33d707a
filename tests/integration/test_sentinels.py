"""Sentinel files (RAGPOC_SENTINEL_DIR): what a gateway writes for each POST /run-agents entry,
admission and refusal at each layer, in process against real Redis/Valkey and SQLite; whole
lines when two processes append at once; nothing when unset; a request that succeeds when the
folder cannot be written; and scripts/run_lock_smoke.py against a gateway outside dev mode."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from structlog.testing import capture_logs

from libs.commandside.claims import claim_task
from libs.commandside.locks import TaskLocks
from libs.common.database import create_engine
from libs.events import Keys
from services.gateway import sentinels
from services.gateway.admission import Refused
from tests.integration.inprocess import InProcessStack, in_process_stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: what is written does not depend on the read models' database."""
    return f"sqlite+aiosqlite:///{tmp_path / 'readmodels.db'}"


def parse(line: str) -> tuple[str, dict[str, str]]:
    """`<time> KIND key=value ...` -> (KIND, {key: value})."""
    at, kind, *pairs = line.split(" ")
    assert at.endswith("+00:00"), line  # an ISO time in UTC first
    return kind, dict(pair.split("=", 1) for pair in pairs)


def lines(folder: Path, name: str) -> list[tuple[str, dict[str, str]]]:
    """Every line of a sentinel file, parsed; [] when it does not exist."""
    path = folder / name
    return [parse(line) for line in path.read_text().splitlines()] if path.exists() else []


def sentinel_files_under(folder: Path) -> list[Path]:
    return list(folder.rglob("run_agents_*"))


def smoke_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "scripts" / "run_lock_smoke.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def stack(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[InProcessStack]:
    async with in_process_stack(
        redis_url, database_url, keys, str(tmp_path), dev=True, sentinel_dir=tmp_path / "sent"
    ) as running:
        yield running


async def test_entry_admission_and_refusal_each_append_one_line(stack: InProcessStack) -> None:
    folder = stack.settings.sentinel_dir
    assert folder is not None
    task_id = await stack.new_task()
    first = await stack.client.post("/run-agents", json={"id": task_id, "hold_seconds": 5})
    second = await stack.client.post("/run-agents", json={"id": task_id})
    assert (first.status_code, second.status_code) == (202, 409)
    run = first.json()

    entered = lines(folder, sentinels.ENTERED_FILE)
    assert [(kind, f["task_id"]) for kind, f in entered] == [("ENTERED", str(task_id))] * 2
    [(kind, acquired)] = lines(folder, sentinels.LOCK_ACQUIRED_FILE)
    assert kind == "LOCK_ACQUIRED"
    assert (acquired["task_id"], acquired["run_id"]) == (str(task_id), run["run_id"])
    assert acquired["fence"] == str(run["fence"])
    assert acquired["method"] == "redis_set_nx_px+db_claim"
    assert int(acquired["token_len"]) > len(run["run_id"])  # run:fence:holder:nonce
    [(kind, conflict)] = lines(folder, sentinels.LOCK_CONFLICT_FILE)
    assert kind == "LOCK_CONFLICT"
    assert (conflict["task_id"], conflict["layer"]) == (str(task_id), "precheck")
    assert conflict["holder"] == run["run_id"]
    assert conflict["run_id"] != run["run_id"]
    for _, written in [*entered, ("", acquired), ("", conflict)]:
        assert written["pid"].isdigit()
        assert written["host"]


async def test_a_refusal_by_the_database_claim_names_the_db_layer(stack: InProcessStack) -> None:
    folder = stack.settings.sentinel_dir
    assert folder is not None
    task_id = await stack.new_task()
    engine = create_engine(stack.settings.sqlalchemy_url)
    try:
        assert await claim_task(engine, task_id, "queued-run", 7, time.time() + 60)
    finally:
        await engine.dispose()
    assert (await stack.client.post("/run-agents", json={"id": task_id})).status_code == 409
    conflicts = lines(folder, sentinels.LOCK_CONFLICT_FILE)
    assert [(f["layer"], f["holder"]) for _, f in conflicts] == [("db", "queued-run")]
    # the lock was taken before the claim refused: no LOCK_ACQUIRED for a run not admitted
    assert lines(folder, sentinels.LOCK_ACQUIRED_FILE) == []


async def test_a_refusal_by_the_lock_names_the_lock_layer(
    stack: InProcessStack, keys: Keys
) -> None:
    folder = stack.settings.sentinel_dir
    assert folder is not None
    task_id = await stack.new_task()
    locks = TaskLocks(stack.store.redis, keys)
    assert not isinstance(await locks.acquire(task_id, "racer", 30_000), Refused)
    assert isinstance(await stack.admit_directly(keys, task_id, "late-run"), Refused)
    [(_, conflict)] = lines(folder, sentinels.LOCK_CONFLICT_FILE)
    assert (conflict["layer"], conflict["run_id"], conflict["holder"]) == (
        "lock",
        "late-run",
        "racer",
    )


async def test_nothing_is_written_when_the_setting_is_unset(
    redis_url: str,
    database_url: str,
    keys: Keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative default would land here
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path), dev=True) as stack:
        assert stack.settings.sentinel_dir is None
        task_id = await stack.new_task()
        first = await stack.client.post("/run-agents", json={"id": task_id, "hold_seconds": 1})
        second = await stack.client.post("/run-agents", json={"id": task_id})
        assert (first.status_code, second.status_code) == (202, 409)
    assert sentinel_files_under(tmp_path) == []


async def test_an_unwritable_folder_never_fails_a_request_and_is_logged_once(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("in the way")
    async with in_process_stack(
        redis_url, database_url, keys, str(tmp_path), dev=True, sentinel_dir=not_a_folder
    ) as stack:
        task_id = await stack.new_task()
        with capture_logs() as logged:
            first = await stack.client.post("/run-agents", json={"id": task_id, "hold_seconds": 1})
            again = await stack.client.post("/run-agents", json={"id": task_id})
        assert (first.status_code, again.status_code) == (202, 409)
    failures = [e for e in logged if e["event"] == "gateway.sentinel_write_failed"]
    # one per file (entered, acquired, conflict), not one per line
    assert sorted(Path(e["path"]).name for e in failures) == sorted(
        [sentinels.ENTERED_FILE, sentinels.LOCK_ACQUIRED_FILE, sentinels.LOCK_CONFLICT_FILE]
    )
    assert not_a_folder.read_text() == "in the way"


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from services.gateway import sentinels
    folder, tag, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    holder = tag * 300  # long lines: a write in pieces would interleave with the other process
    for i in range(count):
        sentinels.lock_conflict(folder, i, f"{tag}-{i}", "lock", holder, None)
    """
)


def test_two_processes_appending_at_once_never_tear_a_line(tmp_path: Path) -> None:
    count = 3000
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag, str(count)], cwd=ROOT)
        for tag in ("a", "b")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    written = (tmp_path / sentinels.LOCK_CONFLICT_FILE).read_text().splitlines()
    assert len(written) == 2 * count
    seen: dict[str, list[int]] = {"a": [], "b": []}
    for line in written:
        kind, fields = parse(line)
        tag = fields["run_id"].split("-")[0]
        assert kind == "LOCK_CONFLICT", line
        assert fields["holder"] == tag * 300, line
        assert fields["run_id"] == f"{tag}-{fields['task_id']}", line
        seen[tag].append(int(fields["task_id"]))
    assert seen == {"a": list(range(count)), "b": list(range(count))}  # each in its own order


def test_a_line_is_one_atomic_write_however_long_its_values() -> None:
    line = sentinels.format_line("LOCK_ACQUIRED", time.time(), run_id="r" * 5000)
    assert len(line) == sentinels.LINE_MAX_BYTES
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    short = sentinels.format_line("ENTERED", time.time(), task_id=7, note="a b\nc")
    assert b" note=a_b_c " in short  # whitespace in a value cannot split the line's fields


async def test_the_smoke_script_passes_against_a_gateway_outside_dev_mode(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> None:
    """Not in dev mode the script's hold_seconds is refused (422) and the pair goes again
    without it; TEST_HOLD_SECONDS keeps the first run busy, as the runners would in compose."""
    script = smoke_script()
    folder = tmp_path / "sent"
    async with in_process_stack(
        redis_url, database_url, keys, str(tmp_path), test_hold_seconds=3, sentinel_dir=folder
    ) as stack:
        args = script.parse_args(["--base-url", stack.settings.gateway_url])
        outcome = await script.smoke(args, script.LocalSentinels(folder))
    assert outcome.problems() == []
    assert outcome.verdict().startswith("PASS: ")
    assert outcome.sentinels_gained["ENTERED"] == 4  # the refused pair, then the pair again
