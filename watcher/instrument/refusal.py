"""Refusal detection on a model's output text: a configurable phrase classifier.

This module owns the built-in refusal phrases and matching them against the start of a
response (refusals open with the apology; a long answer that later says "I can't" is not one).
It does not own the provider signals (``finish_reason`` ``content_filter``, refusal fields:
the wrappers read those) nor counting refusals (``metrics``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

DEFAULT_PHRASES: Final = (
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "sorry, i can't help with",
    "sorry, but i can't help with",
    "i can't help with that",
    "i cannot help with that",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to help with",
    "i am unable to help with",
    "i'm not able to help with",
    "i won't be able to help with",
    "i can't provide",
    "i cannot provide",
    "i must decline",
    "i'm not able to provide",
    "as an ai language model, i cannot",
)
HEAD_CHARS: Final = 200


class RefusalClassifier:
    """Tell whether a response is a refusal by phrases near its start (case-insensitive).

    ``phrases=None`` uses ``DEFAULT_PHRASES``; an empty sequence turns the classifier off.
    """

    def __init__(self, phrases: Sequence[str] | None = None, head_chars: int = HEAD_CHARS) -> None:
        chosen = DEFAULT_PHRASES if phrases is None else tuple(phrases)
        self.phrases = tuple(p.lower().replace("’", "'") for p in chosen if p.strip())
        self.head_chars = head_chars
        self._rx = re.compile("|".join(re.escape(p) for p in self.phrases)) if self.phrases else None

    def __call__(self, text: str | None) -> bool:
        """Return True when ``text`` opens with a refusal phrase."""
        if self._rx is None or not text:
            return False
        head = text[: self.head_chars].lower().replace("’", "'")
        return self._rx.search(head) is not None
