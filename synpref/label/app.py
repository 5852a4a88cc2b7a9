"""The annotation web app: server-rendered pages, one small script, no front-end build.

Security (DESIGN.md, non-functional rules): every route but /login and /static depends on
`current_user` (anonymous: redirect to /login) and every /admin route on `admin_user`
(annotator: 403); every POST depends on `form_with_csrf` (the session's token must come back
in the form); the session cookie (signed, HttpOnly, SameSite=Strict) names a server-side
session that logout deletes (logins.py), and failed logins back off per name, address and both;
an annotator opens and submits only pairs open to them (`work_queue.may_judge`, else 403); model
text goes through `render.markdown` and everything else through Jinja2's autoescaping; a
Content Security Policy forbids inline scripts as a second line of defence.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.middleware.sessions import SessionMiddleware

from synpref.errors import SynprefError
from synpref.label import work_queue
from synpref.label.annotator_agreement import krippendorff_alpha, pairwise_kappa
from synpref.label.db import (
    JudgmentRow,
    QueueItem,
    Skip,
    User,
    default_url,
    open_database,
    secret_key,
    secret_path,
)
from synpref.label.export import (
    export_gold,
    final_attributes,
    gold_records,
    human_ratings,
    judgments_by_pair,
    pair_label,
)
from synpref.label.logins import (
    SESSION_SECONDS,
    LoginThrottle,
    end_session,
    session_user,
    start_session,
)
from synpref.label.render import markdown
from synpref.label.users import add_user, authenticate

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class LoginRequired(Exception):
    """Raised by `current_user` for anonymous requests; answered with a redirect to /login."""


@dataclass(frozen=True)
class CurrentUser:
    name: str
    role: str


def create_app(workspace_root: str | Path, db_url: str | None = None, https_only: bool = False) -> FastAPI:
    from synpref.data.workspace import Workspace

    workspace = Workspace(workspace_root)
    sessions = open_database(db_url or default_url(workspace.root))
    app = FastAPI(title="synpref label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workspace = workspace
    app.state.sessions = sessions
    app.state.secret = secret_key(secret_path(workspace.root))
    app.state.throttle = LoginThrottle(sessions)
    app.state.requests_loaded = set()  # label requests (Stage 1's human queue) already in the queue
    app.add_middleware(
        SessionMiddleware, secret_key=app.state.secret, session_cookie="synpref_session",
        max_age=SESSION_SECONDS, same_site="strict", https_only=https_only,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _error: LoginRequired):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(work_queue.BadSubmission)
    async def bad_submission(request: Request, error: work_queue.BadSubmission):
        return PlainTextResponse(str(error), status_code=400)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in (auth_routes, label_routes, admin_routes):
        app.include_router(router)
    return app


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["markdown"] = markdown


def attribute_text(value_json: str) -> str:
    """An attribute value as a person reads it: a list one item a line, nothing for null."""
    value = json.loads(value_json)
    return "\n".join(value) if isinstance(value, list) else "" if value is None else str(value)


templates.env.filters["attribute_text"] = attribute_text


def page(request: Request, name: str, user: CurrentUser | None = None, **context: Any) -> HTMLResponse:
    flash = request.session.pop("flash", None)
    context = {"user": user, "csrf_token": csrf_token(request), "flash": flash, **context}
    return templates.TemplateResponse(request, name, context)


def csrf_token(request: Request) -> str:
    """The session's CSRF token (synchronizer-token pattern), created on first use."""
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


async def form_with_csrf(request: Request) -> dict[str, str]:
    form = await request.form()
    sent = form.get("csrf_token")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return {key: value for key, value in form.items() if isinstance(value, str)}


def current_user(request: Request) -> CurrentUser:
    token = request.session.get("sid")
    if not token:
        raise LoginRequired()
    user = session_user(request.app.state.sessions, token)
    if user is None:  # logged out, expired, or the user deleted since
        request.session.clear()
        raise LoginRequired()
    return CurrentUser(user.name, user.role)


def admin_user(user: CurrentUser = Depends(current_user)) -> CurrentUser:
    if user.role != "admin":
        raise HTTPException(403, "admins only")
    return user


def redirect(url: str, request: Request | None = None, flash: str | None = None) -> RedirectResponse:
    if flash and request is not None:
        request.session["flash"] = flash
    return RedirectResponse(url, status_code=303)


auth_routes = APIRouter()
# Role checks on the routers themselves: a route added later cannot forget them.
label_routes = APIRouter(dependencies=[Depends(current_user)])
admin_routes = APIRouter(prefix="/admin", dependencies=[Depends(admin_user)])


