"""What a customer's reply to an SMS or email means. Keywords are matched on the whole reply
or its first word, case-insensitively, in Chinese and English."""

from __future__ import annotations

import re
from typing import Literal

Intent = Literal["opt_out", "dispute", "accept_offer", "other"]

OPT_OUT = {"stop", "td", "退订", "unsubscribe", "stop all", "end", "cancel", "quit"}
DISPUTE = {"dispute", "not my debt", "wrong", "异议", "争议", "不是我的", "投诉"}
ACCEPT = {"yes", "y", "accept", "agree", "plan", "同意", "接受", "好", "是"}

_WORD = re.compile(r"[\w\u4e00-\u9fff]+")


def intent(text: str) -> Intent:
    cleaned = " ".join(text.strip().lower().split())
    cleaned = cleaned.strip(" .!。！")
    first = (_WORD.findall(cleaned) or [""])[0]
    for keywords, meaning in ((OPT_OUT, "opt_out"), (DISPUTE, "dispute"), (ACCEPT, "accept_offer")):
        if cleaned in keywords or first in keywords:
            return meaning  # type: ignore[return-value]
        if any(k in cleaned for k in keywords if not k.isascii()):
            return meaning  # type: ignore[return-value]
    return "other"
