"""Render: the outputs as bytes, pure functions of the document built by metrics.

- usage.json: `document()` adds schema, generation time and daemon state to the metrics.
- usage.html: one self-contained page from templates/dashboard.html.j2 (Jinja2, autoescaped).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import jinja2
import msgspec

SCHEMA = 1


def document(figures: dict[str, Any], generated_at: dt.datetime, daemon: dict[str, Any]
             ) -> dict[str, Any]:
    """The usage.json document: versioned, every timestamp ISO-8601 with an offset."""
    return {"schema": SCHEMA, "generated_at": generated_at.isoformat(), **figures,
            "daemon": daemon}


def render_json(doc: dict[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("usaged", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render_html(doc: dict[str, Any], refresh_seconds: int = 60, chart_days: int = 30) -> str:
    template = _environment().get_template("dashboard.html.j2")
    return template.render(doc=doc, refresh_seconds=refresh_seconds, chart_days=chart_days)
