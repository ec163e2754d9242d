"""Credentials from the environment: API keys, console passwords, signed console sessions and CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

COOKIE = "servicebot_console"
SESSION_HOURS = 12


def _bearer_in(authorization: str | None, tokens: Iterable[str]) -> bool:
    """Whether an `Authorization: Bearer <token>` header carries one of `tokens` (compared in constant time)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return False
    given = authorization[7:].strip().encode()
    return any(hmac.compare_digest(given, token.encode()) for token in tokens)


@dataclass(frozen=True)
class Secrets:
    """Everything secret the web app needs; read only from the environment (never from the YAML file).

    Attributes:
        api_keys: bearer tokens accepted by /v1 (SERVICEBOT_API_KEYS, comma- or space-separated); none = API closed.
        console_password: the operator console's password (SERVICEBOT_CONSOLE_PASSWORD); empty = console closed.
        ops_password: the ops console's (SERVICEBOT_OPS_PASSWORD; defaults to the console password).
        session_secret: signs console sessions (SERVICEBOT_SESSION_SECRET; random per process when unset, so set
            it when several instances share a load balancer).
        metrics_token: when set (SERVICEBOT_METRICS_TOKEN), /metrics asks for `Authorization: Bearer <token>`;
            unset, /metrics is open, as Prometheus scrapers expect on a private network.
    """

    api_keys: frozenset[str] = frozenset()
    console_password: str = ""
    ops_password: str = ""
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    metrics_token: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Secrets:
        """Read the secrets from `env` (default: the process environment)."""
        env = os.environ if env is None else env
        keys = frozenset(k for k in re.split(r"[\s,]+", env.get("SERVICEBOT_API_KEYS", "")) if k)
        console = env.get("SERVICEBOT_CONSOLE_PASSWORD", "")
        secret = env.get("SERVICEBOT_SESSION_SECRET", "")
        return cls(
            api_keys=keys,
            console_password=console,
            ops_password=env.get("SERVICEBOT_OPS_PASSWORD", "") or console,
            session_secret=secret.encode() if secret else secrets.token_bytes(32),
            metrics_token=env.get("SERVICEBOT_METRICS_TOKEN", "").strip(),
        )

    def api_key_ok(self, authorization: str | None) -> bool:
        """Whether an `Authorization: Bearer <key>` header carries one of the API keys."""
        return _bearer_in(authorization, self.api_keys)

    def metrics_ok(self, authorization: str | None) -> bool:
        """Whether /metrics may be read: no metrics token is set, or the header carries it."""
        return not self.metrics_token or _bearer_in(authorization, [self.metrics_token])

    def roles_for(self, password: str) -> list[str]:
        """The console roles a password opens ('operator', 'ops'); empty when it opens none."""
        given = password.encode()
        roles = []
        for role, expected in (("operator", self.console_password), ("ops", self.ops_password)):
            if expected and hmac.compare_digest(given, expected.encode()):
                roles.append(role)
        return roles

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.session_secret, payload, hashlib.sha256).hexdigest()

    def issue(self, user: str, roles: list[str], now: float | None = None) -> str:
        """A signed session cookie value for a logged-in console user."""
        now = time.time() if now is None else now
        body = {"u": user, "r": roles, "exp": int(now + SESSION_HOURS * 3600), "n": secrets.token_hex(16)}
        payload = base64.urlsafe_b64encode(json.dumps(body).encode())
        return payload.decode() + "." + self._sign(payload)

    def session(self, cookie: str | None, now: float | None = None) -> ConsoleSession | None:
        """The session a cookie carries, or None when it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        payload, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload.encode()))
            user, roles, expires, nonce = str(body["u"]), list(body["r"]), int(body["exp"]), str(body["n"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < (time.time() if now is None else now):
            return None
        return ConsoleSession(user, tuple(roles), self._sign(f"csrf:{nonce}".encode()))


@dataclass(frozen=True)
class ConsoleSession:
    """A logged-in console user; `csrf` must come back with every form the console posts."""

    user: str
    roles: tuple[str, ...]
    csrf: str

    def csrf_ok(self, token: str | None) -> bool:
        """Whether a posted form carries this session's CSRF token."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf)
