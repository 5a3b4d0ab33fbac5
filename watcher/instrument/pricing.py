"""The price of a model call, from a small built-in table.

This module owns ``PRICES`` (USD per 1M tokens: input, output, cached input) and the arithmetic.
An unknown model costs 0 and is reported as unknown, never guessed. It does not own the
user-overridable YAML pricing file (a later addition that will update ``PRICES``).
"""

from __future__ import annotations

from typing import NamedTuple


class Price(NamedTuple):
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float


PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "claude-opus-4": Price(15.00, 75.00, 1.50),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
}


def price_of(model: str) -> Price | None:
    """Return the price of ``model``: an exact entry, else the longest entry it starts with.

    Providers answer with dated names (``gpt-4o-2024-08-06``), hence the prefix match.
    """
    price = PRICES.get(model)
    if price is not None or not model:
        return price
    best = ""
    for name in PRICES:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return PRICES[best] if best else None


def cost_usd(
    model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> tuple[float, bool]:
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
