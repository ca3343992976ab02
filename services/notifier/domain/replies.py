"""What a customer's reply to an SMS or email means. Keywords are matched on the whole reply
or its first word, case-insensitively, in Chinese and English; hardship words are data
(``data/hardship.yaml``, per locale and reason); a request to be called at a time is read in
the customer's own time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import yaml

from shared.events import HardshipReason

Intent = Literal["opt_out", "dispute", "accept_offer", "hardship", "callback", "other"]

OPT_OUT = {"stop", "td", "退订", "unsubscribe", "stop all", "end", "cancel", "quit"}
DISPUTE = {"dispute", "not my debt", "wrong", "异议", "争议", "不是我的", "投诉"}
ACCEPT = {"yes", "y", "accept", "agree", "plan", "同意", "接受", "好", "是"}
HARDSHIP_WORDS = Path(__file__).resolve().parent.parent / "data" / "hardship.yaml"

_WORD = re.compile(r"[\w\u4e00-\u9fff]+")
_CALL = re.compile(r"\b(call|ring|phone)\b|回电|打电话|来电|打给我|致电")
# 19:30, 7:30pm, 7pm, 7 pm; 19点, 7点半, 晚上7点30分
_CLOCK = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\b", re.IGNORECASE)
_CN_CLOCK = re.compile(
    r"(早上|上午|中午|下午|晚上)?\s*(\d{1,2})\s*[点點:：]\s*(半|(\d{1,2})\s*分?)?"
)


@dataclass(frozen=True)
class Reading:
    intent: Intent
    reason: HardshipReason | None = None  # for hardship
    at: datetime | None = None  # for a callback: the instant asked for


@lru_cache(maxsize=1)
def _hardship_words() -> dict[str, list[tuple[HardshipReason, str]]]:
    raw = yaml.safe_load(HARDSHIP_WORDS.read_text(encoding="utf-8"))
    return {
        locale: [(reason, word.lower()) for reason, words in reasons.items() for word in words]
        for locale, reasons in raw.items()
    }


def hardship_reason(text: str) -> HardshipReason | None:
    """The reason a text gives for hardship (any locale's words: a customer may answer in
    another language than the one written to them), or None."""
    cleaned = " ".join(text.lower().split())
    for words in _hardship_words().values():
        for reason, word in words:
            if word in cleaned:
                return reason
    return None


def requested_time(text: str, now: datetime, timezone: str) -> datetime | None:
    """The instant a customer asks to be called at ("call me at 19:30", "明天晚上7点打给我"),
    in their time zone: that time today if it is still ahead, else tomorrow ("tomorrow", 明天:
    tomorrow in any case)."""
    lowered = text.lower()
    if not _CALL.search(lowered):
        return None
    hour, minute = _cn_time(text) or _en_time(lowered) or (None, None)
    if hour is None or minute is None or not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    zone = ZoneInfo(timezone)
    today: date = now.astimezone(zone).date()
    tomorrow = "tomorrow" in lowered or "明天" in text
    day = today + timedelta(days=1) if tomorrow else today
    at = datetime.combine(day, time(hour, minute), zone)
    if not tomorrow and at <= now:
        at = datetime.combine(today + timedelta(days=1), time(hour, minute), zone)
    return at


def _cn_time(text: str) -> tuple[int, int] | None:
    found = _CN_CLOCK.search(text)
    if found is None:
        return None
    part, hour = found.group(1), int(found.group(2))
    minute = 30 if found.group(3) == "半" else int(found.group(4) or 0)
    if part in ("下午", "晚上") and hour < 12:
        hour += 12
    return hour, minute


def _en_time(text: str) -> tuple[int, int] | None:
    for found in _CLOCK.finditer(text):
        hour, minute, half = int(found.group(1)), int(found.group(2) or 0), found.group(3)
        if found.group(2) is None and half is None:
            continue  # a bare number is no time
        if half and half.lower() == "pm" and hour < 12:
            hour += 12
        if half and half.lower() == "am" and hour == 12:
            hour = 0
        return hour, minute
    return None


def read(text: str, now: datetime | None = None, timezone: str | None = None) -> Reading:
    """What a reply asks for: opt-out, dispute and acceptance by keyword; a callback at a time
    (with ``now`` and the customer's ``timezone``); hardship by its words."""
    cleaned = " ".join(text.strip().lower().split())
    cleaned = cleaned.strip(" .!。！")
    first = (_WORD.findall(cleaned) or [""])[0]
    for keywords, meaning in ((OPT_OUT, "opt_out"), (DISPUTE, "dispute")):
        if cleaned in keywords or first in keywords:
            return Reading(meaning)  # type: ignore[arg-type]
        if any(k in cleaned for k in keywords if not k.isascii()):
            return Reading(meaning)  # type: ignore[arg-type]
    reason = hardship_reason(text)
    if reason is not None:
        return Reading("hardship", reason=reason)
    if now is not None and timezone:
        at = requested_time(text, now, timezone)
        if at is not None:
            return Reading("callback", at=at)
    if cleaned in ACCEPT or first in ACCEPT or any(k in cleaned for k in ACCEPT if not k.isascii()):
        return Reading("accept_offer")
    return Reading("other")


def intent(text: str) -> Intent:
    return read(text).intent
