"""Who is signed in, and how often a name or an address may try again after failing.

Sessions live in the database (`LoginSession`); the signed cookie carries only a random token
naming one, so logging out ends the session everywhere, and a copied cookie dies with it.
Failed logins back off per account name and per client address (`LoginThrottle`), counted in
the database so that every server on it sees the same counts.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from synpref.label.db import LoginFailure, LoginSession, User

SESSION_SECONDS = 12 * 3600


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def start_session(sessions: sessionmaker[Session], user_name: str, now: float | None = None) -> str:
    """A new session for `user_name`; returns the token its cookie carries."""
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    with sessions.begin() as session:
        session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))  # keep the table small
        session.add(LoginSession(token_hash=_digest(token), user_name=user_name, expires_at=now + SESSION_SECONDS))
    return token


def session_user(sessions: sessionmaker[Session], token: str) -> User | None:
    """The user of a live session, or None (logged out, expired, user deleted, forged)."""
    query = (
        select(User)
        .join(LoginSession, LoginSession.user_name == User.name)
        .where(LoginSession.token_hash == _digest(token), LoginSession.expires_at > time.time())
    )
    with sessions() as session:
        return session.scalars(query).first()


def end_session(sessions: sessionmaker[Session], token: str) -> None:
    with sessions.begin() as session:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))


@dataclass
class LoginThrottle:
    """After `*_failures` failed logins, each further try waits `first_wait` seconds, doubling
    with every failure up to `longest_wait`; an hour without failures forgets the count.

    The address limit is higher than the account limit because several people may share one
    address (an office behind NAT); the account limit still holds for each of them. Tries
    refused while waiting are not counted, so waiting it out always works.
    """

    sessions: sessionmaker[Session]
    account_failures: int = 5
    address_failures: int = 20
    first_wait: float = 30.0  # seconds
    longest_wait: float = 900.0
    forget_after: float = 3600.0
    clock: Callable[[], float] = time.time

    def wait(self, name: str, address: str) -> int:
        """Whole seconds before `name` may try again from `address` (0: now)."""
        now = self.clock()
        with self.sessions() as session:
            rows = {row.key: row for row in session.scalars(select(LoginFailure).where(LoginFailure.key.in_(self._keys(name, address))))}
        waits = [self._remaining(rows.get(key), limit, now) for key, limit in self._limits(name, address).items()]
        return math.ceil(max(waits))

    def failed(self, name: str, address: str) -> None:
        for attempt in range(2):  # two servers inserting the same new key: the loser retries as an update
            try:
                self._count_failure(name, address)
                return
            except IntegrityError:
                if attempt:
                    raise

    def succeeded(self, name: str) -> None:
        """A right password clears the account's count (not the address's: one valid account
        must not reset the counter an attacker guesses other accounts under)."""
        with self.sessions.begin() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.key == self._account_key(name)))

    def _count_failure(self, name: str, address: str) -> None:
        now = self.clock()
        with self.sessions.begin() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.last_at < now - self.forget_after))
            for key in self._keys(name, address):
                row = session.get(LoginFailure, key, with_for_update=True)
                if row is None:
                    session.add(LoginFailure(key=key, failures=1, last_at=now))
                else:
                    row.failures, row.last_at = row.failures + 1, now

    def _remaining(self, row: LoginFailure | None, limit: int, now: float) -> float:
        if row is None or row.failures < limit or now - row.last_at > self.forget_after:
            return 0.0
        wait = min(self.longest_wait, self.first_wait * 2 ** (row.failures - limit))
        return max(0.0, row.last_at + wait - now)

    def _limits(self, name: str, address: str) -> dict[str, int]:
        return {self._account_key(name): self.account_failures, self._address_key(address): self.address_failures}

    def _keys(self, name: str, address: str) -> list[str]:
        return list(self._limits(name, address))

    @staticmethod
    def _account_key(name: str) -> str:
        return "account:" + _digest(name)  # fixed length, and no typed text stored

    @staticmethod
    def _address_key(address: str) -> str:
        return "address:" + _digest(address)
