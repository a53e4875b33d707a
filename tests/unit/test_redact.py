"""No password from REDIS_URL or DATABASE_URL reaches a printed line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from libs.common.logging import configure_logging
from libs.common.redact import redact, redact_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("postgresql://ragpoc:pw@postgres:5432/db", "postgresql://ragpoc:***@postgres:5432/db"),
        ("postgresql+psycopg://u:a:b@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "cannot reach rediss://u:p%40ss@h:1/0: refused",
            "cannot reach rediss://u:***@h:1/0: refused",
        ),
        ("http://127.0.0.1:8001/ready", "http://127.0.0.1:8001/ready"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("https://user@host/path", "https://user@host/path"),
    ],
)
def test_a_url_keeps_its_shape_without_its_password(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_url_masks_only_the_password() -> None:
    assert (
        redact_url("redis://default:hunter22@10.0.0.5:6380/2")
        == "redis://default:***@10.0.0.5:6380/2"
    )


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The logging set-up of before the test, back afterwards: what configure_logging installs
    writes to the test's captured stderr, which is closed once the test ends."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers, root.level = handlers, level
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


@pytest.mark.usefixtures("restored_logging")
def test_log_lines_never_carry_a_url_password(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", service="test")  # here: stderr is the test's capture now
    log = structlog.get_logger("redact-test")
    log.warning("connect.failed", url="redis://:topsecret@redis:6379/0")
    try:
        raise ConnectionError("postgresql://ragpoc:topsecret@db/ragpoc refused")
    except ConnectionError:
        log.exception("db.failed")
        logging.getLogger("some.library").exception("also redis://:topsecret@h/0")
    printed = capsys.readouterr().err
    assert "topsecret" not in printed
    assert printed.count(":***@") >= 4  # the field, the message, both exception texts
