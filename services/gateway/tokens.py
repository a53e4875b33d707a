"""The gateway's API tokens: read from the settings, matched in constant time, and the session
cookie they sign.

A token is `name:scope:secret`. RAGPOC_API_TOKENS holds comma-separated entries and
RAGPOC_API_TOKENS_FILE one entry a line (`#` comments and blank lines allowed); both are merged.
The scope is `read` or `write` (write includes read). The name is what logs and answers show;
a secret is never printed, not even in the message that refuses a malformed entry.

Tokens are read once, at start. Rotating one: add the new token, restart the gateways, move the
clients to it, remove the old one, restart again. Removing a token (or changing its secret or
scope) also ends the browser sessions signed with it, since a session cookie is signed with a
key derived from its token's secret.

The session cookie is stateless, so any gateway replica accepts it:
`base64url(name|scope|expiry) "." base64url(HMAC-SHA256(key, name|scope|expiry))`, the key
being HMAC-SHA256(secret, "ragpoc session"), the expiry Unix seconds.

With no token at all, authentication is off: allowed on a loopback address only, unless
RAGPOC_ALLOW_OPEN=1 says running open elsewhere is meant (`gateway_tokens`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from libs.common import Settings, SettingsError

__all__ = [
    "MIN_SECRET_CHARS",
    "SESSION_COOKIE",
    "SESSION_LIFETIME_S",
    "ApiToken",
    "TokenSet",
    "gateway_tokens",
    "is_loopback",
    "issue_session",
    "load_tokens",
    "parse_tokens",
]

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
MIN_SECRET_CHARS = 16
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
SESSION_COOKIE = "ragpoc_session"
SESSION_LIFETIME_S = 12 * 3600
# how far ahead of this gateway's clock another replica's may be when it signs a cookie
CLOCK_SKEW_S = 300
_SESSION_KEY_LABEL = b"ragpoc session"


@dataclass(frozen=True)
class ApiToken:
    name: str
    scope: Scope
    secret: str = field(repr=False)  # repr and logs show the name only

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.secret.encode()).digest()

    @property
    def session_key(self) -> bytes:
        return hmac.new(self.secret.encode(), _SESSION_KEY_LABEL, hashlib.sha256).digest()

    def allows(self, scope: Scope) -> bool:
        return self.scope == "write" or scope == "read"


class TokenSet:
    """The configured tokens; empty means authentication is off."""

    def __init__(self, tokens: Iterable[ApiToken] = ()) -> None:
        self._tokens = list(tokens)
        self._digests = [(token.digest, token) for token in self._tokens]
        self._by_name = {token.name: token for token in self._tokens}

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __iter__(self) -> Iterator[ApiToken]:
        return iter(self._tokens)

    def match(self, secret: str) -> ApiToken | None:
        """The token whose secret this is. Every token is compared, each in constant time, on
        fixed-length digests: how long it takes says neither which token came close nor how
        long the secret is."""
        offered = hashlib.sha256(secret.encode()).digest()
        found = None
        for digest, token in self._digests:
            if hmac.compare_digest(offered, digest):
                found = token
        return found

    def session_token(self, cookie: str, now: float | None = None) -> ApiToken | None:
        """The token a session cookie was signed for, if the cookie is intact, unexpired, and
        its token still exists with the same secret and scope."""
        payload_part, _, mac_part = cookie.partition(".")
        payload, mac = _unb64(payload_part), _unb64(mac_part)
        if payload is None or mac is None:
            return None
        name, scope, expiry = _split_payload(payload)
        token = self._by_name.get(name)
        key = token.session_key if token is not None else _UNKNOWN_KEY
        valid = hmac.compare_digest(mac, _sign(key, payload))
        if token is None or not valid or scope != token.scope:
            return None
        current = time.time() if now is None else now
        if not current < expiry <= current + SESSION_LIFETIME_S + CLOCK_SKEW_S:
            return None
        return token


_UNKNOWN_KEY = b"\0" * 32  # signs for a name no token has, so that case costs the same


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _split_payload(payload: bytes) -> tuple[str, str, int]:
    """(name, scope, expiry) of a cookie's payload; ("", "", 0) when it is not one."""
    parts = payload.decode(errors="replace").split("|")
    if len(parts) != 3 or not parts[2].isdigit():
        return "", "", 0
    return parts[0], parts[1], int(parts[2])