@auth_routes.get("/login")
def login_page(request: Request):
    return page(request, "login.html")


@auth_routes.post("/login")
def login(request: Request, form: dict = Depends(form_with_csrf)):
    name, throttle = form.get("name", ""), request.app.state.throttle
    address = request.client.host if request.client else ""
    wait = throttle.reserve(name, address)  # counts this try as failed until it succeeds
    if wait:  # refused before hashing: a locked-out guesser costs no argon2 work
        response = page(request, "login.html", error=f"too many failed logins: try again in {wait} seconds")
        response.status_code = 429
        response.headers["Retry-After"] = str(wait)
        return response
    user = authenticate(request.app.state.sessions, name, form.get("password", ""))
    if user is None:
        return page(request, "login.html", error="wrong name or password")
    throttle.succeeded(name, address)
    request.session.clear()  # a fresh session (and CSRF token) at each login: no fixation
    request.session["sid"] = start_session(request.app.state.sessions, user.name)
    return redirect("/admin" if user.role == "admin" else "/label")


@auth_routes.post("/logout")
def logout(request: Request, user: CurrentUser = Depends(current_user), form: dict = Depends(form_with_csrf)):
    end_session(request.app.state.sessions, request.session["sid"])
    request.session.clear()
    return redirect("/login")


@auth_routes.get("/")
def home(user: CurrentUser = Depends(current_user)):
    return redirect("/admin" if user.role == "admin" else "/label")


def protocol_path(workspace) -> Path:
    """The protocol humans follow is the guideline the LLM judges get (synpref/annotate reads
    WORKSPACE/prompts/guideline.md, minus its tool-use lines): one text, never two."""
    return Path(workspace.root) / "prompts" / "guideline.md"


def protocol_text(workspace) -> str:
    path = protocol_path(workspace)
    if path.is_file():
        return path.read_text()
    import synpref.annotate

    default = Path(synpref.annotate.__file__).parent / "prompts" / "guideline.md"
    return default.read_text() if default.is_file() else "No protocol written yet."


@label_routes.get("/protocol")
def protocol(request: Request, user: CurrentUser = Depends(current_user)):
    return page(request, "protocol.html", user, protocol=protocol_text(request.app.state.workspace))


@label_routes.get("/label")
def next_pair(request: Request, user: CurrentUser = Depends(current_user)):
    with request.app.state.sessions.begin() as session:
        work_queue.load_requests(session, request.app.state.workspace, request.app.state.requests_loaded)
    with request.app.state.sessions.begin() as session:  # one transaction: pick and claim
        pair_id = work_queue.next_pair_id(session, user.name)
        if pair_id is None:
            return page(request, "label.html", user, item=None, judged=work_queue.judged_count(session, user.name), waiting=0, skipped=[])
        work_queue.claim(session, user.name, pair_id)
    return redirect(f"/label/{pair_id}")


@label_routes.get("/label/{pair_id}")
def label_page(request: Request, pair_id: str, user: CurrentUser = Depends(current_user)):
    with request.app.state.sessions.begin() as session:
        item = _open_item(session, user.name, pair_id)
        work_queue.claim(session, user.name, pair_id)  # a pair reopened from the skipped list, too
        already = session.scalar(select(func.count()).where(JudgmentRow.pair_id == pair_id, JudgmentRow.annotator == user.name))
        context = {
            "judged": work_queue.judged_count(session, user.name),
            "waiting": work_queue.waiting_count(session, user.name),
            "skipped": [p for p in work_queue.skipped_pair_ids(session, user.name) if p != pair_id],
        }
    order = work_queue.shown_order(request.app.state.secret, user.name, pair_id)
    return page(
        request, "label.html", user, item=item, view=_pair_view(item, order), already=already,
        submission_id=secrets.token_urlsafe(16), protocol=protocol_text(request.app.state.workspace),
        attribute_choices=work_queue.ATTRIBUTE_CHOICES, **context,
    )


@label_routes.post("/label/{pair_id}")
def submit(request: Request, pair_id: str, user: CurrentUser = Depends(current_user), form: dict = Depends(form_with_csrf)):
    order = work_queue.shown_order(request.app.state.secret, user.name, pair_id)
    _submit(request, pair_id, user.name, order, form, kind="label")
    return redirect("/label")


def _open_item(session, annotator: str, pair_id: str) -> QueueItem:
    """The queue item, if this annotator may judge it: served to them, or waiting for them."""
    item = _queue_item(session, pair_id)
    if not work_queue.may_judge(session, annotator, pair_id):
        raise HTTPException(403, "this pair is not open to you: take the next one from /label")
    return item


