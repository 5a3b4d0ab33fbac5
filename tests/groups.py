"""Rule groups the engine and notify tests share."""

from __future__ import annotations

from typing import Any


def cost_group(**rule: Any) -> dict[str, Any]:
    """Return group ``g`` (every minute) with one rule, ``CostHigh``: a tenant's spend rate above 10.

    ``rule`` adds or overrides keys of the rule (``for`` is a keyword: pass ``**{"for": "2m"}``).
    """
    return {
        "name": "g",
        "interval": "1m",
        "rules": [
            {
                "alert": "CostHigh",
                "expr": "sum by (tenant) (rate(llm_cost_usd_total[5m]))",
                "detector": {"kind": "threshold", "above": 10},
                **rule,
            }
        ],
    }
