"""The price of a model call, from the shipped pricing table and the user's override file.

This module owns ``PRICES`` (USD per 1M tokens: input, output, cached input), loading it from
the shipped ``pricing.yaml`` (package data) and from a user file that overrides or extends it
(``load_pricing``; ``WATCHER_PRICING_FILE`` at import), and the arithmetic. An unknown model
costs 0 and is reported as unknown, never guessed. It does not own counting unknown models
(``metrics``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Final, NamedTuple

import yaml

SHIPPED_PRICING = Path(__file__).with_name("pricing.yaml")
PRICING_ENV = "WATCHER_PRICING_FILE"


class Price(NamedTuple):
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float


def _number(model: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"pricing: model {model!r}: {key} must be a number >= 0, got {value!r}")
    return float(value)


def read_pricing(path: str | Path) -> dict[str, Price]:
    """Read a pricing YAML file (``models: {name: {input, output, cached_input}}``); raise ValueError."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"pricing: cannot read {path}: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError(f"pricing: {path}: expected a mapping `models: {{name: {{input, output}}}}`")
    prices: dict[str, Price] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
            raise ValueError(f"pricing: {path}: model {name!r} needs `input` and `output`")
        unknown = set(entry) - {"input", "output", "cached_input"}
        if unknown:
            raise ValueError(f"pricing: {path}: model {name!r}: unknown key(s) {sorted(unknown)}")
        inp = _number(str(name), "input", entry["input"])
        prices[str(name)] = Price(
            inp,
            _number(str(name), "output", entry["output"]),
            _number(str(name), "cached_input", entry.get("cached_input", inp)),
        )
    return prices


PRICES: dict[str, Price] = read_pricing(SHIPPED_PRICING)
_PREFIX_CACHE: dict[str, Price | None] = {}  # prefix matches; cleared whenever PRICES changes
_PREFIX_CACHE_MAX: Final = 1024


def load_pricing(path: str | Path | None = None, *, replace: bool = False) -> dict[str, Price]:
    """Merge the user's pricing file into ``PRICES`` (or replace it) and return the table.

    Without ``path``, ``$WATCHER_PRICING_FILE`` is used when set. Raises ValueError on a bad file
    (the table is unchanged).
    """
    path = path or os.environ.get(PRICING_ENV) or None
    if path is None:
        return PRICES
    user = read_pricing(path)
    if replace:
        PRICES.clear()
    PRICES.update(user)
    _PREFIX_CACHE.clear()
    return PRICES


def price_of(model: str) -> Price | None:
    """Return the price of ``model``: an exact entry, else the longest entry it starts with.

    Providers answer with dated names (``gpt-4o-2024-08-06``), hence the prefix match. Change
    ``PRICES`` through ``load_pricing`` only: it clears the cache of prefix matches.
    """
    price = PRICES.get(model)
    if price is not None or not model:
        return price
    # The prefix scan runs once per model name: dated names repeat on every call.
    if model in _PREFIX_CACHE:
        return _PREFIX_CACHE[model]
    best = ""
    for name in PRICES:
        if model.startswith(name) and len(name) > len(best):
            best = name
    found = PRICES[best] if best else None
    if len(_PREFIX_CACHE) >= _PREFIX_CACHE_MAX:
        _PREFIX_CACHE.clear()
    _PREFIX_CACHE[model] = found
    return found


def cost_usd(model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> tuple[float, bool]:
    """Compute the cost of a call and whether the model's price is known.

    ``cached_tokens`` are part of ``input_tokens`` (OpenAI and Anthropic-cache-read semantics)
    and are charged at the cached rate; reasoning tokens are part of ``output_tokens``.
    """
    price = price_of(model)
    if price is None:
        return 0.0, False
    cached = min(max(cached_tokens, 0), max(input_tokens, 0))
    fresh = max(input_tokens, 0) - cached
    total = fresh * price.input + cached * price.cached_input + max(output_tokens, 0) * price.output
    return total / 1e6, True


if os.environ.get(PRICING_ENV):
    try:  # a bad user file must not break the application's import; the shipped table stays
        load_pricing()
    except ValueError as exc:
        logging.getLogger(__name__).warning("%s; using the shipped prices", exc)