@label_routes.post("/label/{pair_id}/skip")
def skip(request: Request, pair_id: str, user: CurrentUser = Depends(current_user), form: dict = Depends(form_with_csrf)):
    with request.app.state.sessions.begin() as session:
        _open_item(session, user.name, pair_id)
        work_queue.skip(session, user.name, pair_id)
    return redirect("/label")


def _submit(request: Request, pair_id: str, annotator: str, order: tuple[str, str], form: dict, kind: str) -> None:
    sessions = request.app.state.sessions
    try:
        with sessions.begin() as session:
            # labels only on pairs open to the annotator; an admin adjudicates any pair
            item = _open_item(session, annotator, pair_id) if kind == "label" else _queue_item(session, pair_id)
            work_queue.submit(session, item, annotator, order, form, kind=kind)
    except IntegrityError:
        with sessions() as session:
            if not work_queue.submission_stored(session, form.get("submission_id", "")):
                raise
        # else the same submission raced itself in (a double click): its first copy is stored


def _queue_item(session, pair_id: str) -> QueueItem:
    item = session.scalars(select(QueueItem).where(QueueItem.pair_id == pair_id)).first()
    if item is None:
        raise HTTPException(404, "no such pair in the queue")
    return item


def _pair_view(item: QueueItem, order: tuple[str, str]) -> dict[str, Any]:
    """What the labelling screen shows: candidates in `order`, hints and attributes beside them."""
    pair = json.loads(item.pair_json)
    hints = json.loads(item.preverify_json) if item.preverify_json else {}
    attributes = json.loads(item.attributes_json) if item.attributes_json else None
    return {
        "conversation": pair["conversation"],
        "candidates": [{"text": pair[side]["content"], "hints": hints.get(side, [])} for side in order],
        "attributes": attributes or {},
        "has_attributes": attributes is not None,
    }


@admin_routes.get("")
def admin_home(request: Request, user: CurrentUser = Depends(admin_user)):
    with request.app.state.sessions.begin() as session:
        work_queue.load_requests(session, request.app.state.workspace, request.app.state.requests_loaded)
    with request.app.state.sessions() as session:
        context = _admin_overview(session)
    return page(request, "admin.html", user, **context)


@admin_routes.post("/load")
def admin_load(request: Request, user: CurrentUser = Depends(admin_user), form: dict = Depends(form_with_csrf)):
    options = _load_options(form)
    with request.app.state.sessions.begin() as session:
        added, already = work_queue.load_pairs(session, request.app.state.workspace, options, user.name)
    return redirect("/admin", request, f"loaded {added} pairs ({already} already in the queue)")


@admin_routes.get("/users")
def admin_users(request: Request, user: CurrentUser = Depends(admin_user)):
    with request.app.state.sessions() as session:
        users = list(session.scalars(select(User).order_by(User.name)))
    return page(request, "admin_users.html", user, users=users)


@admin_routes.post("/users")
def admin_add_user(request: Request, user: CurrentUser = Depends(admin_user), form: dict = Depends(form_with_csrf)):
    try:
        add_user(request.app.state.sessions, form.get("name", ""), form.get("password", ""), form.get("role", ""))
    except SynprefError as error:
        return redirect("/admin/users", request, f"not added: {error}")
    return redirect("/admin/users", request, f"added {form.get('name')}")


@admin_routes.get("/disagreements")
def admin_disagreements(request: Request, user: CurrentUser = Depends(admin_user)):
    with request.app.state.sessions() as session:
        disputed = [pair_id for pair_id, rows in judgments_by_pair(session).items() if pair_label(rows) == "disputed"]
    return page(request, "admin_disagreements.html", user, disputed=disputed)


@admin_routes.get("/pair/{pair_id}")
def admin_pair(request: Request, pair_id: str, user: CurrentUser = Depends(admin_user)):
    with request.app.state.sessions() as session:
        item = _queue_item(session, pair_id)
        rows = judgments_by_pair(session).get(pair_id, [])
        edits = _edits_of(session, pair_id)
    view = _pair_view(item, ("chosen", "rejected"))
    view["attributes"] = final_attributes(item, rows) or {}  # the adjudicator starts from the latest correction
    return page(request, "admin_pair.html", user, item=item, view=view, rows=rows, label=pair_label(rows),
                edits=edits, submission_id=secrets.token_urlsafe(16), attribute_choices=work_queue.ATTRIBUTE_CHOICES)


