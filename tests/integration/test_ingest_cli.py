"""`ragpoc ingest PATH...` against a real gateway and ingestor: folders are walked, other files
skipped, documents become searchable, and failures make the exit code non-zero."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from libs.events import Keys
from services.cli import main as ragpoc
from tests.conftest import free_port
from tests.integration.ingeststack import (
    ingest_settings,
    running_gateway,
    running_ingestor,
    running_mockai,
)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


async def test_a_folder_is_ingested_and_searchable_and_other_files_are_skipped(
    redis_url: str, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes"
    write(notes / "sky.md", "# Why the sky is blue\n\nRayleigh scattering of sunlight.\n")
    write(notes / "deep" / "bread.txt", "Sourdough rises thanks to wild yeast.")
    write(notes / "photo.png", b"\x89PNG")
    write(notes / "latin1.txt", "caf\xe9".encode("latin-1"))
    write(notes / ".hidden" / "secret.md", "not for the index")
    async with running_mockai() as openai_url:
        settings = ingest_settings(redis_url, keys, tmp_path, openai_url)
        async with running_ingestor(settings), running_gateway(settings) as gateway:
            argv = ["ingest", str(notes), "--base-url", settings.gateway_url, "--batch-size", "1"]
            code = await asyncio.to_thread(ragpoc, argv)
            again = await asyncio.to_thread(ragpoc, argv)
            found = await gateway.post("/api/search", json={"query": "wild yeast", "k": 10})

    out = capsys.readouterr().out
    assert (code, again) == (0, 0)
    assert "ingested 2 documents (2 chunks)" in out
    assert "0 failed; 2 skipped" in out
    assert "photo.png: not a .txt or .md file" in out
    assert "latin1.txt: not UTF-8 text" in out
    assert "secret" not in out
    hits = found.json()["hits"]
    assert len(hits) == 2  # ingesting twice added nothing
    assert hits[0]["title"] == "bread"
    assert hits[0]["source"] == str((notes / "deep" / "bread.txt").resolve())
    assert {hit["title"] for hit in hits} == {"bread", "Why the sky is blue"}


async def test_a_document_that_fails_makes_the_exit_code_non_zero(
    redis_url: str, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "ok.txt", "A fine document.")
    # accepted by the gateway, then refused by the embedding API while the ingestor indexes it
    broken = write(tmp_path / "refused.txt", "REJECT-ME: the embedding API refuses this one.")
    async with running_mockai(failures={"REJECT-ME": 400}) as openai_url:
        settings = ingest_settings(redis_url, keys, tmp_path, openai_url)
        async with running_ingestor(settings), running_gateway(settings):
            code = await asyncio.to_thread(
                ragpoc,
                [
                    "ingest",
                    str(tmp_path / "ok.txt"),
                    str(broken),
                    "--batch-size",
                    "1",
                    "--base-url",
                    settings.gateway_url,
                ],
            )
    out = capsys.readouterr().out
    assert code == 1
    assert f"failed {broken}: " in out
    assert "ingested 1 documents (1 chunks)" in out


def test_an_unreachable_gateway_is_reported_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "a.md", "Some text.")
    url = f"http://127.0.0.1:{free_port()}"
    assert ragpoc(["ingest", str(tmp_path), "--base-url", url]) == 1
    assert f"cannot reach the gateway at {url}" in capsys.readouterr().err


def test_no_usable_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "image.png", b"\x89PNG")
    assert ragpoc(["ingest", str(tmp_path)]) == 2
    assert "nothing to ingest" in capsys.readouterr().out


async def test_with_tokens_ingest_needs_one_and_says_how_to_give_it(
    redis_url: str,
    keys: Keys,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "ingest-writer-0123456789abcdef"
    write(tmp_path / "notes" / "sky.md", "Rayleigh scattering of sunlight.")
    async with running_mockai() as openai_url:
        settings = ingest_settings(
            redis_url, keys, tmp_path, openai_url, api_tokens=f"loader:write:{secret}"
        )
        async with running_ingestor(settings), running_gateway(settings):
            argv = ["ingest", str(tmp_path / "notes"), "--base-url", settings.gateway_url]
            monkeypatch.delenv("RAGPOC_API_TOKEN", raising=False)
            refused = await asyncio.to_thread(ragpoc, argv)
            refused_err = capsys.readouterr().err
            monkeypatch.setenv("RAGPOC_API_TOKEN", secret)
            accepted = await asyncio.to_thread(ragpoc, argv)
            accepted_out = capsys.readouterr().out

    assert refused == 1
    assert "401" in refused_err
    assert "--token" in refused_err
    assert accepted == 0, accepted_out
    assert "ingested 1 documents" in accepted_out
    assert secret not in refused_err + accepted_out


async def test_control_characters_in_a_file_become_spaces_not_a_refused_batch(
    redis_url: str, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "notes" / "paged.txt", "Page one about sourdough.\f\x1b[1mPage two\x1b[0m.")
    async with running_mockai() as openai_url:
        settings = ingest_settings(redis_url, keys, tmp_path, openai_url)
        async with running_ingestor(settings), running_gateway(settings) as gateway:
            argv = ["ingest", str(tmp_path / "notes"), "--base-url", settings.gateway_url]
            code = await asyncio.to_thread(ragpoc, argv)
            found = await gateway.post("/api/search", json={"query": "sourdough", "k": 1})
    assert code == 0, capsys.readouterr().out
    [hit] = found.json()["hits"]
    assert "Page two" in hit["text"]
    assert "\x1b" not in hit["text"]
