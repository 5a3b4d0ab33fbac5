"""The default metric labels of the hooks, apart from ``metrics`` so that settings need no prometheus_client.

This module owns the defaults only; ``metrics`` owns the metrics and the label guard.
"""

from __future__ import annotations

from typing import Final

DEFAULT_LABELS: Final = ("tenant", "feature")
"""Metric labels beyond provider, model and operation."""
DEFAULT_LABEL_LIMIT: Final = 200
"""Distinct values kept per label before new ones are folded into ``other``."""
