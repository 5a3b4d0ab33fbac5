"""PII redaction of prompts and responses before anything is stored or put on a span.

This module owns the detectors (emails, phone numbers, payment cards with the Luhn check, IBANs
with the mod-97 check, in any case, US SSNs, IPv4/IPv6 addresses, provider API keys, AWS secret
keys, Authorization headers, bearer tokens, JWTs and passwords, plus the user's own patterns) and
replacing what they find with ``[KIND]`` placeholders. It is tuned to leave ordinary text alone:
order numbers, dates, times, versions, numbered sections and ``name@2x.png`` assets are not PII,
and checksums (Luhn, mod-97) or validity rules (SSN areas, octet ranges, IBAN countries, the North
American numbering plan) reject look-alikes. Each key pattern runs only when one of its literal
needles is in the text, so an ordinary prompt pays for a few substring tests. It does
not own when payloads are captured (``hooks``) nor where they are written (``payloads`` table).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

# Secret patterns, each with the literal needles one of which a match must contain: a pattern runs
# only when a needle is in the text (a substring test costs ~nothing), so the per-call cost stays
# low on ordinary prompts. The key formats follow the maintained plugins of detect-secrets (AWS,
# GitHub, Slack, Stripe, OpenAI, private keys), ported as regexes: detect-secrets itself scans
# lines and reports line numbers, not spans, and loads every plugin per scan.
_SECRET_PATTERNS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("eyJ",), r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}"),  # JWT
    # OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-api03-, sk-ant-admin01-)
    (("sk-",), r"(?<![A-Za-z0-9])sk-(?:proj-|ant-(?:api|admin)\d\d-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    (("gh", "github_pat_"), r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{50,}"),
    (("xox", "xapp-"), r"\bxox[abposre]-[A-Za-z0-9-]{10,}|\bxapp-\d-[A-Za-z0-9-]{10,}"),  # Slack tokens
    (("hooks.slack.com",), r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,}"),
    (
        ("A3T", "ABIA", "ACCA", "AKIA", "ASIA"),
        r"\b(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}\b",
    ),  # AWS id
    (("AIza",), r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"),  # Google API key
    (("glpat-",), r"\bglpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    (("hf_",), r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face
    (("_live_", "_test_"), r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b"),  # Stripe
    (("PRIVATE KEY",), r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
)
_SECRET_RES: Final = tuple((needles, re.compile(rx)) for needles, rx in _SECRET_PATTERNS)
# An AWS secret access key (40 base64 characters) is only told from other base64 by the words
# around it, as detect-secrets does: "aws", "secret" or "access" within the 80 characters before.
_AWS_SECRET_RE: Final = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_CONTEXT_RE: Final = re.compile(r"(?i)aws|secret|access")
# Authorization headers: the credential after the scheme, however short; without a scheme, a
# credential-like value of 16+ characters. ``Basic`` outside a header only when it decodes to user:pw.
_AUTH_HEADER_RE: Final = re.compile(
    r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:basic|bearer|token|digest|negotiate|apikey|sso-key)\s+([^\s\"',;]+)|([A-Za-z0-9._~+/=-]{16,}))"
)
_BEARER_RE: Final = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)")
_BASIC_RE: Final = re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{6,}={0,2})(?![\w+/=])")
# name = value, name: value, "name": "value" for key-like names (aws_secret_access_key, X-Api-Key …).
_ASSIGNED_RE: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9])[\w.-]*?(?:api[_-]?key|secret(?:[_-]?(?:access[_-]?)?key)?|access[_-]?token|"
    r"auth[_-]?token|token|credentials?)[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{8,})"
)
# Passwords: "password: hunter2" / "pwd=hunter2" (4+ characters), and "password is hunter2" when
# the word after "is" looks like a password (a digit or a symbol in it, or quoted), so that
# "the password is in the vault" stays.
_PASSWORD_RE: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?:[\w-]*?passw(?:or)?d|passphrase|passcode|pwd)[\"']?"
    r"(?:\s*[:=]\s*[\"']?([^\s\"',;]*[^\s\"',;.)\]}])"
    r"|\s+(?:is|was|will be|=)\s+(?:[\"'`]([^\s\"'`]{4,})[\"'`]"
    r"|((?=[^\s]*[\d\W_])[^\s\"',;]{3,}[^\s\"',;.!?)\]}])))"
)
_PASSWORD_MIN: Final = 4
_EMAIL_RE: Final = re.compile(
    # Letters of any script (RFC 6531 local parts, internationalised domain names).
    r"(?<![\w.%+-])[^\W_](?:[\w.%+-]{0,63})?@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}(?![\w-])"
)
# "name@2x.png", "icon@3x.webp": asset names, not addresses.
_NOT_EMAIL_RE: Final = re.compile(
    r"@\d+(?:\.\d+)?x\.|\.(?:png|jpe?g|gif|svg|webp|ico|bmp|tiff?|avif|heic|css|m?js|map|woff2?|ttf)$",
    re.IGNORECASE,
)
_IBAN_COUNTRY_CODES: Final = (
    "AD AE AL AT AZ BA BE BG BH BI BR BY CH CR CY CZ DE DJ DK DO EE EG ES FI FK FO FR GB GE GI GL GR GT "
    "HN HR HU IE IL IQ IS IT JO KW KZ LB LC LI LT LU LV LY MC MD ME MK MN MR MT MU NI NL NO OM PK PL PS "
    "PT QA RO RS RU SA SC SD SE SI SK SM SO ST SV TL TN TR UA VA VG XK YE"
)
IBAN_COUNTRIES: Final = frozenset(_IBAN_COUNTRY_CODES.split())
"""Countries that issue IBANs (ISO 13616 registry): "at12 …" in prose is not one."""
_IBAN_RE: Final = re.compile(r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD_RE: Final = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
# Dotted card numbers only in the printed groupings (4.4.4.4[.1-3], Amex 4.6.5): versions and
# addresses also have dots.
_DOTTED_CARD_RE: Final = re.compile(
    r"(?<![\w.,-])(?:\d{4}\.\d{4}\.\d{4}\.\d{4}(?:\.\d{1,3})?|\d{4}\.\d{6}\.\d{5})(?![\w-]|[.,]\d)"
)
_SSN_RE: Final = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")
_IPV4_RE: Final = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?:/\d{1,2})?(?![\w]|\.\d)"
)
# "Section 1.2.3.4", "clause 2.1.4.3": numbered headings, not addresses.
_NUMBERING_RE: Final = re.compile(
    r"(?i)(?:\b(?:section|sections|sec|chapter|ch|clause|paragraph|para|article|art|appendix|step|"
    r"figure|fig|table|item|rule|part|version|ver|release|build|edition)\.?|§)\s*$"
)
_IPV6_RE: Final = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
_PHONE_RES: Final = (
    # International, with the + prefix: +44 20 7946 0958, +1-415-555-2671, +49 (30) 1234567
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,5})){1,6}(?![\w]|[.-]\d)"),
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671
    re.compile(r"(?<![\w.$/-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.-]\d)"),
    # National trunk prefix 0: 020 7946 0958, 030-1234-5678, 06 12 34 56 78
    re.compile(r"(?<![\w.$/-])0[1-9]\d{0,3}(?:[ -]\d{2,4}){2,4}(?![\w]|[.-]\d)"),
    # Ten digits without separators in the North American plan (area and exchange start 2-9,
    # optionally after a 1): 4155552671, 14155552671. Epoch seconds (1…) and 0-prefixed account
    # numbers do not fit the plan.
    re.compile(r"(?<![\w.$/#,-])1?[2-9]\d\d[2-9]\d{6}(?![\w]|[.,-]\d)"),
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
    moved = (iban[4:] + iban[:4]).upper()
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


def _secrets(text: str) -> Iterator[tuple[int, int]]:
    """Yield the spans of keys, tokens, credentials and passwords in ``text``."""
    for needles, rx in _SECRET_RES:
        if any(n in text for n in needles):
            for m in rx.finditer(text):
                yield m.span()
    lowered = text.lower()
    if "aws" in lowered or "secret" in lowered or "access" in lowered:
        for m in _AWS_SECRET_RE.finditer(text):
            key = m.group()
            mixed = (
                any(c.isupper() for c in key) + any(c.islower() for c in key) + any(c.isdigit() for c in key)
            )
            if mixed >= 3 and _AWS_CONTEXT_RE.search(text, max(0, m.start() - 80), m.start()):
                yield m.span()
    if "authorization" in lowered:
        for m in _AUTH_HEADER_RE.finditer(text):
            yield m.span(1) if m.group(1) is not None else m.span(2)
    if "bearer" in lowered:
        for m in _BEARER_RE.finditer(text):
            yield m.span(1)
    if "basic" in lowered:
        for m in _BASIC_RE.finditer(text):
            if _is_basic_credential(m.group(1)):
                yield m.span(1)
    for m in _ASSIGNED_RE.finditer(text):
        yield m.span(1)
    if "pass" in lowered or "pwd" in lowered:
        for m in _PASSWORD_RE.finditer(text):
            group = next(g for g in (1, 2, 3) if m.group(g) is not None)
            if len(m.group(group)) >= _PASSWORD_MIN:
                yield m.span(group)


def _is_basic_credential(value: str) -> bool:
    """Tell whether ``value`` is base64 of ``user:password`` (so "basic understanding" is not)."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


