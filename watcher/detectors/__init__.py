"""Detectors: causal, stateful scorers of one series, and the registry of their kinds.

This package owns turning a series into verdicts. Importing it registers every built-in kind
(``threshold``, ``rolling``, ``ewma``, ``seasonal``, ``rate``, ``auto``,
``drift``), so
``make_detector(rule.detector)`` works for any valid rule.
It does not own alert state (``engine.alerting``) or fetching (``sources``).
"""

from __future__ import annotations

from . import auto, drift, ewma, rate, rolling, seasonal, threshold  # noqa: F401  (register() side effect)
from .base import Detector, known_kinds, make_detector

__all__ = ["Detector", "known_kinds", "make_detector"]
