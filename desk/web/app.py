"""The desk's web application (Starlette, server-rendered Jinja2, no front-end build).

Pages: requests by deadline (``/``), a subject (``/subject?id=``), a request
(``/request?subject=&id=``) with its answer (``/answer``), the audit chain
(``/audit``), escalations and dead letters (``/escalations``); actions are POST
forms under ``/actions/<name>`` (officers only). Everything needs a signed-in
user; every form carries a CSRF token; templates escape every value.

Ids are passed as query parameters (subject ids may contain ``/``), so the
paths that reach the log (``desk.web.access``) never name a subject.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agents.rights.deadlines import uk_date
from desk import answers
from desk.readmodel import queries
from desk.runtime import Desk
from desk.web import auth
from desk.web.actions import BUILDERS, DEFAULT_CONTROLLER, ActionError
from schemas.base import DataCategory, DocumentType, RequestType
from schemas.events import Event
from schemas.responses import ResponseStatus

HERE = Path(__file__).resolve().parent
log = logging.getLogger("desk.web")
access_log = logging.getLogger("desk.web.access")

Publish = Callable[[Event], None]
Verify = Callable[[], list[Any]]
Handler = Callable[[Request, auth.User], Awaitable[Response]]

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class Headers:
    """Security headers on every response; one access-log line with no personal data
    (method, path without query, status, duration)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in SECURITY_HEADERS if k not in have),
                ]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            access_log.info(
                "%s %s %d %.0fms",
                scope["method"],
                scope["path"],
                status,
                (time.monotonic() - started) * 1000,
            )


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name ends with
        undefined=jinja2.StrictUndefined,
    )

    def when(value: datetime | None) -> str:
        return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def day(value: datetime | None) -> str:
        return "—" if value is None else uk_date(value).isoformat()

    def label(value: str | None) -> str:
        return "" if value is None else value.replace("_", " ")

    def json_list(text: str | None) -> list[Any]:
        return list(json.loads(text)) if text else []

    env.filters.update(
        when=when, day=day, label=label, json_list=json_list, q=lambda v: quote(str(v), safe="")
    )
    return Jinja2Templates(env=env)


