"""Rendering what is sent: Jinja2 templates per locale, template and channel
(``templates/<locale>/<template>.<channel>.j2``). Every SMS and email gets the opt-out line of
its locale appended here, in code, so no template can leave it out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from services.notifier.domain.selfservice import LINK_LINE

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FALLBACK_LOCALE = "en-US"
OPT_OUT_LINE = {
    ("zh-CN", "sms"): "回复TD退订",
    ("zh-CN", "email"): "如不希望再收到此类邮件，请回复“退订”。",
    ("en-US", "sms"): "Reply STOP to opt out",
    ("en-US", "email"): "To stop emails to this address, reply UNSUBSCRIBE.",
}


class UnknownTemplate(LookupError):
    pass


@dataclass(frozen=True)
class Rendered:
    locale: str
    subject: str | None
    body: str

    @property
    def digest(self) -> str:
        """What the records keep instead of the body, which carries personal data."""
        return hashlib.sha256(self.body.encode()).hexdigest()[:32]


class Renderer:
    def __init__(self, folder: Path = TEMPLATES) -> None:
        self._env = Environment(
            loader=FileSystemLoader(folder),
            undefined=StrictUndefined,
            autoescape=False,  # noqa: S701 - plain text for SMS, voice scripts and letters
            keep_trailing_newline=False,
        )
        self.locales = sorted(p.name for p in folder.iterdir() if p.is_dir())

    def has(self, template: str, channel: str) -> bool:
        return any(
            (Path(self._env.loader.searchpath[0]) / locale / f"{template}.{channel}.j2").exists()  # type: ignore[union-attr]
            for locale in self.locales
        )

    def render(
        self,
        template: str,
        channel: str,
        locale: str | None,
        context: dict[str, Any],
        link: str | None = None,
    ) -> Rendered:
        """``link``: the self-service page's address, appended to an SMS or email in the
        locale's words (before the opt-out line), so that no template can leave it out."""
        chosen = locale if locale in self.locales else FALLBACK_LOCALE
        try:
            source = self._env.get_template(f"{chosen}/{template}.{channel}.j2")
        except TemplateNotFound:
            raise UnknownTemplate(f"no template {template} for channel {channel}") from None
        text = source.render(**context).strip()
        subject = None
        if channel == "email" and text.startswith("Subject:"):
            first, _, text = text.partition("\n")
            subject = first.removeprefix("Subject:").strip()
            text = text.strip()
        if link and channel in ("sms", "email"):
            line = LINK_LINE.get(chosen, LINK_LINE[FALLBACK_LOCALE]).format(url=link)
            text = f"{text}\n\n{line}" if channel == "email" else f"{text} {line}"
        opt_out = OPT_OUT_LINE.get((chosen, channel))
        if opt_out:
            text = f"{text}\n{opt_out}" if channel == "email" else f"{text} {opt_out}"
        return Rendered(chosen, subject, text)


def cents(amount: Decimal) -> Decimal:
    """An amount as a customer reads it: whole cents (the records keep four places)."""
    return amount.quantize(Decimal("0.01"))


def offer_text(offer: dict[str, Any] | None, locale: str, overdue: Decimal, currency: str) -> str:
    if not offer:
        return ""
    kind = offer.get("kind")
    zh = locale == "zh-CN"
    if kind == "installments":
        n = int(offer.get("installments") or 1)
        each = (overdue / n).quantize(Decimal("0.01"))
        return (
            f"{n}期，每期约{each}{currency}"
            if zh
            else f"{n} monthly payments of about {each} {currency}"
        )
    if kind == "extension":
        days = offer.get("extension_days")
        return f"延期{days}天" if zh else f"an extension of {days} days"
    percent = Decimal(str(offer.get("settlement_percent") or 100))
    amount = (overdue * percent / 100).quantize(Decimal("0.01"))
    return (
        f"{amount}{currency}（{percent}%）"
        if zh
        else f"{amount} {currency} ({percent}% of what is owed)"
    )
