"""Training sessions as use cases: start one with a persona, play a move, end it with a score.
They write only the training tables: no account, no event, no webhook."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

from services.desk.domain import people, training
from services.desk.domain.people import Person
from services.desk.domain.training import Conduct, Move, Persona, Session
from services.desk.handlers import Refused
from services.desk.repository import training as store
from shared.clock import Clock
from shared.db import UnitOfWork


@dataclass(frozen=True)
class Played:
    session_id: str
    username: str
    persona: Persona
    session: Session
    score: training.Score | None


class Training:
    def __init__(self, clock: Clock, personas: dict[str, Persona], conduct: Conduct) -> None:
        self._clock = clock
        self.personas = personas
        self.conduct = conduct

    async def start(
        self,
        uow: UnitOfWork,
        person: Person,
        persona: str,
        locale: str,
        local_time: str | None = None,
        seed: int | None = None,
    ) -> str:
        if person.role not in people.TRAINS:
            raise Refused(403, "this role does not take training sessions")
        found = self.personas.get(persona)
        if found is None:
            raise Refused(422, f"persona: no persona {persona}", "persona")
        try:
            session = training.begin(
                found, locale, seed if seed is not None else random.randrange(2**31), local_time
            )
        except ValueError as exc:
            raise Refused(422, str(exc), "locale") from exc
        session_id = str(uuid.uuid4())
        await store.start(
            uow.session,
            session_id,
            person.username,
            found.key,
            session.locale,
            session.seed,
            session.local_time,
            session.as_json(),
            self._clock.now(),
        )
        return session_id

    async def view(self, uow: UnitOfWork, person: Person, session_id: str) -> Played:
        row = await store.get(uow.session, session_id)
        return self._played(person, row)

    async def play(
        self, uow: UnitOfWork, person: Person, session_id: str, move: str, text: str = ""
    ) -> Played:
        row = await store.get(uow.session, session_id, lock=True)
        played = self._played(person, row, own=True)
        try:
            chosen = Move(move)
        except ValueError as exc:
            raise Refused(422, f"move: no move {move}", "move") from exc
        if chosen is Move.FREE_TEXT and not text.strip():
            raise Refused(422, "text: say something", "text")
        if played.session.ended:
            raise Refused(409, "this session has ended")
        after = training.play(played.session, played.persona, self.conduct, chosen, text[:500])
        result = training.score(after, played.persona, self.conduct) if after.ended else None
        await store.save(
            uow.session,
            session_id,
            after.as_json(),
            after.ended,
            after.outcome if after.ended else None,
            result.total if result else None,
            [d.__dict__ for d in after.deductions] if result else None,
            self._clock.now(),
        )
        return Played(session_id, played.username, played.persona, after, result)

    def _played(self, person: Person, row: dict[str, Any] | None, own: bool = False) -> Played:
        if row is None:
            raise Refused(404, "no such training session")
        mine = row["username"] == person.username
        if not mine and (own or person.role not in people.SEES_TRAINING):
            raise Refused(403, "this training session is not yours")
        persona = self.personas[row["persona"]]
        session = Session.from_json(
            row["persona"], row["locale"], row["seed"], row["local_time"], row["state"]
        )
        result = training.score(session, persona, self.conduct) if session.ended else None
        return Played(row["session_id"], row["username"], persona, session, result)
