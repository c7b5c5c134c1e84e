"""BIG-bench JSON tasks as :class:`Task` objects, read from the cached ``bigbench==1.0.0`` sdist.

Every ``benchmark_tasks/**/task.json`` with examples is one task (a subtask folder with its own
``task.json`` is a task of its own): id ``bigbench:<path under benchmark_tasks>``, family = the
first path component. An example with ``target_scores`` is multiple choice: its options are the
keys in file order and its output the highest-scoring option (the first on a tie). Otherwise its
``target`` (a string, or the first of a list) is the output of a generative example. Examples with
an empty input, an empty target, or fewer than two distinct options are dropped.

Prompt framing: when a task sets ``example_input_prefix`` / ``example_output_prefix``, they are
**applied**: the input becomes ``(input_prefix + input + output_prefix).strip()``, because many
carry the question itself ("Does the preceding sentence contain anachronisms?", "Heute ... wir.
Gestern", "Plausible/implausible?"). BIG-bench's implicit defaults (``"\nQ: "`` / ``"\nA: "``) are
not added when a task leaves them unset. ``task_prefix``, ``choice_prefix`` and
``append_choices_to_input`` are ignored: the description plays the task prefix's role, and the
options of a multiple-choice example are kept as data instead of being appended to the input.
The length filter uses the raw inputs, before the prefixes.

Skipped, with a log line naming the reason: programmatic tasks (``task.py``, no ``task.json``),
malformed files (WARNING), tasks with no examples (the parent of JSON subtasks), fewer than
``min_examples`` usable examples, a median input longer than ``max_median_input_chars``, or
more than ``MAX_MEDIAN_OPTIONS`` options per example (median).

``split="train"`` (the default) keeps only families that are not held out (:func:`is_held_out`);
``"held_out"`` keeps only the held-out ones (for the evaluation harness); ``"all"`` keeps both.
Per-task statistics are computed once per extraction and cached in ``index-v2.json``, so listing
is cheap. Order is always sorted by task id.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hypergen._fs import atomic_write_text

from .base import Example, Task, TaskError, is_held_out, split_examples
from .bigbench_sdist import (
    cache_lock,
    ensure_extracted,
    read_manifest,
    read_task_json,
)
from .paraphrase import describe_examples
from .user_descriptions import user_descriptions

logger = logging.getLogger(__name__)

INDEX_NAME = "index-v2.json"
"""Bump the version when parsing rules change, so stale statistics are recomputed."""
SPLITS = ("train", "held_out", "all")
MIN_EXAMPLES = 100
MAX_MEDIAN_INPUT_CHARS = 600
MAX_MEDIAN_OPTIONS = 20
"""Multiple-choice tasks with more options are skipped: scoring one example costs one forward
pass per option (abstract_narrative_understanding/99_distractors: 100 per example)."""
MAX_TRAIN = 1000
MAX_EVAL = 200


@dataclass(frozen=True)
class IndexEntry:
    """Statistics of one BIG-bench task folder, computed once and cached."""

    task_id: str
    family: str
    status: str
    """``ok``, ``programmatic``, ``malformed`` or ``no_examples``."""
    reason: str = ""
    n_usable: int = 0
    median_input_chars: float = 0.0
    median_options: float = 0.0
    """Median number of options per example (0: free-text targets)."""


def _clean_str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _parse_options(scores: Any) -> tuple[tuple[str, ...], str] | None:
    if not isinstance(scores, dict):
        return None
    best: dict[str, float] = {}
    for option, score in scores.items():
        text = _clean_str(option)
        if text is None or isinstance(score, bool) or not isinstance(score, int | float):
            return None
        best[text] = max(score, best.get(text, score))
    if len(best) < 2:
        return None
    output = max(best, key=lambda o: best[o])  # max keeps the first of equal scores
    return tuple(best), output


def parse_example(raw: Any) -> Example | None:
    """One BIG-bench example as an :class:`Example`, or None when it is unusable."""
    if not isinstance(raw, dict):
        return None
    text = _clean_str(raw.get("input"))
    if text is None:
        return None
    if "target_scores" in raw:
        parsed = _parse_options(raw["target_scores"])
        return None if parsed is None else Example(text, parsed[1], parsed[0])
    target = raw.get("target")
    if isinstance(target, list):
        target = target[0] if target else None
    output = _clean_str(target)
    return None if output is None else Example(text, output)


def _prefixes(data: dict, where: str) -> tuple[str, str]:
    values = (data.get("example_input_prefix", ""), data.get("example_output_prefix", ""))
    if not all(isinstance(v, str) for v in values):
        raise TaskError(f"{where}: example_input_prefix/example_output_prefix must be strings")
    return values


def _frame(example: Example, input_prefix: str, output_prefix: str) -> Example:
    framed = (input_prefix + example.input + output_prefix).strip()
    return Example(framed, example.output, example.options)


def parse_task_json(
    data: Any, where: str, apply_prefixes: bool = True
) -> tuple[str, list[Example]]:
    """The description and usable examples of a parsed ``task.json``.

    Args:
        data: the parsed JSON.
        where: names the file in errors.
        apply_prefixes: frame each input with the task's example input/output prefixes.

    Raises:
        TaskError: the file is not a JSON object, or its ``examples``, ``description`` or
            prefixes have the wrong type.
    """
    if not isinstance(data, dict):
        raise TaskError(f"{where}: expected a JSON object, got {type(data).__name__}")
    raw_examples = data.get("examples", [])
    if not isinstance(raw_examples, list):
        raise TaskError(f"{where}: 'examples' must be a list, got {type(raw_examples).__name__}")
    description = data.get("description", "")
    if isinstance(description, list):  # tolerate a description split into lines
        description = " ".join(d for d in description if isinstance(d, str))
    if not isinstance(description, str):
        raise TaskError(f"{where}: 'description' must be a string")
    input_prefix, output_prefix = _prefixes(data, where)
    examples = [e for e in map(parse_example, raw_examples) if e is not None]
    if apply_prefixes and (input_prefix or output_prefix):
        examples = [_frame(e, input_prefix, output_prefix) for e in examples]
    return description, examples


def _entry_for(extracted: Path, rel_dir: str) -> IndexEntry:
    task_id, family = f"bigbench:{rel_dir}", rel_dir.split("/")[0]
    try:
        data = read_task_json(extracted, rel_dir)
        _, examples = parse_task_json(data, rel_dir, apply_prefixes=False)
    except TaskError as err:
        return IndexEntry(task_id, family, "malformed", str(err))
    if not examples:
        n_raw = len(data.get("examples", [])) if isinstance(data, dict) else 0
        reason = (
            f"none of its {n_raw} examples is usable (empty input or target, < 2 options)"
            if n_raw
            else "no examples (a parent of subtasks?)"
        )
        return IndexEntry(task_id, family, "no_examples", reason)
    median = float(statistics.median(len(e.input) for e in examples))
    options = float(statistics.median(len(e.options or ()) for e in examples))
    return IndexEntry(task_id, family, "ok", "", len(examples), median, options)


def _build_index(extracted: Path) -> list[IndexEntry]:
    manifest = read_manifest(extracted)
    rel_dirs = sorted(p.rsplit("/", 1)[0] for p in manifest["task_json"])
    entries = [_entry_for(extracted, rel) for rel in rel_dirs]
    for rel in manifest["programmatic"]:
        reason = "programmatic task (task.py without task.json)"
        entries.append(IndexEntry(f"bigbench:{rel}", rel.split("/")[0], "programmatic", reason))
    return sorted(entries, key=lambda e: e.task_id)


def load_index(cache_dir: Path | None = None, download: bool = True) -> list[IndexEntry]:
    """Statistics of every BIG-bench task folder, sorted by task id (built once, then cached)."""
    extracted = ensure_extracted(cache_dir, download=download)
    path = extracted / INDEX_NAME
    if not path.is_file():
        with cache_lock(extracted.parent):
            if not path.is_file():
                entries = _build_index(extracted)
                atomic_write_text(path, json.dumps([asdict(e) for e in entries], indent=0))
    return [IndexEntry(**row) for row in json.loads(path.read_text(encoding="utf-8"))]


def _in_split(family: str, split: str) -> bool:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split == "all" or is_held_out(family) == (split == "held_out")


def _skip_reason(entry: IndexEntry, min_examples: int, max_median: float) -> str:
    if entry.status != "ok":
        return entry.reason
    if entry.n_usable < min_examples:
        return f"{entry.n_usable} usable examples < {min_examples}"
    if entry.median_input_chars > max_median:
        return f"median input {entry.median_input_chars:.0f} chars > {max_median}"
    if entry.median_options > MAX_MEDIAN_OPTIONS:
        return f"median {entry.median_options:.0f} options > {MAX_MEDIAN_OPTIONS}"
    return ""


def select_entries(
    entries: Iterable[IndexEntry],
    split: str = "train",
    families: Iterable[str] | None = None,
    min_examples: int = MIN_EXAMPLES,
    max_median_input_chars: float = MAX_MEDIAN_INPUT_CHARS,
) -> list[IndexEntry]:
    """The entries in ``split`` (and ``families``) that pass the filters; logs each skip."""
    wanted = None if families is None else set(families)
    kept = []
    for entry in entries:
        if not _in_split(entry.family, split) or (
            wanted is not None and entry.family not in wanted
        ):
            continue
        reason = _skip_reason(entry, min_examples, max_median_input_chars)
        if not reason:
            kept.append(entry)
        elif entry.status == "malformed":
            logger.warning("skipping %s: %s", entry.task_id, reason)
        else:
            logger.info("skipping %s: %s", entry.task_id, reason)
    return kept


def list_bigbench_task_ids(
    cache_dir: Path | None = None,
    split: str = "train",
    families: Iterable[str] | None = None,
    min_examples: int = MIN_EXAMPLES,
    max_median_input_chars: float = MAX_MEDIAN_INPUT_CHARS,
    download: bool = True,
) -> list[str]:
    """Sorted ids of the tasks :func:`iter_bigbench_tasks` yields, from the cached index."""
    entries = load_index(cache_dir, download=download)
    kept = select_entries(entries, split, families, min_examples, max_median_input_chars)
    return [e.task_id for e in kept]


def load_bigbench_task(
    extracted: Path,
    task_id: str,
    max_train: int = MAX_TRAIN,
    max_eval: int = MAX_EVAL,
    seed: int = 0,
) -> Task:
    """Read one task from the extracted folder; the split is seeded by ``seed`` and the id."""
    rel_dir = task_id.removeprefix("bigbench:")
    family = rel_dir.split("/")[0]
    data = read_task_json(extracted, rel_dir)
    description, examples = parse_task_json(data, rel_dir)
    train, eval_ = split_examples(
        examples, eval_max=max_eval, train_max=max_train, seed=f"{seed}:{task_id}"
    )
    users = user_descriptions(task_id)
    if users:  # written by hand: they replace the templated paraphrases
        descriptions = tuple(dict.fromkeys((" ".join(description.split()), *users)))
    else:
        descriptions = describe_examples(description, rel_dir, examples)
    return Task(task_id, family, descriptions, train, eval_)


def family_round_robin(entries: list[IndexEntry]) -> list[IndexEntry]:
    """Reorder sorted entries: one task per family in turn, families in sorted order."""
    by_family: dict[str, list[IndexEntry]] = {}
    for entry in entries:
        by_family.setdefault(entry.family, []).append(entry)
    queues = [by_family[f] for f in sorted(by_family)]
    depth = max((len(q) for q in queues), default=0)
    return [q[i] for i in range(depth) for q in queues if i < len(q)]


def iter_bigbench_tasks(
    cache_dir: Path | None = None,
    split: str = "train",
    families: Iterable[str] | None = None,
    limit: int | None = None,
    max_train: int = MAX_TRAIN,
    max_eval: int = MAX_EVAL,
    seed: int = 0,
    min_examples: int = MIN_EXAMPLES,
    max_median_input_chars: float = MAX_MEDIAN_INPUT_CHARS,
    download: bool = True,
    order: str = "id",
) -> Iterator[Task]:
    """Yield BIG-bench tasks; the sdist is downloaded once when missing.

    Args:
        cache_dir: where the sdist and extracted tasks live (default ``$HYPERGEN_HOME/bigbench``).
        split: ``"train"`` (families not held out), ``"held_out"`` or ``"all"``.
        families: keep only these families (None: all of the split).
        limit: stop after this many tasks.
        max_train: cap on train examples per task.
        max_eval: cap on eval examples per task (eval is 20% of the examples up to this cap).
        seed: seeds the per-task shuffle before the split.
        min_examples: skip tasks with fewer usable examples.
        max_median_input_chars: skip tasks whose median input is longer.
        download: fetch the sdist when it is not cached (else raise FileNotFoundError).
        order: ``"id"`` (sorted by task id) or ``"family"`` (round robin over families: the first
            task of every family, then the second of every family, ...), so a zoo built with a
            ``limit`` covers as many families as it can.
    """
    entries = load_index(cache_dir, download=download)
    kept = select_entries(entries, split, families, min_examples, max_median_input_chars)
    if order == "family":
        kept = family_round_robin(kept)
    elif order != "id":
        raise ValueError(f"order must be 'id' or 'family', got {order!r}")
    extracted = ensure_extracted(cache_dir, download=False)
    for entry in kept[:limit]:
        yield load_bigbench_task(extracted, entry.task_id, max_train, max_eval, seed)
