"""Pricing: the cost of one usage event, resolved in one order for every source.

1. the cost recorded on the line itself (a finite number >= 0; a recorded 0 is a known $0);
2. a `[[prices]]` entry of the config matching (provider, model), exactly or after
   normalisation of both ids;
3. the price table shipped in usaged/data/prices.toml (Anthropic models, normalised ids; a
   `family_from` entry also prices later versions of its family, e.g. claude-opus-4-8);
4. otherwise unpriced: tokens count, cost unknown (never $0).
Pure: the table is loaded once and passed around.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from usaged.config import PriceOverride
from usaged.values import CostSource, PricedEvent, Tokens, UsageEvent

_DATE_SUFFIX = re.compile(r"[-@]\d{8}$")
_BEDROCK_SUFFIX = re.compile(r"-v\d+(:\d+)?$")
_CONTEXT_MARK = re.compile(r"\[[^\]]*\]$")
_FAMILY_FIRST = re.compile(r"^claude-(opus|sonnet|haiku)-(\d+)(?:-(\d+))?$")
_VERSION_FIRST = re.compile(r"^claude-(\d+)(?:-(\d+))?-(opus|sonnet|haiku)$")
_FAMILY_FIRST_FROM = 4  # Anthropic writes claude-3-5-haiku but claude-haiku-4-5


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens by kind (web_search: USD per request)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float
    web_search: float = 0.0
    long_threshold: int | None = None
    long: Rates | None = None

    def cost(self, t: Tokens) -> float:
        """The whole call at one rate: the long-context rate when the prompt side (input +
        cache writes + cache reads) exceeds the threshold, else the base rate."""
        rates = self.long if self.long and self.long_threshold and t.prompt > self.long_threshold \
            else self
        five_minute = t.cache_write - t.cache_write_1h
        per_million = (t.input * rates.input + t.output * rates.output
                       + t.cache_read * rates.cache_read + five_minute * rates.cache_write
                       + t.cache_write_1h * rates.cache_write_1h)
        return per_million / 1e6 + t.web_search * self.web_search


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The shipped table: rates per normalised model id, plus family rules.

    `families` maps a family ("opus") to (first version, rates) pairs: a model of that family
    not in `models` takes the rates of the latest pair whose version is not above its own.
    """

    effective_date: str
    provider: str
    models: Mapping[str, Rates]
    families: Mapping[str, tuple[tuple[tuple[int, int], Rates], ...]] = field(
        default_factory=dict)

    def lookup(self, provider: str, model: str) -> Rates | None:
        if provider != self.provider:
            return None
        name = normalise_model(model)
        rates = self.models.get(name)
        if rates is not None:
            return rates
        parsed = family_version(name)
        if parsed is None:
            return None
        family, version = parsed
        best: Rates | None = None
        for since, candidate in self.families.get(family, ()):
            if since <= version:
                best = candidate
        return best


@dataclass(frozen=True, slots=True)
class Pricer:
    """Resolves costs: the line's own cost, then config overrides, then the shipped table."""

    table: PriceTable
    overrides: Mapping[tuple[str, str], Rates]
    normalised_overrides: Mapping[tuple[str, str], Rates] = field(default_factory=dict)
    # (provider, model) -> the rates that apply and where they come from, looked up once
    found: dict[tuple[str, str], tuple[Rates | None, CostSource]] = field(
        default_factory=dict, repr=False, compare=False)

    def price(self, event: UsageEvent) -> PricedEvent:
        return PricedEvent(event, *self.price_of(event))

    def price_of(self, event: UsageEvent) -> tuple[float | None, CostSource]:
        """The cost of one event and where it comes from (`price` without the wrapper)."""
        if event.line_cost is not None:
            return event.line_cost, "line"
        return self.cost_of(event.provider, event.model, event.tokens)

    def cost_of(self, provider: str, model: str, tokens: Tokens) -> tuple[float | None,
                                                                          CostSource]:
        found = self.found.get((provider, model))
        if found is None:
            found = self.found[(provider, model)] = self._rates_for(provider, model)
        rates, source = found
        return (None, source) if rates is None else (rates.cost(tokens), source)

    def _rates_for(self, provider: str, model: str) -> tuple[Rates | None, CostSource]:
        rates = self.overrides.get((provider, model)) or self.normalised_overrides.get(
            (provider, normalise_model(model)))
        if rates is not None:
            return rates, "config"
        rates = self.table.lookup(provider, model)
        if rates is not None:
            return rates, "table"
        return None, "none"

    def __call__(self, provider: str, model: str, tokens: Tokens) -> tuple[float | None,
                                                                           CostSource]:
        """A Pricer is the `cost_of` callable that `Ledger.reprice` takes."""
        return self.cost_of(provider, model, tokens)


