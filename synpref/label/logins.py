"""Who is signed in, and how often a name or an address may try again after failing.

Sessions live in the database (`LoginSession`); the signed cookie carries only a random token
naming one, so logging out ends the session everywhere, and a copied cookie dies with it.
Failed logins back off per account name at an address, per client address and per account
(`LoginThrottle`), counted in the database so that every server on it sees the same counts.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select, update
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
    """Failed logins back off per (account name, client address), per address, and per
    account: past a key's limit each further try waits `first_wait` seconds, doubling with
    every failure up to `longest_wait`; an hour without failures forgets the count.

    The limit on a name from one address is low (5); the address limit is higher (20), because
    several people may share one address (an office behind NAT). The account limit over all
    addresses is higher still (50): it slows guessing spread over many addresses, and it is
    out of reach of a stranger who wants to lock a real user out, who then locks out only
    their own address. Tries refused while waiting are not counted, so waiting it out always
    works.

    A try is counted as a failure *before* its password is checked (`reserve`), in the same
    transaction that checks the limits, so concurrent tries cannot all pass the check before
    any of them is counted; `succeeded` takes the count back.
    """

    sessions: sessionmaker[Session]
    name_at_address_failures: int = 5
    address_failures: int = 20
    account_failures: int = 50
    first_wait: float = 30.0  # seconds
    longest_wait: float = 900.0
    forget_after: float = 3600.0
    clock: Callable[[], float] = time.time

    def reserve(self, name: str, address: str) -> int:
        """Whole seconds before `name` may try again from `address`; 0: this try may go ahead,
        and it is counted as a failure until `succeeded` says otherwise."""
        for attempt in range(2):  # two servers inserting the same new key: the loser retries as an update
            try:
                wait = self._check_and_count(name, address)
                break
            except IntegrityError:
                if attempt:
                    raise
        self._forget_old()
        return wait

    def succeeded(self, name: str, address: str) -> None:
        """A right password clears the account's counts but not the address's (one valid
        account must not reset the counter an attacker guesses other accounts under): the
        address only gets back the try `reserve` counted."""
        limits = self._limits(name, address)
        address_key = self._address_key(address)
        with self.sessions.begin() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.key.in_([key for key in limits if key != address_key])))
            session.execute(
                update(LoginFailure)
                .where(LoginFailure.key == address_key, LoginFailure.failures > 0)
                .values(failures=LoginFailure.failures - 1)
            )

    def _check_and_count(self, name: str, address: str) -> int:
        now, limits = self.clock(), self._limits(name, address)
        # SQLite: the transaction starts with BEGIN IMMEDIATE (db.py), which holds the write
        # lock throughout. PostgreSQL: FOR UPDATE locks the rows, in key order so that two
        # tries never wait on each other's locks; a key without a row is inserted, and two
        # servers inserting it at once end in an IntegrityError for one (`reserve` retries).
        query = select(LoginFailure).where(LoginFailure.key.in_(sorted(limits))).order_by(LoginFailure.key).with_for_update()
        with self.sessions.begin() as session:
            rows = {row.key: row for row in session.scalars(query)}
            wait = max(self._remaining(rows.get(key), limit, now) for key, limit in limits.items())
            if wait:
                return math.ceil(wait)
            for key in sorted(limits):
                row = rows.get(key)
                if row is None:
                    session.add(LoginFailure(key=key, failures=1, last_at=now))
                else:
                    fresh = now - row.last_at <= self.forget_after
                    row.failures, row.last_at = (row.failures + 1 if fresh else 1), now
        return 0

    def _forget_old(self) -> None:
        """Delete counts quiet for `forget_after` (keeps the table small); rows another try holds
        are skipped rather than waited for (PostgreSQL; SQLite holds one writer at a time)."""
        stale = select(LoginFailure.key).where(LoginFailure.last_at < self.clock() - self.forget_after)
        with self.sessions.begin() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.key.in_(stale.with_for_update(skip_locked=True))))

    def _remaining(self, row: LoginFailure | None, limit: int, now: float) -> float:
        if row is None or row.failures < limit or now - row.last_at > self.forget_after:
            return 0.0
        wait = min(self.longest_wait, self.first_wait * 2 ** (row.failures - limit))
        return max(0.0, row.last_at + wait - now)

    def _limits(self, name: str, address: str) -> dict[str, int]:
        return {
            self._name_at_address_key(name, address): self.name_at_address_failures,
            self._address_key(address): self.address_failures,
            self._account_key(name): self.account_failures,
        }

    @staticmethod
    def _name_at_address_key(name: str, address: str) -> str:
        return "name-at:" + _digest(f"{name}\x00{address}")

    @staticmethod
    def _account_key(name: str) -> str:
        return "account:" + _digest(name)  # fixed length, and no typed text stored

    @staticmethod
    def _address_key(address: str) -> str:
        return "address:" + _digest(address)
