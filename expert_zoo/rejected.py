"""Experts a build trained and did not keep: ``<zoo>/rejected.json``.

An expert that does not beat the base model on its task's own eval split is *flagged*. A build
with ``keep_flagged=False`` (``expert-zoo build --drop-flagged``) does not add it to the zoo
and writes its record here instead (task, family, metrics with the recipe, when): the shipped
zoo then holds only experts that learned their task, the README can list the others with their
numbers, and a resumed build does not train the same task with the same recipe again. A build
with another recipe tries a rejected task again; if that expert beats the base model it is
added and its entry leaves this file. Recipes that differ only in the base model's precision
(``base_dtype``, a speed setting: bfloat16 is faster only on CPUs with AVX-512 BF16) count as the
same, so a build resumed with ``--base-dtype float32`` on another machine does not spend hours
retraining every rejected task.

The file is small JSON, rewritten whole (temporary file, then one rename) under its own lock,
so shard workers sharing a zoo can each reject experts safely::

    {"format": "hypergen-expert-zoo-rejected/1",
     "experts": [{"task_id": ..., "expert_id": ..., "family": ..., "metrics": {...},
                  "rejected_at": "2026-12-02T05:00:00+00:00"}, ...]}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from expert_zoo._index import ZooError
from hypergen._fs import atomic_write_text, path_lock

REJECTED = "rejected.json"
FORMAT = "hypergen-expert-zoo-rejected/1"
FILES = (REJECTED, f"{REJECTED}.lock")
"""The files this module keeps in a zoo folder (named, so ``verify`` does not call them stray)."""
TMP_PREFIX = f".{REJECTED}.tmp-"
"""Its temporary files: written and renamed under its lock, left over only by a kill, and
deleted by the next rewrite (so not strays for ``verify`` or ``repair`` either)."""


def read_rejected(root: str | Path) -> list[dict]:
    """The rejected experts' entries of the zoo at ``root`` (none when the file is absent);
    :class:`ZooError` when it is damaged."""
    path = Path(root) / REJECTED
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ZooError(f"{path} is unreadable ({exc}): delete it to forget the rejections") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ZooError(f"{path} is not a {FORMAT} file: delete it to forget the rejections")
    entries = data.get("experts")
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("task_id"), str) for e in entries
    ):
        raise ZooError(f"{path}: 'experts' must be a list of entries with a task_id")
    return entries


PRECISION_KEYS = ("base_dtype",)
"""Recipe fields that do not make a recipe another one for the rejected list."""


def _without_precision(recipe) -> object:
    if not isinstance(recipe, dict):
        return recipe
    return {k: v for k, v in recipe.items() if k not in PRECISION_KEYS}


def rejected_with(root: str | Path, task_id: str, recipe: dict) -> dict | None:
    """The entry of ``task_id`` if it was rejected with ``recipe`` (the recipe's record, as in
    an expert's ``metrics["recipe"]``; :data:`PRECISION_KEYS` aside), else None."""
    want = _without_precision(recipe)
    for entry in read_rejected(root):
        got = _without_precision(entry.get("metrics", {}).get("recipe"))
        if entry["task_id"] == task_id and got == want:
            return entry
    return None


def reject(root: str | Path, record) -> dict:
    """Write ``record`` (an :class:`expert_zoo.store.ExpertRecord`) as rejected, replacing an
    earlier entry of its task; returns the entry."""
    entry = {
        "task_id": record.task_id,
        "expert_id": record.expert_id,
        "family": record.family,
        "metrics": record.metrics,
        "rejected_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _update(Path(root), record.task_id, entry)
    return entry


def forget(root: str | Path, task_id: str) -> None:
    """Drop ``task_id``'s entry (its task now has an expert in the zoo)."""
    if any(e["task_id"] == task_id for e in read_rejected(root)):
        _update(Path(root), task_id, None)


def _update(root: Path, task_id: str, entry: dict | None) -> None:
    with path_lock(root / REJECTED):
        kept = [e for e in read_rejected(root) if e["task_id"] != task_id]
        if entry is not None:
            kept.append(entry)
        kept.sort(key=lambda e: e["task_id"])
        text = json.dumps({"format": FORMAT, "experts": kept}, indent=1, sort_keys=True)
        for left in root.glob(f"{TMP_PREFIX}*"):  # a killed rewrite's; none is live under the lock
            left.unlink(missing_ok=True)
        atomic_write_text(root / REJECTED, text + "\n")  # its temporary file: TMP_PREFIX


def rejected_table(entries: list[dict]) -> list[str]:
    """A Markdown table of the rejected experts: task, metric, before, after, gain, steps."""
    rows = ["| task | metric | base | expert | gain | steps |", "|---|---|---:|---:|---:|---:|"]

    def number(value, form: str) -> str:
        return format(value, form) if isinstance(value, int | float) else "?"

    def gain(entry: dict) -> float:
        value = (entry.get("metrics") or {}).get("gain")
        return value if isinstance(value, int | float) else float("inf")

    for e in sorted(entries, key=gain):
        m = e.get("metrics") or {}
        rows.append(
            f"| `{e['task_id']}` | {m.get('metric', '?')} | {number(m.get('before'), '.3f')} | "
            f"{number(m.get('after'), '.3f')} | {number(m.get('gain'), '+.3f')} | "
            f"{m.get('steps', '?')} |"
        )
    return rows
