"""Sign-in, sessions and CSRF for the desk's pages and its API.

A session is a random token in an HttpOnly, SameSite=Strict cookie; the database keeps only its
hash. Every state-changing request carries the session's CSRF token (a form field, or the
``X-CSRF-Token`` header for the API), compared in constant time. Logins are limited per user
(failures in the window, in the database, so every process agrees) and per client address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request
from fastapi.responses import Response

from services.desk import security
from services.desk.domain.people import Person
from services.desk.handlers import Refused
from services.desk.repository import people
from services.desk.settings import DeskSettings
from shared.clock import wall_now
from shared.db import UnitOfWork
from shared.http import Window

COOKIE = "desk_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Signed:
    person: Person
    csrf: str
    token_hash: str


class Auth:
    def __init__(self, settings: DeskSettings) -> None:
        self._hours = settings.session_hours
        self._max_failures = settings.login_max_failures
        self._window = timedelta(minutes=settings.login_window_minutes)
        self._secure = settings.secure_cookies
        self._per_client = Window(30, 60)  # login attempts per client address per minute

    async def login(
        self, uow: UnitOfWork, username: str, password: str, client: str
    ) -> tuple[str, str, Person]:
        """A new session's token and CSRF token; refused alike for an unknown user and a wrong
        password (nothing tells which)."""
        if not self._per_client.allow(client):
            raise Refused(429, "too many sign-in attempts from here; wait a minute")
        now = wall_now()  # sessions and lockouts are operational time
        username = username.strip().lower()[:64]
        if await people.failures_since(uow.session, username, now - self._window) >= (
            self._max_failures
        ):
            raise Refused(429, "too many failed sign-ins for this user; try again later")
        found = await people.account(uow.session, username)
        ok = security.verify_password(found.password_hash if found else None, password)
        if found is None or not ok or not found.active:
            await people.record_failure(uow.session, username, now)
            raise Refused(401, "wrong username or password")
        if security.needs_rehash(found.password_hash):
            await people.set_password_hash(uow.session, username, security.hash_password(password))
        await people.clear_failures(uow.session, [username])
        token, csrf = security.new_token(), security.new_token()
        await people.open_session(
            uow.session,
            security.token_hash(token),
            username,
            csrf,
            now + timedelta(hours=self._hours),
        )
        return token, csrf, found.person

    async def current(self, uow: UnitOfWork, request: Request) -> Signed | None:
        token = request.cookies.get(COOKIE)
        if not token or len(token) > 100:
            return None
        digest = security.token_hash(token)
        found = await people.session_of(uow.session, digest, wall_now())
        if found is None:
            return None
        return Signed(found[0], found[1], digest)

    def csrf_ok(self, signed: Signed, offered: str | None) -> bool:
        return bool(offered) and security.same(signed.csrf, offered or "")

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self._hours * 3600),
            httponly=True,
            samesite="strict",
            secure=self._secure,
            path="/",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/")
