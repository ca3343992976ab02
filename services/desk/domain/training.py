"""Collector training on simulated customers (seed 5.3): personas as data, each a seeded state
machine that answers the trainee's moves, and a score made of outcome points and conduct
deductions, each citing its rule id. Pure: no account, no event, no topic is involved."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parent.parent / "data"
LOCALES = ("en-US", "zh-CN")


class Move(StrEnum):
    VERIFY_IDENTITY = "verify_identity"
    NAME_DEBT = "name_debt"
    ASK_REASON = "ask_reason"
    OFFER_PLAN = "offer_plan"
    OFFER_SETTLEMENT = "offer_settlement"
    OFFER_HARDSHIP = "offer_hardship"
    ASK_PROMISE = "ask_promise"
    SCHEDULE_CALLBACK = "schedule_callback"
    NOTE_DISPUTE = "note_dispute"
    FREE_TEXT = "free_text"
    END_CALL = "end_call"


MOVE_WORDS = {
    "en-US": {
        Move.VERIFY_IDENTITY: "Verify identity",
        Move.NAME_DEBT: "Name the debt",
        Move.ASK_REASON: "Ask the reason and listen",
        Move.OFFER_PLAN: "Offer a plan",
        Move.OFFER_SETTLEMENT: "Offer a settlement",
        Move.OFFER_HARDSHIP: "Offer the hardship path",
        Move.ASK_PROMISE: "Ask for a promise to pay",
        Move.SCHEDULE_CALLBACK: "Schedule a callback",
        Move.NOTE_DISPUTE: "Record a dispute",
        Move.FREE_TEXT: "Say",
        Move.END_CALL: "End the call",
    },
    "zh-CN": {
        Move.VERIFY_IDENTITY: "核实身份",
        Move.NAME_DEBT: "说明欠款",
        Move.ASK_REASON: "询问原因并倾听",
        Move.OFFER_PLAN: "提供分期方案",
        Move.OFFER_SETTLEMENT: "提供减免结清",
        Move.OFFER_HARDSHIP: "提供困难援助",
        Move.ASK_PROMISE: "请客户承诺还款",
        Move.SCHEDULE_CALLBACK: "约定回电",
        Move.NOTE_DISPUTE: "登记异议",
        Move.FREE_TEXT: "说",
        Move.END_CALL: "结束通话",
    },
}
OFFERS = {Move.OFFER_PLAN, Move.OFFER_SETTLEMENT, Move.OFFER_HARDSHIP, Move.ASK_PROMISE}
OUTCOME_POINTS = 50


@dataclass(frozen=True)
class Persona:
    key: str
    title: dict[str, str]
    brief: dict[str, str]
    hardship: bool
    patience: int
    needs: tuple[str, ...]
    agrees: dict[str, str]
    good: tuple[str, ...]
    local_time: str
    lines: dict[str, dict[str, list[str]]]
    answered_by: str = "customer"


@dataclass(frozen=True)
class Conduct:
    points: int
    rules: dict[str, dict[str, Any]]
    hours: tuple[time, time]
    debt_words: dict[str, list[str]]
    identity_words: dict[str, list[str]]
    banned: dict[str, dict[str, list[str]]]

    def text(self, rule: str, locale: str) -> str:
        return str(self.rules[rule]["text"].get(locale) or self.rules[rule]["text"]["en-US"])


def load_personas(path: Path = DATA / "personas.yaml") -> dict[str, Persona]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))["personas"]
    personas = {}
    for key, p in data.items():
        missing = [loc for loc in LOCALES if loc not in p["lines"]]
        if missing:
            raise ValueError(f"persona {key}: no lines for {', '.join(missing)}")
        personas[key] = Persona(
            key=key,
            title=p["title"],
            brief=p["brief"],
            hardship=bool(p.get("hardship")),
            patience=int(p["patience"]),
            needs=tuple(p.get("needs", [])),
            agrees=dict(p.get("agrees", {})),
            good=tuple(p.get("good", [])),
            local_time=str(p.get("local_time", "10:00")),
            lines=p["lines"],
            answered_by=str(p.get("answered_by", "customer")),
        )
    return personas


def load_conduct(path: Path = DATA / "conduct.yaml") -> Conduct:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    start, end = (time.fromisoformat(data["hours"][k]) for k in ("start", "end"))
    banned = data["banned"]
    unknown = set(banned) - set(data["rules"])
    if unknown:
        raise ValueError(f"banned phrases for unknown rules: {sorted(unknown)}")
    return Conduct(
        points=int(data["conduct_points"]),
        rules=data["rules"],
        hours=(start, end),
        debt_words=data["debt_words"],
        identity_words=data["identity_words"],
        banned=banned,
    )


@dataclass(frozen=True)
class Deduction:
    rule: str
    points: int
    turn: int
    why: str


@dataclass(frozen=True)
class Turn:
    speaker: str  # trainee, customer, relative
    text: str
    move: str | None = None


@dataclass(frozen=True)
class Session:
    """A training call as it stands. ``speaker`` is who is on the line (a relative may answer
    first); ``patience`` runs out with pressure and ends the call."""

    persona: str
    locale: str
    seed: int
    local_time: str
    speaker: str = "customer"
    verified: bool = False
    debt_named: bool = False
    reason_asked: bool = False
    hardship_offered: bool = False
    patience: int = 3
    turn: int = 0
    ended: bool = False
    outcome: str | None = None
    transcript: tuple[Turn, ...] = ()
    deductions: tuple[Deduction, ...] = ()
    hours_flagged: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "verified": self.verified,
            "debt_named": self.debt_named,
            "reason_asked": self.reason_asked,
            "hardship_offered": self.hardship_offered,
            "patience": self.patience,
            "turn": self.turn,
            "ended": self.ended,
            "outcome": self.outcome,
            "hours_flagged": self.hours_flagged,
            "transcript": [t.__dict__ for t in self.transcript],
            "deductions": [d.__dict__ for d in self.deductions],
        }

    @classmethod
    def from_json(
        cls, persona: str, locale: str, seed: int, local_time: str, data: dict[str, Any]
    ) -> Session:
        return cls(
            persona=persona,
            locale=locale,
            seed=seed,
            local_time=local_time,
            speaker=data["speaker"],
            verified=data["verified"],
            debt_named=data["debt_named"],
            reason_asked=data["reason_asked"],
            hardship_offered=data["hardship_offered"],
            patience=data["patience"],
            turn=data["turn"],
            ended=data["ended"],
            outcome=data["outcome"],
            hours_flagged=data["hours_flagged"],
            transcript=tuple(Turn(**t) for t in data["transcript"]),
            deductions=tuple(Deduction(**d) for d in data["deductions"]),
        )


def begin(persona: Persona, locale: str, seed: int, local_time: str | None = None) -> Session:
    if locale not in LOCALES:
        raise ValueError(f"locale: {locale} is not one of {', '.join(LOCALES)}")
    session = Session(
        persona=persona.key,
        locale=locale,
        seed=seed,
        local_time=local_time or persona.local_time,
        speaker=persona.answered_by,
        patience=persona.patience,
    )
    return _say(session, persona, "greeting")


def _line(persona: Persona, session: Session, key: str) -> str:
    options = persona.lines[session.locale].get(key) or persona.lines[session.locale]["other"]
    return random.Random(f"{session.seed}:{session.turn}:{key}").choice(options)


def _say(session: Session, persona: Persona, key: str) -> Session:
    text = _line(persona, session, key)
    return replace(session, transcript=(*session.transcript, Turn(session.speaker, text)))


def _deduct(session: Session, conduct: Conduct, rule: str, why: str) -> Session:
    d = Deduction(rule, int(conduct.rules[rule]["points"]), session.turn, why)
    return replace(session, deductions=(*session.deductions, d))


def _contains(text: str, words: list[str]) -> list[str]:
    lowered = text.casefold()
    return [w for w in words if w.casefold() in lowered]


def _outside_hours(session: Session, conduct: Conduct) -> bool:
    at = time.fromisoformat(session.local_time)
    return not (conduct.hours[0] <= at < conduct.hours[1])


def play(
    session: Session, persona: Persona, conduct: Conduct, move: Move, text: str = ""
) -> Session:
    """The trainee's move, what it costs in conduct, and the persona's answer."""
    if session.ended:
        raise ValueError("the session has ended")
    loc = session.locale
    said = text.strip() or MOVE_WORDS[loc][move]
    s = replace(
        session,
        turn=session.turn + 1,
        transcript=(*session.transcript, Turn("trainee", said, move.value)),
    )
    # conduct first: what was said is judged before the customer answers
    if move is Move.FREE_TEXT:
        for rule, phrases in conduct.banned.items():
            hits = _contains(said, phrases.get(loc, []))
            if hits:
                s = _deduct(s, conduct, rule, f"said “{hits[0]}”")
    names_debt = (
        move is Move.NAME_DEBT
        or move in OFFERS
        or (move is Move.FREE_TEXT and bool(_contains(said, conduct.debt_words.get(loc, []))))
    )
    verifies = move is Move.VERIFY_IDENTITY or (
        move is Move.FREE_TEXT and bool(_contains(said, conduct.identity_words.get(loc, [])))
    )
    if (
        move not in (Move.END_CALL, Move.SCHEDULE_CALLBACK)
        and _outside_hours(s, conduct)
        and not s.hours_flagged
    ):
        s = replace(
            _deduct(s, conduct, "TR.hours", f"local time {s.local_time}"), hours_flagged=True
        )
    if names_debt and s.speaker != "customer":
        s = _deduct(s, conduct, "TR.third-party", "named the debt to a relative who answered")
    elif names_debt and not s.verified:
        s = _deduct(s, conduct, "TR.identity.before-debt", "named the debt before verifying")

    if move is Move.END_CALL:
        return _end(s, persona, conduct)
    if verifies:
        s = replace(s, verified=True, speaker="customer")
        return _say(s, persona, "verified")
    if move is Move.ASK_REASON:
        s = replace(s, reason_asked=True)
        return _say(s, persona, "reason")
    if move is Move.OFFER_HARDSHIP:
        s = replace(s, hardship_offered=True)
    if names_debt and move is Move.NAME_DEBT:
        s = replace(s, debt_named=True)
        s = replace(s, patience=s.patience - 1) if persona.patience <= 3 else s
        return _said_or_gone(s, persona, conduct, "debt_named")
    agreed = persona.agrees.get(move.value)
    if agreed is not None:
        ready = all(getattr(s, need) for need in persona.needs) and s.speaker == "customer"
        if ready:
            s = replace(s, outcome=agreed)
            s = _say(s, persona, "callback" if agreed == "callback" else "agree")
            return _end(s, persona, conduct)
        s = replace(s, patience=s.patience - 1)
        return _said_or_gone(s, persona, conduct, "decline")
    if move in OFFERS or move is Move.NOTE_DISPUTE:
        s = replace(s, patience=s.patience - 1)
        return _said_or_gone(s, persona, conduct, "decline")
    if move is Move.SCHEDULE_CALLBACK:
        return _said_or_gone(s, persona, conduct, "callback")
    pressed = any(d.turn == s.turn and d.rule != "TR.hours" for d in s.deductions)
    if pressed:
        s = replace(s, patience=s.patience - 2)
    return _said_or_gone(s, persona, conduct, "other")


def _said_or_gone(s: Session, persona: Persona, conduct: Conduct, key: str) -> Session:
    if s.patience <= 0:
        s = replace(_say(s, persona, "hangup"), outcome=s.outcome or "refusal")
        return _end(s, persona, conduct)
    return _say(s, persona, key)


def _end(s: Session, persona: Persona, conduct: Conduct) -> Session:
    if persona.hardship and not s.hardship_offered:
        s = _deduct(s, conduct, "TR.hardship-path", "the customer said they cannot pay")
    return replace(s, ended=True, outcome=s.outcome or "no_outcome")


@dataclass(frozen=True)
class Score:
    total: int
    outcome_points: int
    conduct_points: int
    deductions: tuple[Deduction, ...] = field(default_factory=tuple)


def score(session: Session, persona: Persona, conduct: Conduct) -> Score:
    """Outcome points (a good outcome for this persona: all of them; a callback agreed with
    one who would have settled: half) plus what is left of the conduct points."""
    if session.outcome in persona.good:
        outcome = OUTCOME_POINTS
    elif session.outcome in ("callback", "plan", "promise", "hardship"):
        outcome = OUTCOME_POINTS // 2
    else:
        outcome = 0
    lost = sum(d.points for d in session.deductions)
    kept = max(0, conduct.points - lost)
    return Score(outcome + kept, outcome, kept, session.deductions)
