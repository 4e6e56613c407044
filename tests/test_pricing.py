"""Pricing: model-id normalisation, the shipped table, long context, 1 h writes, web search,
and the order in which a cost is resolved."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usaged.config import PriceOverride
from usaged.pricing import (
    Rates,
    family_version,
    load_table,
    make_pricer,
    normalise_model,
    parse_table,
)
from usaged.values import Tokens, UsageEvent

TABLE = load_table()
M = 1_000_000


def priced(model: str, tokens: Tokens, provider: str = "anthropic") -> float | None:
    cost, _ = make_pricer((), TABLE).cost_of(provider, model, tokens)
    return cost


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, abs_tol=1e-12)


# -- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "normal"), [
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("claude-opus-4-6[1m]", "claude-opus-4-6"),
    ("anthropic/claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4-5"),
    ("claude-4-6-sonnet", "claude-sonnet-4-6"),
    ("claude-4.6-sonnet", "claude-sonnet-4-6"),
    ("anthropic/claude-4-6-sonnet", "claude-sonnet-4-6"),
    ("claude-4-opus", "claude-opus-4"),
    ("claude-opus-4.5", "claude-opus-4-5"),
    ("Claude-Opus-4-5", "claude-opus-4-5"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("claude-haiku-3-5", "claude-3-5-haiku"),
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
    ("claude-zeta-9-20301231", "claude-zeta-9"),
    ("openrouter/GLM-4.6", "GLM-4.6"),  # not a Claude model: only the prefix goes
    ("<synthetic>", "<synthetic>"),
])
def test_model_ids_are_normalised(raw: str, normal: str) -> None:
    assert normalise_model(raw) == normal


@given(st.sampled_from(["claude", "anthropic/claude", "CLAUDE"]),
       st.sampled_from(["opus", "sonnet", "haiku"]), st.integers(3, 9), st.integers(0, 9),
       st.booleans(), st.booleans(), st.booleans())
def test_normalisation_is_idempotent_and_order_free(prefix: str, family: str, major: int,
                                                    minor: int, version_first: bool,
                                                    dated: bool, marker: bool) -> None:
    core = f"{major}-{minor}-{family}" if version_first else f"{family}-{major}-{minor}"
    raw = f"{prefix}-{core}" + ("-20250929" if dated else "") + ("[1m]" if marker else "")
    once = normalise_model(raw)
    assert normalise_model(once) == once
    flipped = f"claude-{family}-{major}-{minor}" if version_first \
        else f"claude-{major}-{minor}-{family}"
    assert normalise_model(flipped) == once


def test_family_version_reads_both_spellings() -> None:
    assert family_version("claude-opus-4-8") == ("opus", (4, 8))
    assert family_version("claude-opus-5") == ("opus", (5, 0))
    assert family_version("claude-3-5-haiku") == ("haiku", (3, 5))
    assert family_version("gpt-5") is None


# -- the shipped table ---------------------------------------------------------------------

# The spec's table (USD per million: input, output, 5 m write, 1 h write, read).
SPEC = {
    ("claude-opus-4", "claude-opus-4-1"): (15, 75, 18.75, 30, 1.50),
    ("claude-opus-4-5", "claude-opus-4-6", "claude-opus-4-7"): (5, 25, 6.25, 10, 0.50),
    ("claude-sonnet-4", "claude-sonnet-4-5", "claude-sonnet-4-6"): (3, 15, 3.75, 6, 0.30),
    ("claude-haiku-4-5",): (1, 5, 1.25, 2, 0.10),
    ("claude-3-5-haiku",): (0.80, 4, 1.00, 1.60, 0.08),
}


@pytest.mark.parametrize(("models", "rates"), list(SPEC.items()))
def test_shipped_table_has_the_spec_prices(models: tuple[str, ...],
                                           rates: tuple[float, ...]) -> None:
    for model in models:
        r = TABLE.lookup("anthropic", model)
        assert r is not None, model
        assert (r.input, r.output, r.cache_write, r.cache_write_1h, r.cache_read) == rates
        assert r.web_search == 0.01  # $10 per 1,000 requests


def test_table_has_an_effective_date_and_is_for_anthropic() -> None:
    dt.date.fromisoformat(TABLE.effective_date)
    assert TABLE.provider == "anthropic"
    assert TABLE.lookup("openai", "claude-sonnet-4-5") is None


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-opus-5", "claude-opus-5-1-20300101",
                                   "anthropic/claude-4-9-opus"])
def test_later_opus_versions_take_the_opus_4_5_prices(model: str) -> None:
    assert TABLE.lookup("anthropic", model) == TABLE.lookup("anthropic", "claude-opus-4-5")


@pytest.mark.parametrize("model", ["claude-opus-4-2", "claude-opus-3", "claude-sonnet-5",
                                   "claude-zeta-9", "gpt-5"])
def test_models_outside_the_table_and_its_family_rule_are_unpriced(model: str) -> None:
    assert TABLE.lookup("anthropic", model) is None


def test_family_from_must_name_a_versioned_model() -> None:
    with pytest.raises(ValueError, match="family_from"):
        parse_table({"effective_date": "2026-01-01", "provider": "anthropic",
                     "models": [{"ids": ["x"], "input": 1.0, "family_from": "nonsense"}]})


# -- cost rules ----------------------------------------------------------------------------


def test_five_minute_and_one_hour_writes_have_their_own_rates() -> None:
    # case 11 row 1: opus-4-5, 10,000 5 m + 40,000 1 h writes
    tokens = Tokens(input=100, output=1000, cache_read=20_000, cache_write=50_000,
                    cache_write_1h=40_000)
    assert close(priced("claude-opus-4-5", tokens), 0.498)


def test_long_context_rate_applies_to_the_whole_row_above_200k() -> None:
    at = Tokens(input=100_000, cache_read=100_000, output=1000)
    over = Tokens(input=100_001, cache_read=100_000, output=1000)
    assert close(priced("claude-sonnet-4-5", at), (100_000 * 3 + 100_000 * 0.3 + 1000 * 15) / M)
    assert close(priced("claude-sonnet-4-5", over),
                 (100_001 * 6 + 100_000 * 0.6 + 1000 * 22.5) / M)


def test_cache_writes_count_towards_the_long_context_threshold() -> None:
    tokens = Tokens(input=1, cache_write=150_000, cache_write_1h=50_000, cache_read=50_000)
    assert close(priced("claude-sonnet-4", tokens),
                 (1 * 6 + 100_000 * 7.5 + 50_000 * 12 + 50_000 * 0.6) / M)


def test_models_without_a_long_context_rate_keep_their_rate() -> None:
    tokens = Tokens(input=300_000)
    assert close(priced("claude-sonnet-4-6", tokens), 0.9)
    assert close(priced("claude-opus-4-6[1m]", tokens), 1.5)


def test_web_search_requests_cost_ten_dollars_per_thousand() -> None:
    assert close(priced("claude-sonnet-4-5", Tokens(web_search=3)), 0.03)
    assert close(priced("claude-sonnet-4-5", Tokens(input=1000, web_search=1)), 0.013)


def test_long_context_does_not_change_the_web_search_price() -> None:
    tokens = Tokens(input=250_000, web_search=2)
    assert close(priced("claude-sonnet-4-5", tokens), 250_000 * 6 / M + 0.02)


# -- resolution order ----------------------------------------------------------------------


def _event(model: str, line_cost: float | None = None, provider: str = "anthropic"
           ) -> UsageEvent:
    return UsageEvent(key=1, source="claude_code", ts=0.0, agent="a", session="s",
                      provider=provider, model=model, tokens=Tokens(input=1_000_000),
                      line_cost=line_cost)


def test_line_cost_comes_first_even_when_zero() -> None:
    pricer = make_pricer((PriceOverride("anthropic", "claude-sonnet-4-5", {"input": 9.0}),))
    assert (pricer.price(_event("claude-sonnet-4-5", 0.0)).cost,
            pricer.price(_event("claude-sonnet-4-5", 0.0)).cost_source) == (0.0, "line")


def test_config_price_beats_the_table_and_matches_normalised_ids() -> None:
    pricer = make_pricer((PriceOverride("anthropic", "claude-zeta-9-20301231",
                                        {"input": 2.0}),
                          PriceOverride("anthropic", "claude-sonnet-4-5", {"input": 9.0})))
    assert (pricer.price(_event("claude-zeta-9")).cost, pricer.price(
        _event("claude-zeta-9")).cost_source) == (2.0, "config")
    assert pricer.price(_event("claude-sonnet-4-5")).cost == 9.0


def test_table_then_unpriced_never_zero() -> None:
    pricer = make_pricer(())
    assert (pricer.price(_event("claude-sonnet-4-5")).cost_source) == "table"
    unknown = pricer.price(_event("claude-zeta-9"))
    assert (unknown.cost, unknown.cost_source) == (None, "none")
    assert pricer.price(_event("claude-sonnet-4-5", provider="ollama")).cost is None


def test_pricer_is_the_cost_callable_that_repricing_takes() -> None:
    pricer = make_pricer(())
    assert pricer("anthropic", "claude-haiku-4-5", Tokens(input=M)) == (1.0, "table")


def test_override_without_a_one_hour_rate_uses_its_five_minute_rate() -> None:
    pricer = make_pricer((PriceOverride("x", "m", {"cache_write": 4.0}),))
    rates = pricer.overrides[("x", "m")]
    assert rates == Rates(0.0, 0.0, 0.0, 4.0, 4.0)
