"""PII redaction of prompts and responses before anything is stored or put on a span.

This module owns the detectors (emails, phone numbers, payment cards with the Luhn check, IBANs
with the mod-97 check, US SSNs, IPv4/IPv6 addresses, API keys, bearer tokens and JWTs, plus the
user's own patterns) and replacing what they find with ``[KIND]`` placeholders. It is tuned to
leave ordinary text alone: order numbers, dates, times, versions and prices are not PII, and
checksums (Luhn, mod-97) or validity rules (SSN areas, octet ranges) reject look-alikes. It does
not own when payloads are captured (``hooks``) nor where they are written (``payloads`` table).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

_SECRET_PATTERNS: Final = (
    r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",  # JWT
    r"(?<![A-Za-z0-9])sk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_-]{20,}",  # OpenAI / Anthropic
    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{50,}\b",  # GitHub
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",  # Slack
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key id
    r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API key
    r"\bglpat-[A-Za-z0-9_-]{20,}\b",  # GitLab
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b",  # Stripe
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
)
_SECRET_RE: Final = re.compile("|".join(f"(?:{p})" for p in _SECRET_PATTERNS))
_BEARER_RE: Final = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)")
_ASSIGNED_RE: Final = re.compile(
    r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|passw(?:or)?d|pwd)"
    r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{8,})"
)
_EMAIL_RE: Final = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}\b"
)
_IBAN_RE: Final = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD_RE: Final = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
_SSN_RE: Final = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")
_IPV4_RE: Final = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?:/\d{1,2})?(?![\w]|\.\d)"
)
_IPV6_RE: Final = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
_PHONE_RES: Final = (
    # International, with the + prefix: +44 20 7946 0958, +1-415-555-2671, +49 (30) 1234567
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,5})){1,6}(?![\w]|[.-]\d)"),
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671
    re.compile(r"(?<![\w.$/-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.-]\d)"),
    # National trunk prefix 0: 020 7946 0958, 030-1234-5678, 06 12 34 56 78
    re.compile(r"(?<![\w.$/-])0[1-9]\d{0,3}(?:[ -]\d{2,4}){2,4}(?![\w]|[.-]\d)"),
)

KINDS: Final = ("secret", "email", "iban", "card", "ssn", "ip", "phone")
"""Built-in kinds, in priority order: an overlap keeps the earlier kind."""


def luhn_ok(digits: str) -> bool:
    """Tell whether a digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Tell whether ``iban`` (no spaces) passes the ISO 13616 mod-97 check."""
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Finding:
    """One redacted span of the text."""

    kind: str
    start: int
    end: int


def _matches(kind: str, text: str) -> Iterator[tuple[int, int]]:
    """Yield the (start, end) spans of ``kind`` in ``text`` (validated where a check exists)."""
    if kind == "secret":
        for m in _SECRET_RE.finditer(text):
            yield m.span()
        for rx in (_BEARER_RE, _ASSIGNED_RE):
            for m in rx.finditer(text):
                yield m.span(1)
    elif kind == "email":
        for m in _EMAIL_RE.finditer(text):
            yield m.span()
    elif kind == "iban":
        for m in _IBAN_RE.finditer(text):
            # Trailing words can be swallowed by the group pattern: shorten until the check passes.
            raw = m.group()
            for end in range(len(raw), 14, -1):
                if raw[end - 1] != " " and iban_ok(raw[:end].replace(" ", "")):
                    yield m.start(), m.start() + end
                    break
    elif kind == "card":
        for m in _CARD_RE.finditer(text):
            digits = re.sub(r"[ -]", "", m.group())
            if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
                yield m.span()
    elif kind == "ssn":
        for m in _SSN_RE.finditer(text):
            yield m.span()
    elif kind == "ip":
        for m in _IPV4_RE.finditer(text):
            yield m.span()
        for m in _IPV6_RE.finditer(text):
            candidate = m.group().split("%")[0]
            groups = sum(1 for g in candidate.split(":") if g)
            if "::" not in candidate and candidate.count(":") != 7:
                continue
            if groups < 3 and candidate != "::1":  # a::b, x::y are code, not addresses
                continue
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            yield m.span()
    elif kind == "phone":
        for rx in _PHONE_RES:
            for m in rx.finditer(text):
                ndigits = sum(c.isdigit() for c in m.group())
                if 8 <= ndigits <= 15:
                    yield m.span()


class Redactor:
    """Replace PII and secrets in text with ``[KIND]`` placeholders.

    ``kinds`` selects built-in detectors (default: all of ``KINDS``); ``patterns`` adds the
    user's own, ``{"employee_id": r"\\bEMP-\\d{6}\\b"}``, which win over built-ins on overlap.
    """

    def __init__(self, kinds: Iterable[str] | None = None, patterns: Mapping[str, str] | None = None) -> None:
        chosen = tuple(KINDS if kinds is None else kinds)
        unknown = sorted(set(chosen) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown redaction kind(s) {unknown}; known: {list(KINDS)}")
        self.kinds = tuple(k for k in KINDS if k in chosen)
        self.patterns = {name: re.compile(rx) for name, rx in (patterns or {}).items()}

    def findings(self, text: str) -> list[Finding]:
        """Return the non-overlapping spans to redact, in text order."""
        found: list[tuple[int, int, int, str]] = []  # (priority, start, end, kind)
        for prio, (name, rx) in enumerate(self.patterns.items()):
            found += [(prio, m.start(), m.end(), name) for m in rx.finditer(text) if m.end() > m.start()]
        base = len(self.patterns)
        for prio, kind in enumerate(self.kinds, start=base):
            found += [(prio, s, e, kind) for s, e in _matches(kind, text) if e > s]
        found.sort(key=lambda f: (f[0], f[1]))
        taken: list[Finding] = []
        for _, start, end, name in found:
            if all(end <= t.start or start >= t.end for t in taken):
                taken.append(Finding(name, start, end))
        return sorted(taken, key=lambda f: f.start)

    def redact(self, text: str) -> str:
        """Return ``text`` with every finding replaced by ``[KIND]`` (upper-case kind name)."""
        if not text:
            return text
        out: list[str] = []
        pos = 0
        for f in self.findings(text):
            out.append(text[pos : f.start])
            out.append(f"[{f.kind.upper()}]")
            pos = f.end
        out.append(text[pos:])
        return "".join(out)


DEFAULT_REDACTOR: Final = Redactor()


def redact(text: str) -> str:
    """Return ``text`` redacted by the default redactor (every built-in kind)."""
    return DEFAULT_REDACTOR.redact(text)
