"""People, their web sessions and failed logins."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.desk.domain.people import Authority, Person, Role


@dataclass(frozen=True)
class Account:
    person: Person
    password_hash: str
    active: bool


def _person(r: object) -> Person:
    return Person(
        username=r.username,  # type: ignore[attr-defined]
        display_name=r.display_name,  # type: ignore[attr-defined]
        role=Role(r.role),  # type: ignore[attr-defined]
        team=r.team,  # type: ignore[attr-defined]
        languages=tuple(r.languages),  # type: ignore[attr-defined]
        countries=tuple(r.countries),  # type: ignore[attr-defined]
        skills=tuple(r.skills),  # type: ignore[attr-defined]
        authority=Authority.of(r.authority),  # type: ignore[attr-defined]
    )


async def upsert_person(
    session: AsyncSession, person: Person, password_hash: str, now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO person (username, display_name, role, team, languages, countries,
                                skills, authority, password_hash, created_at)
            VALUES (:u, :n, :r, :t, :l, :c, :s, CAST(:a AS jsonb), :h, :now)
            ON CONFLICT (username) DO UPDATE SET
              display_name = excluded.display_name, role = excluded.role, team = excluded.team,
              languages = excluded.languages, countries = excluded.countries,
              skills = excluded.skills, authority = excluded.authority,
              password_hash = excluded.password_hash, active = true
        """),
        {
            "u": person.username,
            "n": person.display_name,
            "r": person.role.value,
            "t": person.team,
            "l": list(person.languages),
            "c": list(person.countries),
            "s": list(person.skills),
            "a": json.dumps(person.authority.as_json()),
            "h": password_hash,
            "now": now,
        },
    )


async def account(session: AsyncSession, username: str) -> Account | None:
    r = (
        await session.execute(text("SELECT * FROM person WHERE username = :u"), {"u": username})
    ).first()
    if r is None:
        return None
    return Account(_person(r), r.password_hash, r.active)


async def people(session: AsyncSession) -> list[Person]:
    rows = await session.execute(text("SELECT * FROM person WHERE active ORDER BY username"))
    return [_person(r) for r in rows]


async def set_password_hash(session: AsyncSession, username: str, password_hash: str) -> None:
    await session.execute(
        text("UPDATE person SET password_hash = :h WHERE username = :u"),
        {"u": username, "h": password_hash},
    )


async def open_session(
    session: AsyncSession, token_hash: str, username: str, csrf: str, expires_at: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO web_session (token_hash, username, csrf, expires_at)
            VALUES (:t, :u, :c, :e)
        """),
        {"t": token_hash, "u": username, "c": csrf, "e": expires_at},
    )


async def session_of(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[Person, str] | None:
    r = (
        await session.execute(
            text("""
                SELECT p.*, s.csrf FROM web_session s JOIN person p USING (username)
                WHERE s.token_hash = :t AND s.expires_at > :now AND p.active
            """),
            {"t": token_hash, "now": now},
        )
    ).first()
    return (_person(r), r.csrf) if r is not None else None


async def close_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(text("DELETE FROM web_session WHERE token_hash = :t"), {"t": token_hash})


async def failures_since(session: AsyncSession, username: str, since: datetime) -> int:
    return int(
        (
            await session.execute(
                text("SELECT count(*) FROM login_failure WHERE username = :u AND at > :s"),
                {"u": username, "s": since},
            )
        ).scalar_one()
    )


async def record_failure(session: AsyncSession, username: str, at: datetime) -> None:
    await session.execute(
        text("INSERT INTO login_failure (username, at) VALUES (:u, :at)"),
        {"u": username, "at": at},
    )


async def clear_failures(session: AsyncSession, usernames: Sequence[str]) -> None:
    await session.execute(
        text("DELETE FROM login_failure WHERE username = ANY(CAST(:u AS text[]))"),
        {"u": list(usernames)},
    )
