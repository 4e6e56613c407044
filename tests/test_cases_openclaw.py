"""Every case in cases/openclaw (real-world bug reports) passes, static and step cases alike."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import replay
from conftest import CASES, read_json, usage_json
from test_corpus import assert_bucket

OPENCLAW = CASES / "openclaw"
STATIC = sorted(p.name for p in OPENCLAW.iterdir() if (p / "state").is_dir())
STEPS = sorted(p.name for p in OPENCLAW.iterdir() if (p / "steps").is_dir())
NOW = "2027-01-01T00:00:00+00:00"


def price_config(case: Path, expected: dict[str, Any]) -> list[dict[str, Any]]:
    if not expected.get("price_table"):
        return []
    table = read_json(case / expected["price_table"])
    names = {"cacheRead": "cache_read", "cacheWrite": "cache_write"}
    return [{names.get(k, k): v for k, v in m.items()} for m in table["models"]]


def check(doc: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    assert_bucket(doc["windows"]["all_time"], expected["totals"], f"{where} totals")
    days = {d["date"]: d for d in doc["daily"]}
    assert sorted(days) == sorted(expected["by_day"]), where
    for day, figures in expected["by_day"].items():
        assert_bucket(days[day], figures, f"{where} {day}")
    for model, figures in expected.get("by_model", {}).items():
        ours = {f"{m['provider']}/{m['model']}": m for m in doc["models"]}
        assert_bucket(ours[model], figures, f"{where} {model}")


def scan(run: Any, make_config: Any, root: Path, zone: str, prices: list[Any]) -> None:
    cfg = make_config(openclaw=[root], timezone=zone, prices=prices) if prices else \
        make_config(openclaw=[root], timezone=zone)
    code, out, err = run("--config", str(cfg), "scan", "--now", NOW)
    assert code == 0, err


@pytest.mark.parametrize("name", STATIC)
def test_static_case(name: str, tmp_path: Path, make_config: Any, run: Any) -> None:
    case = OPENCLAW / name
    expected = read_json(case / "expected.json")
    prices = price_config(case, expected)
    zones = expected.get("by_timezone") or {expected["timezone"]: {"by_day": expected["by_day"]}}
    for zone, views in zones.items():
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
        scan(run, make_config, case / "state", zone, prices)
        check(usage_json(tmp_path), {**expected, "by_day": views["by_day"]}, f"{name} {zone}")


@pytest.mark.parametrize("name", STEPS)
def test_step_case_cumulative(name: str, tmp_path: Path, make_config: Any, run: Any) -> None:
    """Ops applied in place to ONE live folder, one persistent state scanned after each step."""
    case = OPENCLAW / name
    expected = read_json(case / "expected.json")
    live = tmp_path / "live"
    replay.start_live(case, live)
    steps = replay.step_names(case)
    scan(run, make_config, live, expected["timezone"], [])
    check(usage_json(tmp_path), expected["steps"][steps[0]]["cumulative"], steps[0])
    for transition in replay.transitions(case):
        replay.apply(case, live, transition)
        scan(run, make_config, live, expected["timezone"], [])
        step = transition["to"]
        check(usage_json(tmp_path), expected["steps"][step]["cumulative"], step)


@pytest.mark.parametrize("name", STEPS)
def test_step_case_cold_scan(name: str, tmp_path: Path, make_config: Any, run: Any) -> None:
    case = OPENCLAW / name
    expected = read_json(case / "expected.json")
    for step in replay.step_names(case):
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
        scan(run, make_config, case / "steps" / step, expected["timezone"], [])
        check(usage_json(tmp_path), expected["steps"][step]["cold_scan"], f"{step} cold")
