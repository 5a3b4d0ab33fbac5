"""Routing: which receivers hear about an alert whose rule names none.

This module owns the walk over ``route.routes`` (label equality and anchored RE2 regex matches, first
match wins unless ``continue: true``) and the default receivers. It does not own muting, grouping
nor delivery. A route may carry its own grouping settings (``group_by``, ``group_wait``,
``group_interval``, ``repeat_interval``); ``route_targets`` hands the route that chose each
receiver to ``grouping``, which lets them override the receiver's and ``notify``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..config import RouteRule, RouteSettings
from ..regex import full_match

logger = logging.getLogger(__name__)


def _route_matches(match: Mapping[str, str], match_re: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    if any(labels.get(k, "") != v for k, v in match.items()):
        return False
    try:
        return all(full_match(v, labels.get(k, "")) for k, v in match_re.items())
    except ValueError as exc:
        logger.warning("route match_re is not a valid regex: %s", exc)
        return False


def route_targets(route: RouteSettings, labels: Mapping[str, str]) -> list[tuple[str, RouteRule | None]]:
    """Return (receiver, the route that chose it) for ``labels``; the default receivers with None.

    Routes are tried in order; a matching route adds its receivers and stops the walk unless it has
    ``continue: true``. A receiver chosen by several routes keeps the first. Labels missing from the
    alert compare as the empty string.
    """
    chosen: dict[str, RouteRule | None] = {}
    matched = False
    for r in route.routes:
        if _route_matches(r.match, r.match_re, labels):
            matched = True
            for name in r.receivers:
                chosen.setdefault(name, r)
            if not r.continue_:
                break
    return list(chosen.items()) if matched else [(name, None) for name in dict.fromkeys(route.receivers)]


def route_receivers(route: RouteSettings, labels: Mapping[str, str]) -> list[str]:
    """Return the receivers of the routes that match ``labels``, or the default receivers."""
    return [name for name, _ in route_targets(route, labels)]
