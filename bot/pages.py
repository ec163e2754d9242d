"""Console pages: the HTML shell, escaping, CSRF-carrying forms, and the login that guards every console route."""

from __future__ import annotations

import html
import json
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import fastapi
from fastapi.responses import HTMLResponse, RedirectResponse

from bot.appstate import AppState
from bot.auth import COOKIE, SESSION_HOURS, ConsoleSession
from bot.ratelimit import RateLimiter

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1f2933;background:#f7f7f8}
header{background:#243b53;color:#fff;padding:.6rem 1rem;display:flex;gap:1rem;flex-wrap:wrap;align-items:center}
header a{color:#fff} main{padding:1rem;max-width:70rem;margin:auto}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5rem 0}
td,th{border:1px solid #d9e2ec;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
pre{white-space:pre-wrap;word-break:break-word;margin:0} .msg{background:#fff;border:1px solid #d9e2ec;padding:.5rem;
margin:.4rem 0} .user{border-left:4px solid #f0b429} .assistant{border-left:4px solid #2680c2}
.human{border-left:4px solid #3ebd93} .error{background:#fde8e8;padding:.5rem;border:1px solid #e12d39}
.ok{background:#e3f9e5;padding:.5rem;border:1px solid #3ebd93} form.inline{display:inline}
textarea{width:100%;font-family:monospace} progress{width:20rem} img{max-width:100%}
"""
Flash = tuple[str, str]  # (kind "ok" | "error", text)


def esc(value: Any) -> str:
    """Any value as HTML-escaped text."""
    return html.escape(str(value), quote=True)


def js(value: Any) -> str:
    """A value as indented JSON, escaped for HTML."""
    return esc(json.dumps(value, ensure_ascii=False, indent=1, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table; cells are HTML already (escape what you put in)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def form(
    action: str, session: ConsoleSession, label: str, fields: dict[str, Any] | None = None, extra: str = ""
) -> str:
    """A POST form with the session's CSRF token, hidden fields, optional extra inputs and a submit button."""
    hidden = "".join(f"<input type=hidden name='{esc(k)}' value='{esc(v)}'>" for k, v in (fields or {}).items())
    return (
        f"<form class=inline method=post action='{esc(action)}'>"
        f"<input type=hidden name=csrf value='{esc(session.csrf)}'>{hidden}{extra}"
        f"<button type=submit>{esc(label)}</button></form>"
    )


def page(title: str, body: str, session: ConsoleSession | None, flash: Flash | None = None, refresh: int = 0) -> str:
    """A whole console page."""
    nav = ""
    if session is not None:
        links = []
        if "operator" in session.roles:
            links += [
                "<a href='/console/'>Handoffs</a>",
                "<a href='/console/conversations'>Conversations</a>",
                "<a href='/console/plugins'>Plugins</a>",
            ]
        if "ops" in session.roles:
            links += ["<a href='/ops/'>Ops</a>"]
        logout = form("/console/logout", session, f"Log out {session.user}")
        nav = " ".join(links) + f" <span style='margin-left:auto'>{logout}</span>"
    note = f"<p class={esc(flash[0])} role=status>{esc(flash[1])}</p>" if flash else ""
    meta = f"<meta http-equiv=refresh content={refresh}>" if refresh else ""
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8>{meta}"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{esc(title)} · servicebot</title><style>{STYLE}</style>"
        f"<header><strong>servicebot</strong> {nav}</header><main><h1>{esc(title)}</h1>{note}{body}</main></html>"
    )


def respond(body: str, status: int = 200) -> HTMLResponse:
    """An HTML response that may not be framed or run inline scripts."""
    headers = {
        "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(body, status_code=status, headers=headers)


class NeedsLogin(Exception):
    """Raised by `Guard` for a request without a valid session; answered with the login page and 401."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def login_page(next_path: str, flash: Flash | None = None, status: int = 401) -> HTMLResponse:
    """The login form (401 when it stands in for a page that needs a login)."""
    body = (
        "<form method=post action='/console/login'>"
        f"<input type=hidden name=next value='{esc(next_path)}'>"
        "<p><label>Your name <input name=user required maxlength=60 autocomplete=username></label></p>"
        "<p><label>Password <input name=password type=password required autocomplete=current-password></label></p>"
        "<button type=submit>Log in</button></form>"
    )
    return respond(page("Log in", body, None, flash), status)


def same_origin(request: fastapi.Request) -> bool:
    """A browser's cross-site POST carries a foreign Origin (or Referer); ours or none is accepted."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("host", "")


class Guard:
    """Resolves the console session of a request: login required, the role checked, CSRF checked on POST."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.logins = RateLimiter(per_minute=5, burst=10)  # failed logins: password guessing slows to a crawl

    def session(self, request: fastapi.Request) -> ConsoleSession | None:
        """The request's valid session, or None."""
        return self.state.secrets.session(request.cookies.get(COOKIE))

    async def require(self, request: fastapi.Request, role: str) -> tuple[ConsoleSession, dict[str, str]]:
        """The session (and, for POST, the form) of a request allowed to act as `role`.

        Raises:
            NeedsLogin: no valid session (401 with the login form).
            fastapi.HTTPException: 403 for the wrong role, a missing or wrong CSRF token, or a foreign origin.
        """
        session = self.session(request)
        if session is None:
            raise NeedsLogin(request.url.path)
        if role not in session.roles:
            raise fastapi.HTTPException(403, f"Your login does not open the {role} console.")
        fields: dict[str, str] = {}
        if request.method == "POST":
            fields = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            if not same_origin(request) or not session.csrf_ok(fields.get("csrf")):
                raise fastapi.HTTPException(403, "This form is out of date or came from another site; reload the page.")
        return session, fields

    async def login(self, request: fastapi.Request) -> fastapi.Response:
        """Check a posted name and password; set the session cookie and go on, or show the form again."""
        fields = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        next_path = fields.get("next", "/console/")
        if not next_path.startswith(("/console", "/ops")) or "//" in next_path:
            next_path = "/console/"
        client = request.client.host if request.client else "unknown"
        if not same_origin(request):
            return login_page(next_path, ("error", "This form came from another site."), 403)
        if self.logins.exhausted(client):
            return login_page(next_path, ("error", "Too many failed attempts; wait a minute and try again."), 429)
        user = " ".join(fields.get("user", "").split())[:60]
        roles = self.state.secrets.roles_for(fields.get("password", ""))
        if not user or not roles:
            self.logins.allow(client)  # only failures count
            return login_page(next_path, ("error", "Wrong name or password."), 401)
        if next_path.startswith("/ops") and "ops" not in roles:
            next_path = "/console/"
        elif next_path.startswith("/console") and "operator" not in roles:
            next_path = "/ops/"
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            COOKIE,
            self.state.secrets.issue(user, roles),
            max_age=SESSION_HOURS * 3600,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        self.state.records.audit(f"console:{user}", "login", {"roles": roles, "from": client})
        return response