def issue_session(token: ApiToken, now: float | None = None) -> str:
    """The session cookie's value for `token`, valid SESSION_LIFETIME_S from `now`."""
    expiry = int(time.time() if now is None else now) + SESSION_LIFETIME_S
    payload = f"{token.name}|{token.scope}|{expiry}".encode()
    return f"{_b64(payload)}.{_b64(_sign(token.session_key, payload))}"


def parse_tokens(entries: Iterable[tuple[str, str]]) -> list[ApiToken]:
    """Tokens from (where, entry) pairs; a malformed entry raises a SettingsError that says
    where it is and what is wrong, without its secret."""
    tokens: list[ApiToken] = []
    for where, entry in entries:
        parts = entry.strip().split(":", 2)
        if len(parts) != 3 or not NAME.fullmatch(parts[0]):  # nothing of it is shown: it
            raise SettingsError(  # may be a secret alone
                f"{where}: the entry must be name:scope:secret, the name 1-64 of "
                "A-Z a-z 0-9 _ . @ -"
            )
        name, scope, secret = parts
        described = f"{where} (token {name!r})"
        if scope not in SCOPES:
            raise SettingsError(f"{described}: the scope must be read or write")
        if len(secret) < MIN_SECRET_CHARS or any(c.isspace() or c == "," for c in secret):
            raise SettingsError(
                f"{described}: the secret must be at least {MIN_SECRET_CHARS} characters, "
                f"without spaces or commas (it has {len(secret)}); make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
        if any(other.name == name for other in tokens):
            raise SettingsError(f"{described}: another token already has this name")
        if any(other.secret == secret for other in tokens):
            raise SettingsError(f"{described}: another token already has this secret")
        tokens.append(ApiToken(name, "write" if scope == "write" else "read", secret))
    return tokens


def _entries(settings: Settings) -> Iterator[tuple[str, str]]:
    listed = [entry for entry in settings.api_tokens.split(",") if entry.strip()]
    for number, entry in enumerate(listed, 1):
        yield f"RAGPOC_API_TOKENS entry {number}", entry
    path = settings.api_tokens_file
    if path is None:
        return
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SettingsError(
            f"RAGPOC_API_TOKENS_FILE {path} cannot be read: {exc.strerror or exc}"
        ) from None
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield f"RAGPOC_API_TOKENS_FILE {path} line {number}", line


def load_tokens(settings: Settings) -> TokenSet:
    """The tokens of RAGPOC_API_TOKENS and RAGPOC_API_TOKENS_FILE, merged."""
    return TokenSet(parse_tokens(_entries(settings)))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def gateway_tokens(settings: Settings) -> TokenSet:
    """The gateway's tokens, or a SettingsError when it must not start: an entry is malformed,
    or it would listen off loopback with no token and RAGPOC_ALLOW_OPEN is not set."""
    tokens = load_tokens(settings)
    if not tokens and not is_loopback(settings.host) and not settings.allow_open:
        raise SettingsError(
            f"the gateway would listen on {settings.host} (RAGPOC_HOST) with no API token, "
            "open to anyone who reaches it. Set RAGPOC_API_TOKENS=name:write:<secret of 16+ "
            "characters> (or RAGPOC_API_TOKENS_FILE), or RAGPOC_HOST=127.0.0.1, or "
            "RAGPOC_ALLOW_OPEN=1 to run it open on purpose"
        )
    return tokens
