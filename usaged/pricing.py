"""Pricing: the cost of one usage event, resolved in one order for every source.

1. the cost recorded on the line itself (a finite number >= 0; a recorded 0 is a known $0);
2. a `[[prices]]` entry of the config matching (provider, model);
3. the price table shipped in usaged/data/prices.toml (Anthropic models, normalised ids);
4. otherwise unpriced: tokens count, cost unknown (never $0).
Pure: the table is loaded once and passed around.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from usaged.config import PriceOverride
from usaged.values import CostSource, PricedEvent, Tokens, UsageEvent

_DATE_SUFFIX = re.compile(r"-\d{8}$")
_CONTEXT_MARK = re.compile(r"\[[^\]]*\]$")
_REVERSED = re.compile(r"^claude-(\d+)[.-](\d+)-(opus|sonnet|haiku)$")
_REVERSED_MAJOR = re.compile(r"^claude-(\d+)-(opus|sonnet|haiku)$")


@dataclass(frozen=True, slots=True)
class Rates:
    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float
    web_search: float = 0.0
    long_threshold: int | None = None
    long: Rates | None = None

    def cost(self, t: Tokens) -> float:
        rates = self.long if self.long and self.long_threshold and t.prompt > self.long_threshold \
            else self
        five_minute = t.cache_write - t.cache_write_1h
        per_million = (t.input * rates.input + t.output * rates.output
                       + t.cache_read * rates.cache_read + five_minute * rates.cache_write
                       + t.cache_write_1h * rates.cache_write_1h)
        return per_million / 1e6 + t.web_search * self.web_search


@dataclass(frozen=True, slots=True)
class PriceTable:
    effective_date: str
    provider: str
    models: Mapping[str, Rates]

    def lookup(self, provider: str, model: str) -> Rates | None:
        if provider != self.provider:
            return None
        return self.models.get(normalise_model(model))


@dataclass(frozen=True, slots=True)
class Pricer:
    """Resolves costs: config overrides first, then the shipped table."""

    table: PriceTable
    overrides: Mapping[tuple[str, str], Rates]

    def price(self, event: UsageEvent) -> PricedEvent:
        if event.line_cost is not None:
            return PricedEvent(event, event.line_cost, "line")
        cost, source = self.cost_of(event.provider, event.model, event.tokens)
        return PricedEvent(event, cost, source)

    def cost_of(self, provider: str, model: str, tokens: Tokens) -> tuple[float | None,
                                                                          CostSource]:
        rates = self.overrides.get((provider, model))
        if rates is not None:
            return rates.cost(tokens), "config"
        rates = self.table.lookup(provider, model)
        if rates is not None:
            return rates.cost(tokens), "table"
        return None, "none"


def normalise_model(model: str) -> str:
    """`anthropic/claude-sonnet-4-5-20250929[1m]` -> `claude-sonnet-4-5`; `claude-4.6-sonnet`
    -> `claude-sonnet-4-6`."""
    name = model.strip().lower()
    name = _CONTEXT_MARK.sub("", name)
    name = name.rsplit("/", 1)[-1]
    name = _DATE_SUFFIX.sub("", name)
    if m := _REVERSED.match(name):
        name = f"claude-{m.group(3)}-{m.group(1)}-{m.group(2)}"
    elif m := _REVERSED_MAJOR.match(name):
        name = f"claude-{m.group(2)}-{m.group(1)}"
    return name.replace(".", "-")


def _rates(raw: Mapping[str, object], long: bool = False) -> Rates:
    prefix = "long_" if long else ""

    def get(name: str, default: float | None = 0.0) -> float:
        value = raw.get(prefix + name)
        if value is None:
            return float(default) if default is not None else 0.0
        assert isinstance(value, int | float)
        return float(value)

    write = get("cache_write")
    write_1h = raw.get(prefix + "cache_write_1h")
    return Rates(
        input=get("input"), output=get("output"), cache_read=get("cache_read"),
        cache_write=write,
        cache_write_1h=float(write_1h) if isinstance(write_1h, int | float) else write,
        web_search=get("web_search"),
    )


def rates_from(raw: Mapping[str, object]) -> Rates:
    base = _rates(raw)
    threshold = raw.get("long_context_threshold")
    if isinstance(threshold, int | float) and raw.get("long_input") is not None:
        long = _rates(raw, long=True)
        return Rates(base.input, base.output, base.cache_read, base.cache_write,
                     base.cache_write_1h, base.web_search, int(threshold), long)
    return base


def load_table() -> PriceTable:
    text = resources.files("usaged").joinpath("data/prices.toml").read_text("utf-8")
    data = tomllib.loads(text)
    models: dict[str, Rates] = {}
    for entry in data["models"]:
        rates = rates_from(entry)
        for model_id in entry["ids"]:
            models[model_id] = rates
    return PriceTable(effective_date=str(data["effective_date"]), provider=data["provider"],
                      models=models)


def make_pricer(overrides: tuple[PriceOverride, ...], table: PriceTable | None = None) -> Pricer:
    return Pricer(
        table=table or load_table(),
        overrides={(o.provider, o.model): rates_from(o.rates) for o in overrides},
    )
