"""The gateway's API tokens before any request: how they are read and refused, what ends a
session cookie, and the rule that a gateway listening off loopback needs a token (or an explicit
RAGPOC_ALLOW_OPEN=1), checked directly and through the `ragpoc` CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from libs.common import Settings, SettingsError
from services.gateway.app import create_app as gateway_app
from services.gateway.tokens import (
    TokenSet,
    gateway_tokens,
    issue_session,
    load_tokens,
    parse_tokens,
)
from tests.cli_runner import ragpoc

READ = "reader-secret-0123456789abcdef"
WRITE = "writer-secret-0123456789abcdef"
TOKENS = f"ui:read:{READ},ops:write:{WRITE}"


def test_a_cookie_ends_with_its_token_its_secret_or_its_scope() -> None:
    [reader] = parse_tokens([("test", f"ui:read:{READ}")])
    cookie = issue_session(reader)
    assert TokenSet([reader]).session_token(cookie) == reader
    for tokens in (f"ops:write:{WRITE}", f"ui:read:{READ[::-1]}", f"ui:write:{READ}"):
        assert TokenSet(parse_tokens([("test", tokens)])).session_token(cookie) is None


@pytest.mark.parametrize(
    ("tokens", "problem"),
    [
        ("ci:read:short-secret", "entry 1 (token 'ci'): the secret must be at least 16"),
        (f"ops:write:{WRITE},ci:admin:{READ}", "entry 2 (token 'ci'): the scope must be"),
        (f"{READ}", "entry 1: the entry must be name:scope:secret"),
        (f"a:read:{READ},a:write:{WRITE}", "entry 2 (token 'a'): another token already has"),
    ],
)
def test_a_malformed_token_stops_the_gateway_saying_which(tokens: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(problem)) as refused:
        gateway_app(Settings(api_tokens=tokens))
    assert READ not in str(refused.value)
    assert "short-secret" not in str(refused.value)


def test_tokens_come_from_the_variable_and_the_file_merged(tmp_path: Path) -> None:
    listed = tmp_path / "tokens"
    listed.write_text(f"# the CI's token\n\nci:read:{READ}\n  \n")
    tokens = load_tokens(Settings(api_tokens=f"ops:write:{WRITE}", api_tokens_file=listed))
    assert [(t.name, t.scope) for t in tokens] == [("ops", "write"), ("ci", "read")]
    listed.write_text(f"ci:read:{READ}\nbad:read:short\n")
    with pytest.raises(SettingsError, match=f"RAGPOC_API_TOKENS_FILE {listed} line 2"):
        load_tokens(Settings(api_tokens_file=listed))
    with pytest.raises(SettingsError, match="cannot be read"):
        load_tokens(Settings(api_tokens_file=tmp_path / "missing"))
    assert READ not in repr(Settings(api_tokens=f"ci:read:{READ}"))


def test_a_gateway_off_loopback_needs_a_token_or_an_explicit_opt_out() -> None:
    with pytest.raises(SettingsError, match="RAGPOC_API_TOKENS=name:write:") as refused:
        gateway_tokens(Settings(host="0.0.0.0"))
    assert "RAGPOC_ALLOW_OPEN=1" in str(refused.value)
    assert not gateway_tokens(Settings(host="0.0.0.0", allow_open=True))
    assert gateway_tokens(Settings(host="0.0.0.0", api_tokens=TOKENS))
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert not gateway_tokens(Settings(host=loopback))


def test_an_open_gateway_on_loopback_says_so_once() -> None:
    with capture_logs() as logs:
        gateway_app(Settings())
    opened = [entry for entry in logs if entry["event"] == "auth.open"]
    assert len(opened) == 1
    assert opened[0]["log_level"] == "warning"
    assert "anyone on this machine can use the API" in opened[0]["message"]


@pytest.mark.parametrize("command", ["gateway", "up"])
def test_the_cli_refuses_to_start_exposed_without_tokens(tmp_path: Path, command: str) -> None:
    refused = ragpoc(
        command,
        data_dir=tmp_path / "data",
        unset=("RAGPOC_", "REDIS_URL"),
        RAGPOC_HOST="0.0.0.0",
        REDIS_URL="redis://127.0.0.1:9/0",
    )
    assert refused.returncode == 2, refused.stderr
    assert "RAGPOC_API_TOKENS" in refused.stderr
    assert "RAGPOC_ALLOW_OPEN=1" in refused.stderr
    assert not (tmp_path / "data").exists()  # `up` started nothing


def test_the_up_banner_says_whether_the_api_needs_a_token() -> None:
    from services.cli.supervisor import auth_summary

    assert auth_summary(Settings(api_tokens=TOKENS)).startswith("on: tokens ui (read), ops (write)")
    assert auth_summary(Settings()).startswith("OFF: anyone on this machine can use the API")
    exposed = auth_summary(Settings(host="0.0.0.0", allow_open=True))
    assert exposed.startswith("OFF: anyone who reaches it")
    assert READ not in auth_summary(Settings(api_tokens=TOKENS))