@admin_routes.post("/pair/{pair_id}/adjudicate")
def admin_adjudicate(request: Request, pair_id: str, user: CurrentUser = Depends(admin_user), form: dict = Depends(form_with_csrf)):
    _submit(request, pair_id, user.name, ("chosen", "rejected"), form, kind="adjudication")
    return redirect(f"/admin/pair/{pair_id}", request, "adjudication recorded")


@admin_routes.post("/export")
def admin_export(request: Request, user: CurrentUser = Depends(admin_user), form: dict = Depends(form_with_csrf)):
    with request.app.state.sessions() as session:
        summary = export_gold(session, request.app.state.workspace)
    return redirect("/admin", request, (
        f"exported {summary['pairs']} pairs to {summary['path']}; labels {json.dumps(summary['labels'])}; "
        f"{summary['added_to_workspace']} added to the workspace splits"
    ))


@admin_routes.get("/export.jsonl")
def admin_export_download(request: Request, user: CurrentUser = Depends(admin_user)):
    with request.app.state.sessions() as session:
        records = gold_records(session)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return Response(body, media_type="application/jsonl", headers={"Content-Disposition": 'attachment; filename="gold.jsonl"'})


@admin_routes.get("/protocol")
def admin_protocol(request: Request, user: CurrentUser = Depends(admin_user)):
    workspace = request.app.state.workspace
    return page(request, "admin_protocol.html", user, protocol=protocol_text(workspace), path=protocol_path(workspace))


@admin_routes.post("/protocol")
def admin_save_protocol(request: Request, user: CurrentUser = Depends(admin_user), form: dict = Depends(form_with_csrf)):
    path = protocol_path(request.app.state.workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(form.get("protocol", "").replace("\r\n", "\n"))
    return redirect("/admin/protocol", request, f"saved {path}")


def _load_options(form: dict[str, str]) -> work_queue.LoadOptions:
    def text(name: str) -> str | None:
        return form.get(name, "").strip() or None

    try:
        limit = int(form["limit"]) if text("limit") else None
        wanted = int(form.get("annotations_wanted") or 1)
    except ValueError:
        raise work_queue.BadSubmission("limit and annotators per pair must be whole numbers") from None
    if wanted < 1 or (limit is not None and limit < 1):
        raise work_queue.BadSubmission("limit and annotators per pair must be at least 1")
    return work_queue.LoadOptions(
        split=text("split"), ids=(form.get("ids") or "").split(), source=text("source"),
        contains=text("contains"), task_category=text("task_category"), objectivity=text("objectivity"),
        limit=limit, annotations_wanted=wanted,
    )


def _admin_overview(session) -> dict[str, Any]:
    ratings = human_ratings(session)
    per_annotator = []
    skips = dict(session.execute(select(Skip.annotator, func.count(func.distinct(Skip.pair_id))).group_by(Skip.annotator)).all())
    for name, role in session.execute(select(User.name, User.role).order_by(User.name)):
        last = session.scalar(select(func.max(JudgmentRow.created_at)).where(JudgmentRow.annotator == name))
        per_annotator.append({
            "name": name, "role": role, "judged": len(ratings.get(name, {})),
            "waiting": work_queue.waiting_count(session, name), "skips": skips.get(name, 0), "last": last,
            "first_position": _first_position_share(session, name),
        })
    labels: dict[str, int] = {}
    for rows in judgments_by_pair(session).values():
        label = pair_label(rows)
        labels[label] = labels.get(label, 0) + 1
    queued = session.scalar(select(func.count()).select_from(QueueItem))
    return {
        "per_annotator": per_annotator, "kappas": pairwise_kappa(ratings), "alpha": krippendorff_alpha(ratings),
        "labels": labels, "queued": queued, "unjudged": queued - sum(labels.values()),
        "judgments": session.scalar(select(func.count()).select_from(JudgmentRow)),
        "attribute_choices": work_queue.ATTRIBUTE_CHOICES,
    }


def _first_position_share(session, annotator: str) -> float | None:
    """Share of the annotator's decided verdicts that picked Candidate 1: 0.5 is no position bias."""
    choices = list(session.scalars(select(JudgmentRow.choice).where(
        JudgmentRow.annotator == annotator, JudgmentRow.kind == "label", JudgmentRow.choice != "0")))
    return choices.count("1") / len(choices) if choices else None


def _edits_of(session, pair_id: str) -> list:
    from synpref.label.db import AttributeEdit

    return list(session.scalars(select(AttributeEdit).where(AttributeEdit.pair_id == pair_id).order_by(AttributeEdit.id)))
