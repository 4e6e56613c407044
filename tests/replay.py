"""Replay a step case's ops.json against one live folder, asserting in-place ops keep the inode."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path
from typing import Any


def step_names(case: Path) -> list[str]:
    return sorted(p.name for p in (case / "steps").iterdir() if p.is_dir())


def start_live(case: Path, live: Path) -> None:
    shutil.copytree(case / "steps" / step_names(case)[0], live)


def transitions(case: Path) -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads((case / "steps" / "ops.json").read_text())
    return list(data["transitions"])


def _content(case: Path, op: dict[str, Any]) -> bytes:
    if "content_literal" in op:
        return str(op["content_literal"]).encode()
    return (case / "steps" / op["content_from_step"] / op["path"]).read_bytes()


def apply(case: Path, live: Path, transition: dict[str, Any]) -> None:
    for op in transition["ops"]:
        kind = op["op"]
        target = live / op.get("path", op.get("from", ""))
        if kind == "append":
            data = (case / "steps" / op["bytes_from_step"] / op["path"]).read_bytes()
            with open(target, "ab") as fh:
                fh.write(data[op["offset"]:])
        elif kind in ("overwrite_in_place", "truncate"):
            inode = target.stat().st_ino
            if kind == "truncate":
                os.truncate(target, op["size"])
            else:
                fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
                os.write(fd, _content(case, op))
                os.close(fd)
            assert target.stat().st_ino == inode, "in-place op must keep the inode"
        elif kind == "replace_atomic":
            tmp = target.with_name(target.name + ".replay-tmp")
            tmp.write_bytes(_content(case, op))
            os.replace(tmp, target)
        elif kind == "create":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_content(case, op))
        elif kind == "rename":
            os.rename(target, live / op["to"])
        elif kind == "unlink":
            os.unlink(target)
        else:
            raise AssertionError(f"unknown op {kind}")
    assert_same_tree(live, case / "steps" / transition["to"])


def assert_same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only, (cmp.left_only, cmp.right_only)
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    for sub in cmp.common_dirs:
        assert_same_tree(a / sub, b / sub)
