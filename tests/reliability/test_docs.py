"""docs/reliability.md stays true: every fault of faults.md has a row, every test it names
exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"


def _rows() -> dict[int, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| (\d+) \| [^|]+ \| (.+) \|$", line)
        if m:
            rows[int(m.group(1))] = m.group(2)
    return rows


def test_every_fault_of_the_spec_has_a_row() -> None:
    assert sorted(_rows()) == list(range(1, 34))


def test_every_test_the_doc_names_exists() -> None:
    defined = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        defined |= {f"{path.stem}::{name}" for name in
                    re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)}
    named = set()
    for module, name in re.findall(r"`(?:tests/)?(?:reliability/)?(test_\w+)(?:\.py)?::(test_\w+)",
                                   DOC.read_text()):
        named.add(f"{module}::{name}")
    assert named, "no test named?"
    assert sorted(named - defined) == []
