"""The price of a model call: the user's price file, then the maintained ``genai-prices`` table.

This module owns finding a model's price and the arithmetic. Prices come, in order, from the user's
file (``load_pricing``; ``WATCHER_PRICING_FILE`` or ``configure(pricing=...)``): exact names and the
``aliases`` each entry lists; then from ``genai-prices`` (a maintained table of providers and models,
with their cache-write and long-context prices, and each model's own list of the exact names it is
called by: ``gpt-4o-2024-08-06`` is gpt-4o, ``o3-pro`` is not o3). Nothing is matched by prefix:
a model found in neither is unknown, costs 0 with ``cost_known = false``, is logged once and counted
(``llm_cost_unknown_model_total`` in ``metrics``), never guessed.

Token semantics follow the GenAI conventions: ``input_tokens`` include cache reads (``cached``) and
cache writes (``cache_write``), each charged at its own rate (Anthropic writes at 1.25× the input
price for 5-minute entries); ``output_tokens`` include reasoning tokens. A long-context tier (Claude
and Gemini above 200k input tokens) applies its rate to every token of the call.

``genai-prices`` (and its pydantic) is imported on a background thread by ``configure`` (``warm``)
or else on the first price asked of it, never with ``watcher.instrument``; without it only the
user's file prices anything. It does not own counting
unknown models (``metrics``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

PRICING_ENV: Final = "WATCHER_PRICING_FILE"
_KEYS: Final = frozenset({"input", "output", "cached_input", "cache_write", "aliases"})
_LATEST: Final = datetime.max.replace(tzinfo=UTC)
"""The price date when a call has none: the newest prices of the table."""
PROVIDERS: Final = {
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "gemini": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "moonshot_ai": "moonshotai",
    "bedrock": "aws",
}
"""GenAI-convention provider names → genai-prices provider IDs (others are passed as they are)."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens, and the long-context tiers (``(start, Price)``: above ``start`` input tokens)."""

    input: float
    output: float
    cached_input: float
    cache_write: float
    tiers: tuple[tuple[int, Price], ...] = ()
    source: str = "user"
    """``user`` (the price file) or ``genai-prices``."""

    def at(self, input_tokens: int) -> Price:
        """Return the price that applies to a call with ``input_tokens`` (the highest tier crossed)."""
        for start, tier in reversed(self.tiers):
            if input_tokens > start:
                return tier
        return self


def _number(model: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"pricing: model {model!r}: {key} must be a number >= 0, got {value!r}")
    return float(value)


def read_pricing(path: str | Path) -> dict[str, Price]:
    """Read a price file (``models: {name: {input, output, cached_input, cache_write, aliases}}``).

    ``cached_input`` and ``cache_write`` default to ``input``; every name in ``aliases`` gets the
    entry's price. Raise ValueError (naming the file and the model) on a bad file.
    """
    import yaml  # only a process with a price file pays for the YAML parser

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
        unknown = set(entry) - _KEYS
        if unknown:
            raise ValueError(f"pricing: {path}: model {name!r}: unknown key(s) {sorted(unknown)}")
        inp = _number(str(name), "input", entry["input"])
        price = Price(
            inp,
            _number(str(name), "output", entry["output"]),
            _number(str(name), "cached_input", entry.get("cached_input", inp)),
            _number(str(name), "cache_write", entry.get("cache_write", inp)),
        )
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise ValueError(f"pricing: {path}: model {name!r}: aliases must be a list of names")
        for alias in [str(name), *aliases]:
            prices[alias] = price
    return prices


PRICES: dict[str, Price] = {}
"""The user's prices by exact name (aliases included); the maintained table is consulted after it."""
_lock = threading.Lock()
_FOUND: dict[tuple[str, str], Any] = {}  # (provider, model) → genai-prices ModelInfo, or None: unknown
_CONVERTED: dict[int, tuple[Any, Price]] = {}  # id(ModelPrice) → (that object, its Price)
_CACHE_MAX: Final = 4096
_WARNED: set[str] = set()
_genai: Any = None  # the genai-prices snapshot once imported; False when the package is missing
_warming: threading.Thread | None = None
_warm_lock = threading.Lock()


def load_pricing(path: str | Path | None = None, *, replace: bool = False) -> dict[str, Price]:
    """Merge the user's price file into ``PRICES`` (or replace it) and return it.

    Without ``path``, ``$WATCHER_PRICING_FILE`` is used when set. Raises ValueError on a bad file
    (the table is unchanged).
    """
    path = path or os.environ.get(PRICING_ENV) or None
    if path is None:
        return PRICES
    user = read_pricing(path)
    with _lock:
        if replace:
            PRICES.clear()
        PRICES.update(user)
    return PRICES


def _snapshot() -> Any:
    global _genai
    if _genai is None:
        with _lock:
            if _genai is None:
                try:
                    from genai_prices.data_snapshot import get_snapshot

                    _genai = get_snapshot()
                except ImportError:
                    log.warning("pricing: genai-prices is not installed; only the price file prices calls")
                    _genai = False
    return _genai


