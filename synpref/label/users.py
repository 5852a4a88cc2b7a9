"""Accounts: a name, a role, and an argon2 password hash (argon2-cffi's recommended defaults)."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session, sessionmaker

from synpref.errors import SynprefError
from synpref.label.db import ROLES, User, user_by_name

_hasher = PasswordHasher()
# Each hash takes 64 MiB (argon2-cffi's default memory cost): a few at a time, so a burst of
# logins queues up instead of multiplying the server's memory (16 at once took it past 1 GiB).
_hashing_slots = threading.BoundedSemaphore(2)
# Verified when the name is unknown, so a wrong name costs as long as a wrong password
# (otherwise response times tell which user names exist).
_DUMMY_HASH = _hasher.hash("not a password")


def check_new_user(name: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise SynprefError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if not name.strip() or len(name) > 200:
        raise SynprefError("user name: 1 to 200 characters")
    if len(password) < 8:
        raise SynprefError("password: at least 8 characters")


def add_user(sessions: sessionmaker[Session], name: str, password: str, role: str) -> User:
    check_new_user(name, password, role)
    with sessions.begin() as session:
        if user_by_name(session, name) is not None:
            raise SynprefError(f"user {name!r} already exists")
        with _hashing_slots:
            password_hash = _hasher.hash(password)
        user = User(name=name, password_hash=password_hash, role=role)
        session.add(user)
    return user


def authenticate(sessions: sessionmaker[Session], name: str, password: str) -> User | None:
    with sessions() as session:
        user = user_by_name(session, name)
    try:
        with _hashing_slots:
            _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user
