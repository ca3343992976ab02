"""Admin commands: add a person (the password read from the terminal or stdin, never from the
command line), and the demo people for ``make up``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

import yaml

from services.desk.bootstrap import authorities
from services.desk.domain.people import Person, Role
from services.desk.repository import people
from services.desk.security import hash_password
from services.desk.settings import DeskSettings
from shared.clock import wall_now
from shared.db import make_engine, uow_factory
from shared.settings import SAFE_FOR_DEFAULTS

DEMO = Path(__file__).resolve().parent / "data" / "demo_users.yaml"


async def _save(settings: DeskSettings, rows: list[tuple[Person, str]]) -> None:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with uow_factory(engine)() as uow:
            for person, password in rows:
                await people.upsert_person(uow.session, person, hash_password(password), wall_now())
            await uow.commit()
    finally:
        await engine.dispose()


def _person(
    username: str,
    name: str,
    role: str,
    team: str,
    langs: list[str],
    countries: list[str],
    skills: list[str],
) -> Person:
    authority = authorities()
    return Person(
        username.lower(),
        name,
        Role(role),
        team,
        tuple(langs),
        tuple(countries),
        tuple(skills),
        authority[role],
    )


def users(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.desk users")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add or update a person")
    add.add_argument("username")
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--team", default="")
    add.add_argument("--languages", nargs="*", default=[])
    add.add_argument("--countries", nargs="*", default=[])
    add.add_argument("--skills", nargs="*", default=[], choices=["voice", "field_visit"])
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sub.add_parser("demo", help="the demo people (dev and test only); prints their logins")
    args = parser.parse_args(argv)
    settings = DeskSettings()
    if args.command == "demo":
        if settings.env not in SAFE_FOR_DEFAULTS:
            print(f"demo users are refused when ARREARS_ENV={settings.env}", file=sys.stderr)
            return 2
        listed = yaml.safe_load(DEMO.read_text(encoding="utf-8"))["users"]
        rows = [
            (
                _person(
                    u["username"],
                    u["name"],
                    u["role"],
                    u.get("team", ""),
                    u.get("languages", []),
                    u.get("countries", []),
                    u.get("skills", []),
                ),
                u["password"],
            )
            for u in listed
        ]
        asyncio.run(_save(settings, rows))
        for person, password in rows:
            print(f"  {person.username:8} {password:22} {person.role.value}")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
    try:
        person = _person(
            args.username,
            args.name,
            args.role,
            args.team,
            args.languages,
            args.countries,
            args.skills,
        )
        asyncio.run(_save(settings, [(person, password)]))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"saved {person.username} ({person.role.value})")
    return 0
