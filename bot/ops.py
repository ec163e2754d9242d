"""The ops console: health, index versions with rebuild (and its progress) and rollback, evaluation reports."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastapi
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from bot.appstate import AppState
from bot.errors import ServicebotError
from bot.pages import Guard, esc, form, js, page, respond, table

log = logging.getLogger(__name__)
REPORT_TYPES = {".png": "image", ".svg": "image", ".json": "text", ".jsonl": "text", ".md": "text", ".txt": "text"}


@dataclass
class Rebuild:
    """The one rebuild this instance runs at a time, and how far it has got."""

    running: bool = False
    done: int = 0
    total: int = 0
    started: float = 0.0
    by: str = ""
    outcome: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def view(self) -> dict[str, Any]:
        """What the progress endpoint shows."""
        return {
            "running": self.running,
            "done": self.done,
            "total": self.total,
            "by": self.by,
            "outcome": self.outcome,
            "report": self.report,
        }


def _reports(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix in REPORT_TYPES and "screenshots" not in p.parts]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:40]


def build_ops(state: AppState) -> fastapi.APIRouter:
    """The ops console's routes (under /ops)."""
    router = fastapi.APIRouter(prefix="/ops")
    guard, service, rebuild = Guard(state), state.service, Rebuild()
    reports_root = service.settings.server.reports_dir

    def run_rebuild(full: bool) -> None:
        def progress(done: int, total: int) -> None:
            rebuild.done, rebuild.total = done, total

        try:
            report = service.index.rebuild(service.settings.knowledge.source, progress, full=full)
            rebuild.report = {
                "version": report.version,
                "documents": report.documents,
                "chunks": report.chunks,
                "switched": report.switched,
                "reason": report.reason,
                "skipped": len(report.skipped),
                "seconds": round(report.seconds, 1),
            }
            rebuild.outcome = f"built {report.version}" + ("" if report.switched else " (not switched)")
        except ServicebotError as exc:
            rebuild.outcome = f"failed: {exc}"
        except Exception as exc:  # the serving index is untouched; ops sees why
            log.exception("rebuild from the ops console failed")
            rebuild.outcome = f"failed: {type(exc).__name__}: {exc}"
        finally:
            state.records.audit(f"console:{rebuild.by}", "rebuild", {"outcome": rebuild.outcome, **rebuild.report})
            rebuild.running = False

    @router.get("/")
    async def home(request: fastapi.Request) -> fastapi.Response:
        session, _ = await guard.require(request, "ops")
        try:
            index: dict[str, Any] = service.index.status()
        except ServicebotError as exc:
            index = {"error": str(exc)}
        m = state.metrics
        turns = sum(
            m.count("servicebot_turns_total", channel=c, outcome=o)
            for c in ("web", "api")
            for o in ("answered", "refused", "handoff")
        )
        health = table(
            ["", ""],
            [
                ["status", "ok" if "error" not in index else esc(index["error"])],
                ["up for", f"{(time.time() - state.started) / 60:.1f} min"],
                ["serving index", esc(index.get("version", "none"))],
                ["documents / chunks", f"{esc(index.get('documents', 0))} / {esc(index.get('chunks', 0))}"],
                ["embedder", esc(index.get("embedder", ""))],
                ["turns since start", f"{turns:g} (metrics at <a href='/metrics'>/metrics</a>)"],
                ["database", "PostgreSQL" if state.records.db.postgres else "SQLite (WAL)"],
                ["config", esc(service.config_path or "built in")],
            ],
        )
        history = index.get("history") or []
        versions = table(["version history (newest first)"], [[f"<pre>{js(h)}</pre>"] for h in history[::-1]])
        if rebuild.running:
            pct = f"{rebuild.done}/{rebuild.total or '?'}"
            act = (
                f"<p>Rebuilding (started by {esc(rebuild.by)}): <progress id=progress value={rebuild.done} "
                f"max={rebuild.total or 1}></progress> {pct}</p>"
            )
        else:
            act = (
                form(
                    "/ops/rebuild",
                    session,
                    "Rebuild the index",
                    extra="<label><input type=checkbox name=full value=1> full (re-embed everything)</label> ",
                )
                + " "
                + form("/ops/rollback", session, "Roll back to the previous version")
            )
            if rebuild.outcome:
                act += f"<p id=outcome>Last rebuild: {esc(rebuild.outcome)}</p>"
        reports = []
        for path in _reports(reports_root):
            name = urllib.parse.quote(path.relative_to(reports_root).as_posix())
            if REPORT_TYPES[path.suffix] == "image":
                reports.append(
                    f"<figure><img src='/ops/reports/{name}' alt='{esc(path.name)}'>"
                    f"<figcaption>{esc(path.name)}</figcaption></figure>"
                )
            else:
                reports.append(f"<p><a href='/ops/reports/{name}'>{esc(path.name)}</a></p>")
        body = (
            "<h2>Health</h2>"
            + health
            + "<h2>Index</h2>"
            + act
            + versions
            + f"<h2>Evaluation reports</h2><p><small>from {esc(reports_root)}: <code>bot eval safety --sweep</code>,"
            " <code>bot eval retrieval --json</code></small></p>" + ("".join(reports) or "<p>None yet.</p>")
        )
        flash = next(((k, request.query_params[k]) for k in ("ok", "error") if k in request.query_params), None)
        return respond(page("Operations", body, session, flash, refresh=2 if rebuild.running else 0))

    @router.post("/rebuild")
    async def start(request: fastapi.Request) -> fastapi.Response:
        session, fields = await guard.require(request, "ops")
        with rebuild.lock:
            if rebuild.running:
                return RedirectResponse("/ops/?error=A+rebuild+is+already+running.", status_code=303)
            rebuild.running, rebuild.done, rebuild.total, rebuild.by = True, 0, 0, session.user
            rebuild.outcome, rebuild.report, rebuild.started = "", {}, time.time()
        threading.Thread(target=run_rebuild, args=(fields.get("full") == "1",), daemon=True).start()
        return RedirectResponse("/ops/", status_code=303)

    @router.get("/rebuild")
    async def progress(request: fastapi.Request) -> JSONResponse:
        await guard.require(request, "ops")
        return JSONResponse(rebuild.view())

    @router.post("/rollback")
    async def rollback(request: fastapi.Request) -> fastapi.Response:
        session, _ = await guard.require(request, "ops")
        try:
            version = service.index.rollback()
        except ServicebotError as exc:
            return RedirectResponse(f"/ops/?{urllib.parse.urlencode({'error': str(exc)})}", status_code=303)
        await state.db(state.records.audit, f"console:{session.user}", "rollback", {"version": version})
        return RedirectResponse(f"/ops/?{urllib.parse.urlencode({'ok': f'Serving {version} again.'})}", 303)

    @router.get("/reports/{name:path}")
    async def report(name: str, request: fastapi.Request) -> fastapi.Response:
        await guard.require(request, "ops")
        root = reports_root.resolve()
        target = (root / name).resolve()
        if not target.is_relative_to(root) or not target.is_file() or target.suffix not in REPORT_TYPES:
            raise fastapi.HTTPException(404, "No such report.")
        kind = {".png": "image/png", ".svg": "image/svg+xml"}.get(target.suffix, "text/plain; charset=utf-8")
        # SVG and text are sent as downloads-safe types: a report can never run script in the console's origin.
        headers = {
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        }
        return FileResponse(target, media_type=kind, headers=headers)

    return router