@functools.lru_cache(maxsize=4096)
def normalise_model(model: str) -> str:
    """One id per model, as Anthropic writes it.

    `anthropic/claude-sonnet-4-5-20250929[1m]` -> `claude-sonnet-4-5`; `claude-4.6-sonnet` and
    `claude-4-6-sonnet` -> `claude-sonnet-4-6`; `claude-haiku-3-5` -> `claude-3-5-haiku`.
    Ids that are not Claude models only lose a provider prefix and a context marker.
    """
    name = _CONTEXT_MARK.sub("", model.strip()).strip()
    name = name.rsplit("/", 1)[-1]
    lowered = name.lower()
    if "claude" not in lowered:
        return name
    name = lowered[lowered.index("claude"):]  # Bedrock: `us.anthropic.claude-...`
    name = _BEDROCK_SUFFIX.sub("", name)
    name = _DATE_SUFFIX.sub("", name).replace(".", "-")
    if m := _VERSION_FIRST.match(name):
        major, minor, family = m.groups()
    elif m := _FAMILY_FIRST.match(name):
        family, major, minor = m.groups()
    else:
        return name
    version = f"{major}-{minor}" if minor is not None else major
    if int(major) >= _FAMILY_FIRST_FROM:
        return f"claude-{family}-{version}"
    return f"claude-{version}-{family}"


def family_version(name: str) -> tuple[str, tuple[int, int]] | None:
    """`claude-opus-4-8` -> ("opus", (4, 8)); None for ids outside the claude-<family>-<n> form.
    Expects a normalised id."""
    m = _FAMILY_FIRST.match(name)
    if m is None:
        m2 = _VERSION_FIRST.match(name)
        if m2 is None:
            return None
        major, minor, family = m2.groups()
    else:
        family, major, minor = m.groups()
    return family, (int(major), int(minor or 0))


def _rates(raw: Mapping[str, object], long: bool = False) -> Rates:
    prefix = "long_" if long else ""

    def get(name: str) -> float:
        """A long-context rate left unset falls back to the base rate of the same kind."""
        value = raw.get(prefix + name)
        if value is None and long:
            value = raw.get(name)
        if value is None:
            return 0.0
        assert isinstance(value, int | float)
        return float(value)

    write = get("cache_write")
    write_1h = raw.get(prefix + "cache_write_1h")
    if write_1h is None and long:
        write_1h = raw.get("cache_write_1h")
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


def parse_table(data: Mapping[str, Any]) -> PriceTable:
    """A price table from its TOML data (see usaged/data/prices.toml for the format)."""
    models: dict[str, Rates] = {}
    families: dict[str, list[tuple[tuple[int, int], Rates]]] = {}
    for entry in data["models"]:
        rates = rates_from(entry)
        for model_id in entry["ids"]:
            models[normalise_model(model_id)] = rates
        since = entry.get("family_from")
        if since is not None:
            parsed = family_version(normalise_model(since))
            if parsed is None:
                raise ValueError(f"prices.toml: family_from {since!r} is not a claude-<family>-"
                                 "<version> id")
            families.setdefault(parsed[0], []).append((parsed[1], rates))
    return PriceTable(
        effective_date=str(data["effective_date"]), provider=str(data["provider"]),
        models=models,
        families={name: tuple(sorted(pairs, key=lambda p: p[0]))
                  for name, pairs in families.items()})


def load_table() -> PriceTable:
    text = resources.files("usaged").joinpath("data/prices.toml").read_text("utf-8")
    return parse_table(tomllib.loads(text))


def make_pricer(overrides: tuple[PriceOverride, ...], table: PriceTable | None = None) -> Pricer:
    exact = {(o.provider, o.model): rates_from(o.rates) for o in overrides}
    normalised: dict[tuple[str, str], Rates] = {}
    for (provider, model), rates in exact.items():
        normalised.setdefault((provider, normalise_model(model)), rates)
    return Pricer(table=table or load_table(), overrides=exact, normalised_overrides=normalised)
