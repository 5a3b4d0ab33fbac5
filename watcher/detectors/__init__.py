"""Detectors: causal, stateful scorers of one series, and the registry of their kinds.

This package owns turning a series into verdicts. Importing it registers every built-in kind
(``threshold``, ``rolling``, ``ewma``, ``seasonal``, ``rate``, ``auto``, ``budget``,
``drift``), so
``make_detector(rule.detector)`` works for any valid rule.
It does not own alert state (``engine.alerting``) or fetching (``sources``).
"""

from __future__ import annotations

from . import auto, budget, drift, ewma, rate, rolling, seasonal, threshold  # noqa: F401  (register())
from .base import Detector, known_kinds, make_detector
from .budget import series_key

__all__ = ["Detector", "known_kinds", "make_detector", "series_key"]
