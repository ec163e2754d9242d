"""Secrets, console sessions, rate-limit buckets and the metrics text, each on its own."""

from __future__ import annotations

import re

from bot.auth import Secrets
from bot.contracts import Reply, Verdict
from bot.metrics import Metrics
from bot.ratelimit import RateLimiter


def test_secrets_come_from_the_environment_only() -> None:
    secrets = Secrets.from_env({"SERVICEBOT_API_KEYS": "k1, k2\nk3", "SERVICEBOT_CONSOLE_PASSWORD": "pw"})
    assert secrets.api_keys == {"k1", "k2", "k3"}
    assert secrets.api_key_ok("Bearer k2") and secrets.api_key_ok("bearer k3")
    assert not secrets.api_key_ok("Bearer k4") and not secrets.api_key_ok("k1") and not secrets.api_key_ok(None)
    assert secrets.roles_for("pw") == ["operator", "ops"]  # the ops password defaults to the console password
    assert secrets.roles_for("") == [] and Secrets.from_env({}).roles_for("") == []  # unset = closed
    assert Secrets.from_env({}).api_keys == frozenset()


def test_console_sessions_are_signed_expire_and_carry_a_csrf_token() -> None:
    secrets = Secrets(console_password="a", ops_password="b", session_secret=b"s")
    cookie = secrets.issue("alice", ["operator"], now=1000.0)
    session = secrets.session(cookie, now=1001.0)
    assert session is not None and session.user == "alice" and session.roles == ("operator",)
    assert session.csrf_ok(session.csrf) and not session.csrf_ok("0" * 64) and not session.csrf_ok(None)
    assert secrets.session(cookie, now=1000.0 + 13 * 3600) is None  # expired
    payload, signature = cookie.rsplit(".", 1)
    assert secrets.session(payload[:-2] + "xx." + signature, now=1001.0) is None  # tampered
    assert Secrets(session_secret=b"other").session(cookie, now=1001.0) is None  # another server's secret
    other = secrets.session(secrets.issue("alice", ["operator"], now=1000.0), now=1001.0)
    assert other is not None and other.csrf != session.csrf  # a token per session


def test_rate_limiter_refills_over_time_and_is_per_key() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert [limiter.allow("a", now=0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", now=0.0)  # another key has its own bucket
    assert limiter.exhausted("a", now=0.5) and not limiter.allow("a", now=0.5)
    assert limiter.allow("a", now=1.6)  # one token per second
    assert RateLimiter(per_minute=0, burst=1).allow("x")  # 0 = no limit
    small = RateLimiter(per_minute=1, burst=1, max_keys=2)
    for key in "abc":
        small.allow(key, now=0.0)
    assert small.allow("a", now=0.0)  # the oldest key was dropped, so memory stays bounded


def test_metrics_render_prometheus_text_with_escaped_labels() -> None:
    metrics = Metrics()
    verdict = Verdict('odd"name\\', True, 1.0)
    reply = Reply("no", True, False, (), (verdict,), 0, {"guards_in": 0.3, "total": 0.4, 'guard.odd"name\\': 0.2})
    metrics.record_reply(reply, "api")
    text = metrics.render()
    assert 'servicebot_turns_total{channel="api",outcome="refused"} 1' in text
    assert 'servicebot_refusals_total{plugin="odd\\"name\\\\"} 1' in text
    assert re.search(r'servicebot_stage_seconds_bucket\{stage="total",le="0.001"\} 1', text)
    assert 'servicebot_plugin_seconds_count{plugin="odd\\"name\\\\"} 1' in text
    assert 'servicebot_stage_seconds_bucket{stage="guards_in",le="+Inf"} 1' in text
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{.*\})? [0-9.e+-]+$", line), line