def warm() -> threading.Thread | None:
    """Load the maintained table on a background thread (once); return it (None: nothing to load).

    ``configure`` calls this so that the first call is priced without first importing
    ``genai-prices`` (a few hundred ms) on the hooks' finishing thread; ``import watcher.instrument``
    stays light.
    """
    global _warming
    if _genai is not None:
        return None
    with _warm_lock:
        if _warming is None:
            _warming = threading.Thread(target=_warm_table, name="watcher-prices", daemon=True)
            _warming.start()
        return _warming


def _warm_table() -> None:
    try:
        _snapshot()
    except Exception as exc:  # the first call retries, and says why
        log.warning("pricing: loading genai-prices failed (%s: %s)", type(exc).__name__, exc)


def _decimal_rate(value: Any, tier: int | None) -> float | None:
    if value is None:
        return None
    base = getattr(value, "base", None)
    if base is None:
        return float(value)
    tiers = value.tiers
    if tier is None or tier >= len(tiers):
        return float(base)
    return float(tiers[tier].price)


def _convert(model_price: Any) -> Price:
    """Return our ``Price`` of a genai-prices ``ModelPrice`` (its 5-minute cache-write rate, its tiers)."""
    fields = {k: getattr(model_price, k, None) for k in ("input_mtok", "output_mtok", "cache_read_mtok")}
    fields["cache_write_mtok"] = getattr(model_price, "cache_write_mtok", None)

    def flat(tier: int | None) -> Price:
        inp = _decimal_rate(fields["input_mtok"], tier) or 0.0
        out = _decimal_rate(fields["output_mtok"], tier) or 0.0
        read = _decimal_rate(fields["cache_read_mtok"], tier)
        write = _decimal_rate(fields["cache_write_mtok"], tier)
        return Price(
            inp, out, inp if read is None else read, inp if write is None else write, (), "genai-prices"
        )

    tiered: list[Any] = [getattr(v, "tiers", None) for v in fields.values()]
    tiered = [t for t in tiered if t]
    if not tiered:
        return flat(None)
    starts = [t.start for t in tiered[0]]
    return replace(flat(None), tiers=tuple((start, flat(i)) for i, start in enumerate(starts)))


def _from_table(model: str, provider: str, at: datetime) -> Price | None:
    try:
        return _lookup(model, provider, at)
    except Exception as exc:  # a price must never break a call: unknown, and said once
        if "\0table" not in _WARNED:
            _WARNED.add("\0table")
            log.warning("pricing: the genai-prices lookup failed (%s: %s)", type(exc).__name__, exc)
        return None


def _lookup(model: str, provider: str, at: datetime) -> Price | None:
    snapshot = _snapshot()
    if not snapshot:
        return None
    key = (provider, model)
    info = _FOUND.get(key, ...)
    if info is ...:
        provider_id = PROVIDERS.get(provider, provider) or None
        info = None
        for pid in (provider_id, None) if provider_id else (None,):
            try:
                info = snapshot.find_provider_model(model, None, pid, None)[1]
                break
            except LookupError:
                continue
        with _lock:
            if len(_FOUND) >= _CACHE_MAX:
                _FOUND.clear()
            _FOUND[key] = info
    if info is None:
        return None
    model_price = info.get_prices(at)
    entry = _CONVERTED.get(id(model_price))
    if entry is None or entry[0] is not model_price:  # held, so its id cannot be reused by another
        entry = (model_price, _convert(model_price))
        with _lock:
            if len(_CONVERTED) >= _CACHE_MAX:
                _CONVERTED.clear()
            _CONVERTED[id(model_price)] = entry
    return entry[1]


def price_of(model: str, provider: str = "", at: datetime | None = None) -> Price | None:
    """Return the price of ``model`` (the user's file, then genai-prices), or None when unknown.

    ``provider`` (a GenAI-convention name: ``openai``, ``aws.bedrock``…) narrows the table's search;
    ``at`` picks the prices in force at that time (default: the newest).
    """
    if not model:
        return None
    price = PRICES.get(model)
    if price is not None:
        return price
    found = _from_table(model, provider.lower(), at or _LATEST)
    if found is None and model not in _WARNED and len(_WARNED) < _CACHE_MAX:
        _WARNED.add(model)
        log.warning(
            "pricing: no price for model %r (provider %r): its cost is 0 and flagged unknown; "
            "add it to your price file (WATCHER_PRICING_FILE)",
            model[:128],
            provider[:64],
        )
    return found


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    *,
    provider: str = "",
    at: datetime | None = None,
) -> tuple[float, bool]:
    """Compute the cost of a call and whether the model's price is known.

    ``cached_tokens`` (cache reads) and ``cache_write_tokens`` are part of ``input_tokens`` and
    charged at their own rates; reasoning tokens are part of ``output_tokens``.
    """
    price = price_of(model, provider, at)
    if price is None:
        return 0.0, False
    total_in = max(input_tokens, 0)
    price = price.at(total_in)
    read = min(max(cached_tokens, 0), total_in)
    write = min(max(cache_write_tokens, 0), total_in - read)
    fresh = total_in - read - write
    total = (
        fresh * price.input
        + read * price.cached_input
        + write * price.cache_write
        + max(output_tokens, 0) * price.output
    )
    return total / 1e6, True


if os.environ.get(PRICING_ENV):
    try:  # a bad user file must not break the application's import
        load_pricing()
    except ValueError as exc:
        log.warning("%s; using the maintained prices only", exc)
