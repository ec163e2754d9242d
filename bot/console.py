"""The operator console: handoff queue, conversations with each turn's verdicts, live plugin settings with undo."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import fastapi
import yaml
from fastapi.responses import RedirectResponse
from pydantic import TypeAdapter, ValidationError

from bot.appstate import AppState
from bot.auth import COOKIE, ConsoleSession
from bot.config import GuardsSettings, PolicySettings, Settings, describe_error
from bot.console_views import STAGES, editable, guards_table, transcript
from bot.contracts import Message
from bot.errors import ServicebotError
from bot.language import language_of
from bot.pages import Flash, Guard, esc, form, js, login_page, page, respond, table

log = logging.getLogger(__name__)


def _language(transcript: list[dict[str, Any]]) -> str:
    """The customer's language, so an agent who speaks it can take the conversation ("" when they wrote nothing)."""
    said = [Message("user", str(m.get("content", ""))) for m in transcript if m.get("role") == "user"]
    return ("中文 Chinese" if language_of(said) == "zh" else "English") if said else ""


def build_console(state: AppState) -> fastapi.APIRouter:
    """The operator console's routes (under /console), plus login and logout."""
    router = fastapi.APIRouter(prefix="/console")
    guard, service, records = Guard(state), state.service, state.records

    async def operator(request: fastapi.Request) -> tuple[ConsoleSession, dict[str, str]]:
        return await guard.require(request, "operator")

    def done(path: str, flash: Flash) -> RedirectResponse:
        # Post/redirect/get: a reload never repeats an action; the outcome travels in the query string.
        return RedirectResponse(f"{path}?{urllib.parse.urlencode({flash[0]: flash[1][:300]})}", status_code=303)

    def flash_of(request: fastapi.Request) -> Flash | None:
        for kind in ("ok", "error"):
            if kind in request.query_params:
                return kind, request.query_params[kind]
        return None

    @router.get("/login")
    def login_form(next: str = "/console/") -> fastapi.Response:  # noqa: A002 (the query parameter's name)
        return login_page(next, status=200)

    @router.post("/login")
    async def login(request: fastapi.Request) -> fastapi.Response:
        return await guard.login(request)

    @router.post("/logout")
    async def logout(request: fastapi.Request) -> fastapi.Response:
        session = guard.session(request)
        if session is not None:
            await guard.require(request, session.roles[0])  # CSRF-checked like every other action
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @router.get("/")
    async def queue(request: fastapi.Request) -> fastapi.Response:
        session, _ = await operator(request)
        rows = []
        for h in await state.db(records.handoffs, None):
            if h["status"] == "closed":
                continue
            actions = f"<a href='/console/handoffs/{h['id']}'>Open</a>"
            if h["status"] == "open":
                actions += " " + form(f"/console/handoffs/{h['id']}/claim", session, "Claim")
            rows.append(
                [
                    str(h["id"]),
                    esc(h["created"]),
                    esc(h["status"]),
                    esc(h.get("claimed_by", "")),
                    esc(h["reason"]),
                    _language(h.get("transcript") or []),
                    f"<a href='/console/conversations/{esc(h['session_id'])}'>{esc(h['session_id'][:12])}</a>",
                    actions,
                ]
            )
        body = (
            table(["#", "since", "status", "claimed by", "why", "language", "conversation", ""], rows)
            if rows
            else ("<p>No one is waiting for a person.</p>")
        )
        return respond(page("Handoff queue", body, session, flash_of(request), refresh=10))

    @router.get("/handoffs/{handoff_id}")
    async def handoff(handoff_id: int, request: fastapi.Request) -> fastapi.Response:
        session, _ = await operator(request)
        h = await state.db(records.handoff, handoff_id)
        if h is None:
            raise fastapi.HTTPException(404, "No such handoff.")
        messages = await state.db(records.messages, h["session_id"])
        body = f"<p>Status: <strong>{esc(h['status'])}</strong> {esc(h.get('claimed_by', ''))} — {esc(h['reason'])}</p>"
        if h["status"] != "closed":
            reply = "<p><textarea name=text rows=4 required maxlength=4000 id=reply></textarea></p>"
            body += form(f"/console/handoffs/{handoff_id}/reply", session, "Send reply", extra=reply)
            body += " " + form(f"/console/handoffs/{handoff_id}/close", session, "Close (back to the bot)")
        shown = messages or [
            {"id": 0, "role": m["role"], "content": m["content"], "at": h["created"]} for m in h["transcript"]
        ]
        body += "<h2>Conversation</h2>" + transcript(shown, await state.db(records.feedback, h["session_id"]))
        return respond(page(f"Handoff #{handoff_id}", body, session, flash_of(request), refresh=0))

    @router.post("/handoffs/{handoff_id}/{action}")
    async def act(handoff_id: int, action: str, request: fastapi.Request) -> fastapi.Response:
        session, fields = await operator(request)
        h = await state.db(records.handoff, handoff_id)
        if h is None or action not in ("claim", "reply", "close"):
            raise fastapi.HTTPException(404, "No such handoff.")
        path = f"/console/handoffs/{handoff_id}"
        if action == "close":
            closed = await state.db(records.close_handoff, handoff_id)
            await state.db(records.audit, f"console:{session.user}", "handoff_close", {"handoff": handoff_id})
            return done("/console/", ("ok", f"Closed #{handoff_id}.") if closed else ("error", "It was closed."))
        if not await state.db(records.claim_handoff, handoff_id, session.user):
            return done(path, ("error", f"{h.get('claimed_by') or 'Someone'} has this conversation."))
        if action == "claim":
            return done(path, ("ok", "It is yours now."))
        text = fields.get("text", "").strip()[:4000]
        if not text:
            return done(path, ("error", "The reply is empty."))
        await state.db(records.add_message, h["session_id"], "human", text, session.user)
        return done(path, ("ok", "Sent; the customer sees it in their chat."))

    @router.get("/conversations")
    async def conversations(request: fastapi.Request, q: str = "") -> fastapi.Response:
        session, _ = await operator(request)
        found = await state.db(records.search, q[:200], 100)
        rows = [
            [
                f"<a href='/console/conversations/{esc(c['id'])}'>{esc(c['id'][:12])}</a>",
                esc(c["updated"]),
                esc(c["channel"]),
                esc(c["status"]),
                esc(c["title"]),
            ]
            for c in found
        ]
        search = (
            f"<form method=get><input name=q value='{esc(q)}' placeholder='words or an id' aria-label=search>"
            "<button type=submit>Search</button></form>"
        )
        body = search + table(["conversation", "last active", "channel", "with", "first message"], rows)
        return respond(page("Conversations", body, session, flash_of(request)))

    @router.get("/conversations/{conversation_id}")
    async def conversation(conversation_id: str, request: fastapi.Request) -> fastapi.Response:
        session, _ = await operator(request)
        messages = await state.db(records.messages, conversation_id[:100])
        if not messages and await state.db(records.conversation, conversation_id[:100]) is None:
            raise fastapi.HTTPException(404, "No such conversation.")
        body = transcript(messages, await state.db(records.feedback, conversation_id[:100]))
        return respond(page(f"Conversation {conversation_id[:12]}", body, session, flash_of(request)))

    @router.get("/plugins")
    async def plugins(request: fastapi.Request) -> fastapi.Response:
        session, _ = await operator(request)
        service.maybe_reload()
        s = service.settings
        policy = (
            f"<p>refuse_threshold {s.policy.refuse_threshold}, helpfulness_weight {s.policy.helpfulness_weight}</p>"
        )
        editor = f"<p><textarea name=config rows=22 id=config>{esc(editable(s))}</textarea></p>"
        body = (
            guards_table(s, session)
            + policy
            + "<h2>Edit (applied live, audited)</h2>"
            + form("/console/plugins/apply", session, "Apply", extra=editor)
            + " "
            + form("/console/plugins/undo", session, "Undo the last change")
            + _adapters(session)
            + "<h2>Recent changes</h2>"
            + table(
                ["when", "who", "what", "detail"],
                [
                    [esc(e["at"]), esc(e["actor"]), esc(e["action"]), f"<pre>{js(e['detail'])[:1500]}</pre>"]
                    for e in (await state.db(records.audit_log, 15))
                ],
            )
        )
        return respond(page("Plugins", body, session, flash_of(request)))

    def _adapters(session: ConsoleSession) -> str:
        try:
            adapters = service.adapters()
        except ServicebotError as exc:
            return f"<h2>Adapter</h2><p>{esc(exc)}</p>"
        options = "<option value=''>base model</option>" + "".join(
            f"<option value='{esc(a['name'])}'{' selected' if a.get('active') else ''}>{esc(a['name'])}</option>"
            for a in adapters
        )
        return "<h2>Adapter</h2>" + form(
            "/console/adapter", session, "Switch", extra=f"<select name=name>{options}</select>"
        )

    async def apply(session: ConsoleSession, new: Settings, what: str) -> RedirectResponse:
        actor = f"console:{session.user}"
        before = service.settings
        try:
            changed = service.apply(new, actor=actor)
        except ServicebotError as exc:
            await state.db(records.audit, actor, "rejected", {"error": str(exc), "edit": what})
            return done("/console/plugins", ("error", str(exc)))
        if not changed:
            return done("/console/plugins", ("ok", f"{what}: nothing changed."))
        saved = service.save(before, changed, actor)
        return done("/console/plugins", ("ok", f"{what}: applied ({', '.join(changed)}). {saved}"))

    @router.post("/plugins/{action}")
    async def edit(action: str, request: fastapi.Request) -> fastapi.Response:
        session, fields = await operator(request)
        service.maybe_reload()  # edit what the config file says now
        s = service.settings
        if action in ("disable", "up"):
            stage, name = fields.get("stage", ""), fields.get("name", "")
            specs = list(getattr(s.guards, stage, []) if stage in STAGES else [])
            index = int(fields["index"]) if fields.get("index", "").isdigit() else -1
            if not 0 <= index < len(specs) or specs[index].name != name:
                return done("/console/plugins", ("error", "The plugin list changed meanwhile; look again."))
            if action == "disable":
                del specs[index]
            elif index > 0:
                specs[index - 1], specs[index] = specs[index], specs[index - 1]
            guards = s.guards.model_copy(update={stage: specs})
            return await apply(session, s.model_copy(update={"guards": guards}), f"{action} {name}")
        if action == "apply":
            try:
                edited = yaml.safe_load(fields.get("config", "")) or {}
                if not isinstance(edited, dict) or set(edited) - {"guards", "policy"}:
                    raise ValueError("only 'guards' and 'policy' can be edited here")
                update = {
                    "guards": GuardsSettings.model_validate(edited.get("guards", s.guards.model_dump())),
                    "policy": PolicySettings.model_validate(edited.get("policy", s.policy.model_dump())),
                }
            except ValidationError as exc:
                return done("/console/plugins", ("error", describe_error(exc, "Not applied")))
            except (yaml.YAMLError, ValueError) as exc:
                return done("/console/plugins", ("error", f"Not applied: {str(exc).splitlines()[0]}."))
            return await apply(session, s.model_copy(update=update), "edit")
        if action == "undo":
            last = next((e for e in await state.db(records.audit_log, 200) if e["action"] == "apply"), None)
            if last is None:
                return done("/console/plugins", ("error", "There is no change to undo."))
            update = {}
            for key, value in last["detail"].get("before", {}).items():
                if key in Settings.model_fields:
                    kind: Any = Settings.model_fields[key].annotation
                    update[key] = TypeAdapter(kind).validate_python(value)
            return await apply(session, s.model_copy(update=update), f"undo of change #{last['id']}")
        raise fastapi.HTTPException(404, "No such action.")

    @router.post("/adapter")
    async def adapter(request: fastapi.Request) -> fastapi.Response:
        session, fields = await operator(request)
        actor, before = f"console:{session.user}", service.settings
        try:
            service.use_adapter(fields.get("name") or None, actor=actor)
        except ServicebotError as exc:
            return done("/console/plugins", ("error", str(exc)))
        saved = service.save(before, ["responder"], actor) if service.settings != before else ""
        return done("/console/plugins", ("ok", f"Adapter: {fields.get('name') or 'base model'}. {saved}"))

    return router
