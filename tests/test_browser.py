"""The dashboard as a person sees it: usage.html opened as file:// in headless Chromium."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_render_html import make_doc

from usaged.render import render_html

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (CI installs Debian's chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, Route, sync_playwright  # noqa: E402


@dataclass
class Visit:
    """A page opened from disk, with everything it tried that it should not have."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def open_page(browser: Browser, path: Path, color_scheme: Any = "light",
              width: int = 1280) -> Visit:
    context = browser.new_context(color_scheme=color_scheme,
                                  viewport={"width": width, "height": 900})
    page = context.new_page()
    visit = Visit(page)

    def route(r: Route) -> None:
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            visit.requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: visit.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: visit.errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return visit


def save_screenshot(page: Page, name: str) -> None:
    """Into test-artifacts/ (git-ignored). Written here: `path=` leaves an executor thread."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(page.screenshot(full_page=True))


def hostile_doc() -> dict[str, Any]:
    doc = make_doc(generated_at=dt.datetime.now().astimezone().isoformat())
    doc["models"][1]["model"] = HOSTILE
    doc["sessions"][0]["session"] = HOSTILE
    doc["alerts"].insert(0, {"id": "session_review", "level": "critical",
                             "title": "Sessions to review",
                             "message": f"1 session(s) above 10,000,000 tokens: main/{HOSTILE}",
                             "value": 1, "threshold": 10_000_000})
    return doc


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dashboard") / "usage.html"
    path.write_text(render_html(hostile_doc(), refresh_seconds=60, chart_days=30),
                    encoding="utf-8")
    return path


def test_headline_figures_are_visible(browser: Browser, page_file: Path) -> None:
    visit = open_page(browser, page_file)
    page = visit.page
    week = page.locator("#card-week").inner_text()
    assert "This week".lower() in week.lower()
    assert "3.03M" in week
    assert "4.2M" in page.locator("#card-last7").inner_text()
    month = page.locator("#card-month").inner_text()
    assert "$41.25" in month
    assert "$50.00 budget" in month
    assert page.locator("#card-month .progress.lvl-warning > span").is_visible()
    assert "$58.75" in page.locator("#card-balance").inner_text()
    page.context.close()


def test_alert_banners_are_on_top(browser: Browser, page_file: Path) -> None:
    visit = open_page(browser, page_file)
    page = visit.page
    banners = page.locator(".alert")
    assert banners.count() == 2
    assert "critical" in (banners.nth(0).get_attribute("class") or "")
    assert "warning" in (banners.nth(1).get_attribute("class") or "")
    assert banners.nth(0).is_visible()
    card_top = page.locator("#card-week").bounding_box()
    last_banner = banners.nth(1).bounding_box()
    assert card_top and last_banner and last_banner["y"] < card_top["y"]
    assert "Monthly budget" in banners.nth(1).inner_text()
    page.context.close()


def test_chart_bars_are_visible(browser: Browser, page_file: Path) -> None:
    visit = open_page(browser, page_file)
    page = visit.page
    bars = page.locator("svg.chart rect.bar")
    assert bars.count() == 30
    drawn = [i for i in range(30) if float(bars.nth(i).get_attribute("height") or 0) > 0]
    assert len(drawn) == 3
    for i in drawn:
        assert bars.nth(i).is_visible()
        box = bars.nth(i).bounding_box()
        assert box and box["height"] > 1 and box["width"] > 1
    page.context.close()


def test_hostile_names_are_shown_as_text_and_never_run(browser: Browser, page_file: Path
                                                       ) -> None:
    visit = open_page(browser, page_file)
    page = visit.page
    assert HOSTILE in page.locator("#models").inner_text()
    assert HOSTILE in page.locator("#sessions").inner_text()
    assert HOSTILE in page.locator(".alert").first.inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_network_no_errors_and_screenshot(browser: Browser, page_file: Path,
                                             scheme: str) -> None:
    visit = open_page(browser, page_file, color_scheme=scheme)
    page = visit.page
    assert page.locator("#age").inner_text() == "just now"
    save_screenshot(page, "dashboard.png" if scheme == "light" else "dashboard-dark.png")
    assert visit.requests == []
    assert visit.errors == []
    page.context.close()


def test_fits_a_phone_screen(browser: Browser, page_file: Path) -> None:
    visit = open_page(browser, page_file, width=390)
    page = visit.page
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert page.locator("#card-month").is_visible()
    save_screenshot(page, "dashboard-phone.png")
    assert visit.errors == []
    page.context.close()


def test_page_says_how_old_it_is(browser: Browser, tmp_path: Path) -> None:
    two_hours_ago = dt.datetime.now().astimezone() - dt.timedelta(hours=2)
    path = tmp_path / "usage.html"
    path.write_text(render_html(make_doc(generated_at=two_hours_ago.isoformat())),
                    encoding="utf-8")
    visit = open_page(browser, path)
    age = visit.page.locator("#age")
    assert age.inner_text() == "2 h ago"  # by the page's own script, allowed by its CSP hash
    assert "stale" in (age.get_attribute("class") or "")
    assert visit.errors == []
    visit.page.context.close()
