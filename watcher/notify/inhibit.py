"""Inhibition: a firing cause (source down, provider outage) mutes the symptoms it explains.

This module owns Alertmanager's inhibition semantics: an alert matching a rule's
``target_matchers`` is muted while another firing alert matches its ``source_matchers`` and both
have equal values (a missing label counts as empty) for every label in ``equal``. An alert never
inhibits itself. It does not own where the firing alerts come from (``pipeline``) nor matchers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..config import InhibitRule
from .silences import matcher_dicts, matches_all


def inhibiting(
    rules: Sequence[InhibitRule],
    target: Mapping[str, str],
    firing: Iterable[Mapping[str, str]],
) -> tuple[InhibitRule, Mapping[str, str]] | None:
    """Return (rule, source labels) of the first firing alert that inhibits ``target``, or None."""
    sources = list(firing)
    for rule in rules:
        if not matches_all(matcher_dicts(rule.target_matchers), target):
            continue
        source_matchers = matcher_dicts(rule.source_matchers)
        for src in sources:
            if dict(src) == dict(target) or not matches_all(source_matchers, src):
                continue
            if all(src.get(k, "") == target.get(k, "") for k in rule.equal):
                return rule, src
    return None