def create_app(
    desk: Desk,
    users: auth.Users,
    *,
    publish: Publish,
    verify_audit: Verify,
    secret_key: str | None = None,
) -> Starlette:
    templates = _templates()
    access = auth.Access(users, desk.desk)
    store, clock = desk.store, desk.clock

    def render(
        request: Request, name: str, user: auth.User | None, status: int = 200, **context: Any
    ) -> Response:
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(
            request,
            name,
            {
                "user": user,
                "csrf": auth.csrf_token(request),
                "csrf_field": auth.CSRF_FIELD,
                "flash": flash,
                "now": clock.now(),
                **context,
            },
            status_code=status,
        )

    def refuse(request: Request, user: auth.User | None, status: int, why: str) -> Response:
        return render(request, "error.html.j2", user, status=status, message=why)

    def guarded(handler: Handler, *, act: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            user = access.current_user(request)
            if user is None:
                if request.method == "GET":
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(f"/login?{urlencode({'next': target})}", 303)
                return refuse(request, None, 403, "Sign in first.")
            if request.method == "POST":
                form = await request.form()
                if not auth.csrf_ok(request, form):
                    log.warning("form refused: CSRF token missing or wrong")
                    return refuse(request, user, 403, "This form is forged or has expired.")
                request.state.form = form
            if act and not user.can_act:
                log.warning("action refused: the user's role cannot act")
                return refuse(request, user, 403, "Your role (read-only) cannot act.")
            return await handler(request, user)

        return endpoint

    # -- sign-in -----------------------------------------------------------------------

    async def login(request: Request) -> Response:
        next_url = request.query_params.get("next", "/")
        if request.method == "GET":
            return render(request, "login.html.j2", None, next=next_url, failed=False)
        form = await request.form()
        if not auth.csrf_ok(request, form):
            return render(request, "login.html.j2", None, 403, next=next_url, failed=True)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        user = await run_in_threadpool(users.authenticate, name, password)
        if user is None:
            log.info("sign-in failed")
            return render(request, "login.html.j2", None, 401, next=next_url, failed=True)
        auth.sign_in(request, user)
        log.info("signed in (role %s)", user.role)
        safe = next_url if next_url.startswith("/") and not next_url.startswith("//") else "/"
        return RedirectResponse(safe, 303)

    async def logout(request: Request, user: auth.User) -> Response:
        request.session.clear()
        return RedirectResponse("/login", 303)

    # -- pages -------------------------------------------------------------------------

    def _choice(value: str | None, allowed: list[str]) -> str | None:
        return value if value in allowed else None

    async def requests_page(request: Request, user: auth.User) -> Response:
        params = request.query_params
        filters = queries.Filters(
            request_type=_choice(params.get("type"), [t.value for t in RequestType]),
            status=_choice(params.get("status"), [s.value for s in ResponseStatus]),
            bucket=cast(Any, _choice(params.get("bucket"), list(queries.BUCKETS))),
        )
        now = clock.now()

        def load() -> tuple[list[queries.RequestRow], dict[str, int]]:
            with store.engine.connect() as conn:
                return (
                    queries.requests_by_deadline(conn, now, filters, limit=200),
                    queries.bucket_counts(conn, now, filters),
                )

        rows, counts = await run_in_threadpool(load)
        return render(
            request,
            "requests.html.j2",
            user,
            rows=rows,
            counts=counts,
            filters=filters,
            types=[t.value for t in RequestType],
            statuses=[s.value for s in ResponseStatus],
            buckets=queries.BUCKETS,
        )

    async def subjects_page(request: Request, user: auth.User) -> Response:
        q = request.query_params.get("q", "").strip()[:128]

        def load() -> list[str]:
            with store.engine.connect() as conn:
                return queries.search_subjects(conn, q) if q else []

        found = await run_in_threadpool(load)
        if q in found:
            return RedirectResponse(f"/subject?id={quote(q, safe='')}", 303)
        return render(request, "subjects.html.j2", user, q=q, found=found)

    async def subject_page(request: Request, user: auth.User) -> Response:
        subject_id = request.query_params.get("id", "")

        def load() -> queries.SubjectView:
            with store.engine.connect() as conn:
                return queries.subject_view(conn, subject_id, store.ref(subject_id), clock.now())

        view = await run_in_threadpool(load)
        if not view.known and not view.requests and not view.timeline:
            return refuse(request, user, 404, "The pipeline holds nothing on this subject.")
        pending = any(a.decided_at is None for a in view.actions)
        return render(
            request,
            "subject.html.j2",
            user,
            view=view,
            pending=pending,
            categories=[c.value for c in DataCategory],
            documents=[d.value for d in DocumentType],
        )

    async def request_page(request: Request, user: auth.User) -> Response:
        subject_id = request.query_params.get("subject", "")
        request_id = request.query_params.get("id", "")

        def load() -> queries.RequestView:
            with store.engine.connect() as conn:
                return queries.request_view(conn, subject_id, request_id, clock.now())

        view = await run_in_threadpool(load)
        if view.request is None and not view.responses:
            return refuse(request, user, 404, "No such request.")
        documents = {r.response_id: answers.kinds(r) for r in view.responses}
        letter = None
        if view.latest is not None and documents[view.latest.response_id] == ["text"]:
            letter = answers.render(view.latest).text
        return render(
            request,
            "request.html.j2",
            user,
            view=view,
            documents=documents,
            letter=letter,
            documents_kinds=[d.value for d in DocumentType],
        )

    async def answer(request: Request, user: auth.User) -> Response:
        params = request.query_params
        subject_id, request_id = params.get("subject", ""), params.get("id", "")
        response_id = params.get("response")
        kind = cast(Any, _choice(params.get("kind"), ["html", "text", "json", "csv"]))

        def load() -> list[Any]:
            with store.engine.connect() as conn:
                return queries.responses(conn, subject_id, request_id)

        found = await run_in_threadpool(load)
        if response_id:
            found = [r for r in found if r.response_id == response_id]
        if not found:
            return refuse(request, user, 404, "No such answer.")
        try:
            document = answers.render(found[-1], kind)
        except answers.NothingToRender as exc:
            return refuse(request, user, 404, str(exc))
        headers = {}
        if params.get("download") or document.kind in ("json", "csv"):
            name = f"{request_id}.{answers.EXTENSION[document.kind]}"
            headers["content-disposition"] = f'attachment; filename="{quote(name)}"'
        if document.kind == "html":
            # The report is a document of its own: nothing in it may run or load.
            headers["content-security-policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return Response(document.text, media_type=document.media_type, headers=headers)

    async def audit_page(request: Request, user: auth.User) -> Response:
        def load() -> tuple[list[Any], list[Any]]:
            with store.engine.connect() as conn:
                return queries.audit_chains(conn), list(queries.progress(conn))

        chains, progress = await run_in_threadpool(load)
        return render(
            request, "audit.html.j2", user, chains=chains, progress=progress, verified=None
        )

    async def audit_verify(request: Request, user: auth.User) -> Response:
        try:
            verified = await run_in_threadpool(verify_audit)
        except Exception as exc:  # the broker is the one thing the page cannot do without
            log.warning("audit verification failed: %s", type(exc).__name__)
            return refuse(request, user, 503, f"Could not read the audit topic ({exc}).")

        def load() -> tuple[list[Any], list[Any]]:
            with store.engine.connect() as conn:
                return queries.audit_chains(conn), list(queries.progress(conn))

        chains, progress = await run_in_threadpool(load)
        return render(
            request, "audit.html.j2", user, chains=chains, progress=progress, verified=verified
        )

    async def escalations_page(request: Request, user: auth.User) -> Response:
        def load() -> queries.Escalations:
            with store.engine.connect() as conn:
                return queries.escalations(conn)

        found = await run_in_threadpool(load)
        return render(request, "escalations.html.j2", user, found=found)

    # -- actions -----------------------------------------------------------------------

    def action(name: str) -> Handler:
        build = BUILDERS[name]

        async def act(request: Request, user: auth.User) -> Response:
            form = request.state.form
            subject_id = str(form.get("subject_id", ""))
            back = f"/subject?id={quote(subject_id, safe='')}"
            controller = str(form.get("controller_id") or DEFAULT_CONTROLLER)
            now = clock.now()
            try:
                built = build(form, subject_id, controller, now)
            except ActionError as exc:
                request.session["flash"] = {"kind": "error", "text": f"Not sent: {exc}."}
                return RedirectResponse(back, 303)
            try:
                await run_in_threadpool(publish, built.event)
            except Exception as exc:
                log.warning("publishing a desk action failed: %s", type(exc).__name__)
                request.session["flash"] = {
                    "kind": "error",
                    "text": "Not sent: the pipeline did not confirm it. Try again.",
                }
                return RedirectResponse(back, 303)
            await run_in_threadpool(
                store.record_action,
                event_id=built.event.event_id,
                kind=built.kind,
                subject_id=subject_id,
                target_id=built.target_id,
                actor=user.name,
                published_at=now,
            )
            log.info("desk action published: %s", built.kind)
            request.session["flash"] = {
                "kind": "ok",
                "text": f"Sent: {built.summary}. It shows below once the worker has decided it.",
            }
            return RedirectResponse(back, 303)

        return act

    async def home(request: Request) -> Response:
        return RedirectResponse("/requests", 303)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", home),
        Route("/healthz", health),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", guarded(logout), methods=["POST"]),
        Route("/requests", guarded(requests_page)),
        Route("/subjects", guarded(subjects_page)),
        Route("/subject", guarded(subject_page)),
        Route("/request", guarded(request_page)),
        Route("/answer", guarded(answer)),
        Route("/audit", guarded(audit_page)),
        Route("/audit/verify", guarded(audit_verify), methods=["POST"]),
        Route("/escalations", guarded(escalations_page)),
        *(
            Route(f"/actions/{name}", guarded(action(name), act=True), methods=["POST"])
            for name in BUILDERS
        ),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    key = secret_key or (desk.desk.secret_key.get_secret_value() if desk.desk.secret_key else None)
    if key is None:
        log.warning("no LIFECYCLE_DESK_SECRET_KEY: sessions end when the desk restarts")
        key = secrets.token_urlsafe(32)
    middleware = [
        Middleware(Headers),
        Middleware(
            SessionMiddleware,
            secret_key=key,
            session_cookie="desk_session",
            max_age=desk.desk.session_hours * 3600,
            same_site="lax",
            https_only=desk.desk.secure_cookies,
        ),
    ]
    return Starlette(routes=routes, middleware=middleware)
