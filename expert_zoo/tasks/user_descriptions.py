"""Descriptions of the zoo's tasks in users' words, written by hand and committed as data.

A task's own description (BIG-bench's ``description`` field, a dataset's documentation) is one
phrasing, often in a benchmark author's terms. A user types something else: short or long, with
or without the label set, casual or formal. ``descriptions/*.json`` holds at least 8 such
phrasings per zoo task (``{task_id: [text, ...]}``, files merged in name order); task sources add
them after the task's own description, so retrieval and generator training see them all.
Text-to-LoRA (Charakorn et al. 2025) reports that zero-shot quality grows with the number and
variety of descriptions per training task.

Held-out tasks' user descriptions live apart, with the benchmark (``training``), and are never
read here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

DESCRIPTIONS_DIR = Path(__file__).resolve().parent / "descriptions"


@cache
def _table(folder: Path = DESCRIPTIONS_DIR) -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object of task id -> list of descriptions")
        for task_id, texts in data.items():
            if not isinstance(texts, list) or not all(
                isinstance(t, str) and t.strip() for t in texts
            ):
                raise ValueError(f"{path}: {task_id!r} must map to a list of non-empty strings")
            if task_id in table:
                raise ValueError(f"{path}: {task_id!r} is described in two files")
            table[task_id] = tuple(t.strip() for t in texts)
    return table


def user_descriptions(task_id: str) -> tuple[str, ...]:
    """The user-written descriptions of ``task_id`` (empty when it has none)."""
    return _table().get(task_id, ())


def described_task_ids() -> set[str]:
    """Every task id that has user-written descriptions."""
    return set(_table())