def _matches(kind: str, text: str) -> Iterator[tuple[int, int]]:
    """Yield the (start, end) spans of ``kind`` in ``text`` (validated where a check exists)."""
    if kind == "secret":
        yield from _secrets(text)
    elif kind == "email":
        if "@" in text:
            for m in _EMAIL_RE.finditer(text):
                if _NOT_EMAIL_RE.search(m.group()) is None:
                    yield m.span()
    elif kind == "iban":
        for m in _IBAN_RE.finditer(text):
            raw = m.group()
            if raw[:2].upper() not in IBAN_COUNTRIES:
                continue
            # Trailing words can be swallowed by the group pattern: shorten until the check passes.
            for end in range(len(raw), 14, -1):
                if raw[end - 1] != " " and iban_ok(raw[:end].replace(" ", "")):
                    yield m.start(), m.start() + end
                    break
    elif kind == "card":
        for rx in (_CARD_RE, _DOTTED_CARD_RE):
            for m in rx.finditer(text):
                digits = re.sub(r"[ .-]", "", m.group())
                if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
                    yield m.span()
    elif kind == "ssn":
        for m in _SSN_RE.finditer(text):
            yield m.span()
    elif kind == "ip":
        for m in _IPV4_RE.finditer(text):
            if _NUMBERING_RE.search(text, max(0, m.start() - 16), m.start()) is None:
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
