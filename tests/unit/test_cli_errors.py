"""`ragpoc` commands say in one line what is wrong with their surroundings, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main
from tests.conftest import free_port


def test_an_unreachable_database_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{free_port()}/x")

    assert main(["rebuild"]) == 1

    err = capsys.readouterr().err
    assert err.startswith("ragpoc rebuild: the database at postgresql+psycopg://u:***@")
    assert "secret" not in err


def test_a_missing_data_folder_is_refused_before_any_database_is_opened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RAGPOC_DATA_DIR", str(tmp_path / "nowhere"))

    assert main(["rebuild"]) == 1

    err = capsys.readouterr().err
    assert err.startswith("ragpoc rebuild: no database at ")
    assert "nowhere does not exist" in err


def test_an_unreachable_redis_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RAGPOC_DATA_DIR", str(tmp_path))  # no archive: Redis is all there is

    assert main(["events", "1"]) == 1

    assert f"ragpoc events: cannot reach Redis at {url}" in capsys.readouterr().err


def test_an_unreachable_redis_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RAGPOC_DATA_DIR", str(tmp_path))

    assert main(["events", "1"]) == 1

    err = capsys.readouterr().err
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in err
    assert "hunter2" not in err
