"""The annotation database: what people write concurrently (DESIGN.md, "Rule of thumb").

Judgments, attribute edits and skips are append-only: a changed mind is a new row, and the
label of a pair is derived from its rows (see `export.py`). The same code runs on SQLite (the
default, `WORKSPACE/annotations.db`) and on PostgreSQL (`--db postgresql+psycopg://...`).
"""

from __future__ import annotations

import os
import secrets
import stat
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ROLES = ("admin", "annotator")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class QueueItem(Base):
    """A pair loaded for labelling, with the machine annotations known when it was loaded."""

    __tablename__ = "queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # load order breaks priority ties
    pair_id: Mapped[str] = mapped_column(String(64), unique=True)
    pair_json: Mapped[str] = mapped_column(Text)  # the PreferencePair as loaded, original orientation
    attributes_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # the LLM's Attributes
    preverify_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # {side: [{judge, correct, reason}]}
    priority: Mapped[int] = mapped_column(Integer)  # lower is served first (see queue.priority)
    annotations_wanted: Mapped[int] = mapped_column(Integer, default=1)  # k annotators per pair
    loaded_by: Mapped[str] = mapped_column(String(200))
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class JudgmentRow(Base):
    """One verdict as submitted. `submission_id` makes a resent form a no-op, not a duplicate."""

    __tablename__ = "judgments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(64), unique=True)
    pair_id: Mapped[str] = mapped_column(String(64), ForeignKey("queue.pair_id"), index=True)
    annotator: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # "label", or "adjudication" by an admin
    choice: Mapped[str] = mapped_column(String(1))  # what was clicked: "1", "2" or "0"
    verdict: Mapped[str] = mapped_column(String(10))  # chosen | rejected | unsure (original orientation)
    shown_order: Mapped[str] = mapped_column(String(20))  # "chosen,rejected": Candidate 1 first
    rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    used_tools: Mapped[bool] = mapped_column(Boolean, default=False)
    attributes_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # as the annotator left them
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class AttributeEdit(Base):
    """One attribute field an annotator changed, with its value before and after."""

    __tablename__ = "attribute_edits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(64), ForeignKey("judgments.submission_id"), index=True)
    pair_id: Mapped[str] = mapped_column(String(64), index=True)
    annotator: Mapped[str] = mapped_column(String(200))
    field: Mapped[str] = mapped_column(String(40))
    before_json: Mapped[str] = mapped_column(Text)
    after_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Skip(Base):
    __tablename__ = "skips"
    __table_args__ = (UniqueConstraint("annotator", "pair_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotator: Mapped[str] = mapped_column(String(200))
    pair_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Claim(Base):
    """An annotator has a pair open: it is not served to others meanwhile (queue.CLAIM_MINUTES).

    Claims are bookkeeping for the queue, not annotations: a skip deletes its claim.
    """

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotator: Mapped[str] = mapped_column(String(200))
    pair_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class LoginSession(Base):
    """A signed-in browser. The signed cookie only names it, so logging out (deleting the row)
    ends it on the server: a copied cookie opens nothing afterwards."""

    __tablename__ = "login_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256: a read database opens no session
    user_name: Mapped[str] = mapped_column(String(200), index=True)
    expires_at: Mapped[float] = mapped_column(Float)  # Unix time


class LoginFailure(Base):
    """Failed logins per account name, client address or both since the last quiet spell (logins.py)."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "account:", "address:" or "name-at:" + sha256
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[float] = mapped_column(Float)  # Unix time of the latest failure


def default_url(workspace_root: str | Path) -> str:
    return f"sqlite:///{Path(workspace_root).resolve() / 'annotations.db'}"


def open_database(url: str) -> sessionmaker[Session]:
    """Create the tables if needed; return a session factory."""
    _make_private(url)
    engine = _engine(url)
    Base.metadata.create_all(engine)
    _forget_stored_secret(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _make_private(url: str) -> None:
    """Create a SQLite file readable by its owner only (it holds password hashes), and take
    group and other access off one created before. SQLite gives the -wal and -shm files it
    creates the database file's permissions, so they follow.
    https://www.sqlite.org/src/file?name=src/os_unix.c (findCreateFileMode)"""
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    os.close(os.open(database, os.O_CREAT | os.O_WRONLY, 0o600))  # an empty file is an empty database
    for path in (database, f"{database}-wal", f"{database}-shm"):
        if os.path.exists(path):
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & 0o700)


def _forget_stored_secret(engine: Engine) -> None:
    """Older versions kept the session-signing key in a `settings` table: anyone who could read
    the database could sign an admin session. The key now lives in its own file."""
    if inspect(engine).has_table("settings"):
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM settings WHERE name = 'secret_key'"))


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=10, max_overflow=30, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=10, max_overflow=30)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, start transactions (pysqlite's own BEGIN is deferred).
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A deferred transaction that reads then writes fails at once with "database is locked"
        # when another writer got there first; IMMEDIATE waits for the lock instead.
        # https://www.sqlite.org/lang_transaction.html#deferred_immediate_and_exclusive
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def secret_path(workspace_root: str | Path) -> Path:
    return Path(workspace_root) / "label" / "session-secret"


def secret_key(path: Path) -> str:
    """The session-signing key, created once (mode 0600) and shared by every server on this
    workspace. Written to a private temporary file and linked into place, which refuses to
    replace an existing key: two servers starting at once agree on the first one's."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def user_by_name(session: Session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).first()
