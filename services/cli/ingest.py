"""`ragpoc ingest PATH...`: send text and Markdown files to the gateway's `POST /api/ingest`.

Folders are walked recursively; files other than .txt/.md, hidden files and folders, and files
that are not UTF-8 text are skipped (and listed). Documents go in batches; by default each batch
waits until its documents are searchable (`?wait=`). The summary goes to stdout, the progress
bar to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from libs.common import Settings, SettingsError, load_settings
from services.cli.settings import Subparsers, running_stack

__all__ = ["add_parser", "run"]

SUFFIXES = (".txt", ".md", ".markdown")
MAX_BATCH_DOCUMENTS = 100  # the gateway's limit
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Totals:
    documents: int = 0
    chunks: int = 0
    queued: int = 0
    pending: int = 0
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Document:
    path: Path
    body: dict[str, Any]
    size: int  # of its JSON, bytes


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="Ingest .txt/.md files or folders through the gateway",
        description=(
            "Index text (.txt) and Markdown (.md) files for search: they are sent to the\n"
            "gateway, then chunked, embedded and stored by the ingestor. Folders are read\n"
            "recursively; other files, hidden files and folders, and files that are not UTF-8\n"
            "are skipped and listed. Ingesting a file again with the same content changes\n"
            "nothing. Exits with 1 if any document failed."
        ),
        epilog=(
            "examples:\n"
            "  ragpoc ingest notes/\n"
            "  ragpoc ingest README.md docs/ --batch-size 50\n"
            "  ragpoc ingest big-folder/ --no-wait --base-url http://127.0.0.1:18001"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    parser.add_argument(
        "--base-url",
        help="the gateway's URL (default: the gateway of the `ragpoc up` stack running from "
        "RAGPOC_DATA_DIR, else http://RAGPOC_HOST:GATEWAY_PORT)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("RAGPOC_API_TOKEN", ""),
        help="an API token with write scope, when the gateway has tokens (default: the "
        "environment's RAGPOC_API_TOKEN)",
    )
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default=20,
        help=f"documents per request, 1 to {MAX_BATCH_DOCUMENTS} (default: %(default)s)",
    )
    parser.add_argument(
        "--wait",
        type=_wait,
        default=60.0,
        metavar="SECONDS",
        help="how long each batch may take to become searchable, at most 120 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="only queue the documents; do not wait until they are searchable",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=900_000,
        help="largest request body to send; keep it under the gateway's RAGPOC_MAX_BODY_BYTES "
        "(default: %(default)s)",
    )
    parser.set_defaults(run=run)


def gateway_url() -> str:
    """The running `ragpoc up` stack's gateway, else the one the settings name."""
    try:
        settings = load_settings()
    except SettingsError:
        settings = Settings()
    stack = running_stack(settings.data_dir)
    return stack.gateway_url if stack is not None else settings.gateway_url


def run(args: argparse.Namespace) -> int:
    base_url = args.base_url or gateway_url()
    started = time.perf_counter()
    totals = Totals()
    documents = list(_documents(_files(args.paths, totals), totals))
    for line in totals.skipped:
        print(f"skipped {line}")
    if not documents:
        print("nothing to ingest: give .txt or .md files, or folders holding some")
        return 1 if totals.failures else 2
    wait = None if args.no_wait else args.wait
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with (
        httpx.Client(base_url=base_url, timeout=(wait or 0) + 30, headers=headers) as client,
        tqdm(total=len(documents), unit="doc", desc="ingesting", disable=None) as progress,
    ):
        for batch in _batches(documents, args.batch_size, args.max_request_bytes):
            try:
                _send(client, batch, wait, totals)
            except Refused as exc:
                progress.close()
                print(f"ragpoc ingest: the gateway at {base_url} refused: {exc}", file=sys.stderr)
                return 1
            except httpx.TransportError as exc:
                progress.close()
                print(
                    f"ragpoc ingest: cannot reach the gateway at {base_url} ({exc}): "
                    "start it with `ragpoc up`, or pass --base-url",
                    file=sys.stderr,
                )
                return 1
            progress.update(len(batch))
            progress.set_postfix(chunks=totals.chunks, failed=len(totals.failures))
    _summary(totals, time.perf_counter() - started, waited=wait is not None)
    return 1 if totals.failures else 0


