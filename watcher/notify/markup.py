"""Making data-derived text inert in a message body: Markdown escaping and link hygiene.

This module owns the rules that keep a tenant, model, feature, label value, annotation or trace note
from becoming markup in a receiver: every such string is escaped before it is placed into the
Markdown body, and only ``http``/``https`` URLs ever become links. It does not own the wording of
messages (``templates``).

Why CommonMark backslash escapes, and which characters: the body is Markdown handed to Apprise,
which converts it per service. Its Slack converter turns ``\\<`` and ``\\>`` into ``&lt;``/``&gt;``
(so ``<!channel>`` and ``<https://evil|re-auth>`` stay text) and ``\\[``/``\\]`` into the plain
characters, and escapes ``&`` itself; its Markdown → HTML conversion (e-mail, Teams,
``?format=html``) turns the same escapes into ``&lt;``/``&gt;``. Only what can start a link, an
autolink, a mention, raw HTML or a code span is escaped (``\\ ` [ ] < >``): names full of ``_`` and
``*`` stay readable, and emphasis is harmless. A bare ``&`` is left alone: both converters
entity-escape it, and a backslash before it would keep Slack from doing so.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_MD_SPECIAL = re.compile(r"([\\`\[\]<>])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_SAFE_SCHEMES = frozenset({"http", "https"})


def md_text(text: str, *, multiline: bool = False) -> str:
    """Return ``text`` escaped so that Markdown (and Slack mrkdwn after Apprise) shows it literally.

    Control characters become spaces; so do line breaks unless ``multiline`` (a label value must
    not start a new Markdown block; an annotation written on several lines keeps them).
    """
    flat = _CONTROL.sub(" ", str(text)).replace("\r", " " if not multiline else "")
    if not multiline:
        flat = flat.replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", flat)


def md_code(text: str) -> str:
    """Return ``text`` as an inline code span that no backtick in it can close early."""
    flat = _CONTROL.sub(" ", str(text)).replace("\r", " ").replace("\n", " ")
    longest = max((len(m) for m in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat.strip() else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def safe_url(url: str | None) -> str | None:
    """Return ``url`` when it is an absolute ``http(s)`` URL fit for a link, else None.

    ``javascript:``, ``data:``, relative and scheme-less values, and URLs with whitespace, control
    characters, angle brackets or ``|`` (which would break a Slack ``<url|text>`` link) never become
    links.
    """
    if not url or not isinstance(url, str):
        return None
    if _CONTROL.search(url) or any(c in url for c in " \t\r\n<>|\"'`"):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in _SAFE_SCHEMES or not parts.netloc:
        return None
    return url


def md_link(text: str, url: str | None) -> str:
    """Return a Markdown link ``[text](url)`` when ``url`` is safe, else the escaped text alone."""
    good = safe_url(url)
    label = md_text(text)
    if good is None:
        return label
    return f"[{label}]({good.replace('(', '%28').replace(')', '%29')})"


# --- Slack mrkdwn (the Slack receiver's Block Kit text objects) -----------------------------------
#
# Slack's own rule: in mrkdwn, ``&``, ``<`` and ``>`` are control characters and must be sent as
# ``&amp;``, ``&lt;`` and ``&gt;``; everything Slack turns into a link, a mention (``<!channel>``,
# ``<@U…>``, ``<#C…>``) or a date starts with ``<``, so escaping these three keeps data-derived text
# inert. There is no backslash escape in mrkdwn: ``*_~`` emphasis stays possible (harmless), and a
# backtick inside a code span is shown as a look-alike (U+02CB) so it cannot close the span. Text
# objects carrying data are also sent with ``verbatim: true`` (no auto-linking of bare URLs or
# channel names).

_SLACK_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_SLACK_SPECIAL = re.compile(r"[&<>]")


def slack_text(text: str, *, multiline: bool = False) -> str:
    """Return ``text`` escaped for Slack mrkdwn: ``& < >`` as entities, control characters as spaces."""
    flat = _CONTROL.sub(" ", str(text)).replace("\r", " " if not multiline else "")
    if not multiline:
        flat = flat.replace("\n", " ")
    return _SLACK_SPECIAL.sub(lambda m: _SLACK_ENTITIES[m.group(0)], flat)


def slack_code(text: str) -> str:
    """Return ``text`` as a Slack inline code span that nothing in it can close or break out of."""
    inner = slack_text(text).replace("`", "\u02cb")
    return f"`{inner}`" if inner.strip() else "` `"


def slack_link(text: str, url: str | None) -> str:
    """Return ``<url|text>`` when ``url`` is a safe http(s) URL, else the escaped text alone.

    ``safe_url`` refuses ``|``, ``<``, ``>`` and whitespace, which could end the link early; a
    ``&`` in the URL is sent as ``&amp;`` as Slack requires.
    """
    good = safe_url(url)
    label = slack_text(text)
    if good is None:
        return label
    return f"<{good.replace('&', '&amp;')}|{label}>"
