"""Prices: the maintained table by exact names, cache reads and writes, tiers, unknown models, overrides."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.instrument import pricing
from watcher.instrument.pricing import Price, cost_usd, load_pricing, price_of, read_pricing


@pytest.fixture(autouse=True)
def no_user_prices() -> Iterator[None]:
    saved = dict(pricing.PRICES)
    pricing.PRICES.clear()
    yield
    pricing.PRICES.clear()
    pricing.PRICES.update(saved)


def known(model: str, provider: str = "") -> Price:
    price = price_of(model, provider)
    assert price is not None, model
    return price


def test_variants_are_not_priced_as_their_base_model() -> None:
    """The hand table matched by prefix: o3-pro at o3's price, gpt-5-pro at gpt-5's, opus-4-6 at opus-4's."""
    assert known("o3-pro", "openai").input >= 5 * known("o3", "openai").input
    assert known("gpt-5-pro", "openai").output >= 5 * known("gpt-5", "openai").output
    assert known("claude-opus-4-6", "anthropic").input < known("claude-opus-4-20250514", "anthropic").input
    assert known("o4-mini-deep-research", "openai") != known("o4-mini", "openai")


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-2024-08-06", "openai"),
        ("gemini-2.5-flash", "gcp.gemini"),
        ("o1", "openai"),
        ("gpt-4-turbo", ""),
        ("claude-3-opus-20240229", "anthropic"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "aws.bedrock"),
    ],
)
def test_models_the_hand_table_lacked_are_known(model: str, provider: str) -> None:
    cost, ok = cost_usd(model, 1000, 100, provider=provider)
    assert ok and cost > 0


def test_no_prefix_guessing_and_unknown_models_are_flagged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="watcher.instrument.pricing"):
        for _ in range(3):
            assert cost_usd("gpt-4o-mini-2099-01-01", 1000, 100, provider="openai") == (0.0, False)
        assert cost_usd("my-finetune", 10, 10) == (0.0, False)
    warned = [r.getMessage() for r in caplog.records]
    assert sum("gpt-4o-mini-2099-01-01" in m for m in warned) == 1  # logged once per model
    assert price_of("") is None


def test_cache_reads_and_writes_at_their_own_rates() -> None:
    price = known("claude-sonnet-4-20250514", "anthropic")
    assert price.cache_write == pytest.approx(1.25 * price.input)  # 5-minute cache writes
    assert price.cached_input == pytest.approx(0.1 * price.input)
    # 10k input of which 2k read from the cache and 5k written to it, 1k output
    cost, ok = cost_usd("claude-sonnet-4-20250514", 10_000, 1_000, 2_000, 5_000, provider="anthropic")
    expected = (
        3_000 * price.input + 2_000 * price.cached_input + 5_000 * price.cache_write + 1_000 * price.output
    )
    assert ok and cost == pytest.approx(expected / 1e6)
    # counts that do not add up are clipped, never negative
    assert cost_usd("claude-sonnet-4-20250514", 100, 0, 80, 80, provider="anthropic")[0] > 0


def test_long_context_tier_applies_to_every_token() -> None:
    price = known("claude-sonnet-4-5", "anthropic")
    assert price.tiers, "claude-sonnet-4-5 has a long-context tier"
    start, tier = price.tiers[0]
    below = cost_usd("claude-sonnet-4-5", start, 0, provider="anthropic")[0]
    above = cost_usd("claude-sonnet-4-5", start + 1, 0, provider="anthropic")[0]
    assert below == pytest.approx(start * price.input / 1e6)
    assert above == pytest.approx((start + 1) * tier.input / 1e6) and tier.input > price.input


def test_user_file_wins_and_lists_aliases(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n"
        "  gpt-4o-mini: {input: 1.0, output: 2.0}\n"
        "  my-finetune: {input: 4.0, output: 8.0, cached_input: 0.4, cache_write: 5.0,"
        " aliases: [ft:gpt-4o-mini:acme:v2]}\n"
    )
    load_pricing(path)
    assert cost_usd("gpt-4o-mini", 1_000_000, 0, provider="openai") == (1.0, True)
    assert cost_usd("ft:gpt-4o-mini:acme:v2", 0, 1_000_000) == (8.0, True)
    assert known("my-finetune") == Price(4.0, 8.0, 0.4, 5.0)
    assert known("gpt-4o-mini").cached_input == 1.0  # defaults to the input price


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("models: [a]", "expected a mapping"),
        ("models: {m: {input: 1}}", "needs `input` and `output`"),
        ("models: {m: {input: 1, output: -2}}", "output must be a number >= 0"),
        ("models: {m: {input: 1, output: 2, cahced_input: 1}}", "unknown key(s) ['cahced_input']"),
        ("models: {m: {input: 1, output: 2, aliases: m2}}", "aliases must be a list"),
    ],
)
def test_bad_price_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="pricing: ") as excinfo:
        read_pricing(path)
    assert needle in str(excinfo.value)