def _files(paths: Sequence[Path], totals: Totals) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in found.relative_to(path).parts)
                if found.is_file() and not hidden:
                    yield from _if_text(found, totals)
        elif path.is_file():
            yield from _if_text(path, totals)
        else:
            totals.failures.append(f"{path}: no such file or folder")


def _if_text(path: Path, totals: Totals) -> Iterator[Path]:
    if path.suffix.lower() in SUFFIXES:
        yield path
    else:
        totals.skipped.append(f"{path}: not a .txt or .md file")


def _documents(paths: Iterator[Path], totals: Totals) -> Iterator[Document]:
    seen: set[Path] = set()
    for path in paths:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            totals.skipped.append(f"{path}: not UTF-8 text")
            continue
        except OSError as exc:
            totals.failures.append(f"{path}: cannot be read ({exc.strerror})")
            continue
        # the gateway refuses control characters in text (form feeds, terminal escapes): they
        # carry no meaning for the index, so they become spaces
        text = CONTROL_CHARACTERS.sub(" ", text)
        if not text.strip():
            totals.skipped.append(f"{path}: empty")
            continue
        body = {
            "text": text,
            "title": _title(path, text),
            "source": str(resolved),
            "metadata": {"filename": path.name, "bytes": len(text.encode())},
        }
        yield Document(path, body, len(json.dumps(body)))


def _title(path: Path, text: str) -> str:
    """A Markdown file's first heading, else the file's name without its suffix."""
    if path.suffix.lower() != ".txt":
        for line in text.splitlines():
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
                if heading:
                    return heading[:500]
    return path.stem[:500]


def _batches(
    documents: list[Document], batch_size: int, max_bytes: int
) -> Iterator[list[Document]]:
    """Batches of at most `batch_size` documents and about `max_bytes` of JSON; a document
    larger than that goes alone (and the gateway says whether it is too large)."""
    batch: list[Document] = []
    size = 0
    for document in documents:
        if batch and (len(batch) >= batch_size or size + document.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(document)
        size += document.size + 2
    if batch:
        yield batch


class Refused(Exception):
    """The gateway wants other credentials: no batch would fare better."""


def _send(client: httpx.Client, batch: list[Document], wait: float | None, totals: Totals) -> None:
    params = {"wait": f"{wait:g}"} if wait is not None else {}
    reply = client.post("/api/ingest", params=params, json={"documents": [d.body for d in batch]})
    if reply.status_code in (401, 403):
        hint = "pass --token or set RAGPOC_API_TOKEN" if reply.status_code == 401 else ""
        raise Refused(f"{reply.status_code} {_error_message(reply)} {hint}".strip())
    if reply.status_code not in (200, 202):
        reason = _error_message(reply)
        totals.failures += [f"{d.path}: rejected ({reply.status_code}): {reason}" for d in batch]
        return
    body = reply.json()
    if wait is None:
        totals.queued += len(batch)
        return
    outcomes = {o["doc_id"]: o for o in body.get("documents", [])}
    for document, doc_id in zip(batch, body["document_ids"], strict=True):
        outcome = outcomes.get(doc_id, {"status": "pending"})
        if outcome["status"] == "ingested":
            totals.documents += 1
            totals.chunks += int(outcome.get("chunks", 0))
        elif outcome["status"] == "failed":
            totals.failures.append(f"{document.path}: {outcome.get('reason', 'failed')}")
        else:
            totals.pending += 1


def _error_message(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return reply.text[:300]


def _summary(totals: Totals, seconds: float, *, waited: bool) -> None:
    for line in totals.failures:
        print(f"failed {line}")
    if waited:
        print(
            f"ingested {totals.documents} documents ({totals.chunks} chunks) in {seconds:.1f} s"
            f"; {len(totals.failures)} failed; {len(totals.skipped)} skipped"
        )
        if totals.pending:
            print(
                f"{totals.pending} documents were still being indexed when the wait ran out: "
                "they will be searchable shortly (raise --wait to wait longer)"
            )
    else:
        print(
            f"queued {totals.queued} documents in {seconds:.1f} s; {len(totals.failures)} failed"
            f"; {len(totals.skipped)} skipped (they become searchable in the background)"
        )


def _batch_size(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BATCH_DOCUMENTS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_BATCH_DOCUMENTS}")
    return value


def _wait(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 120:  # also rejects nan
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and at most 120")
    return value
