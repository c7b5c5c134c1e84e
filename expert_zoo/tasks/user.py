"""A user's own task, read from one JSONL file.

Format (UTF-8, one JSON object per line, blank lines ignored)::

    {"id": "movie_sentiment", "description": "Decide whether a movie review is positive or negative."}
    {"input": "A joy from start to finish.", "output": "positive", "options": ["positive", "negative"]}
    {"input": "Two hours I will never get back.", "output": "negative", "options": ["positive", "negative"]}
    {"input": "Translate to French: cat", "output": "chat"}
    ...

The **first line is a header**: ``"description"`` (a string) or ``"descriptions"`` (a list of
strings, the first is the main one) is required; ``"id"`` (default: the file name without
``.jsonl``) and ``"family"`` (default: the id) are optional. Every other line is an example:
``"input"`` and ``"output"`` (non-empty strings) and optionally ``"options"`` (a list of two or more
distinct strings that contains ``output``, for multiple choice). Unknown keys are errors, so typos
are caught. At least :data:`MIN_EXAMPLES` examples; the file is at most :data:`MAX_FILE_BYTES`.

Every problem raises :class:`TaskError` naming the file and line, e.g.
``TaskError("examples.jsonl line 7: 'output' must be a string, got int")``.
The id is sanitised to ``[A-Za-z0-9_.-]`` (no leading dot, so no path traversal); the task id is
``user:<id>``. Descriptions get paraphrases like every other task (see ``paraphrase.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypergen.encoder import check_description
from hypergen.errors import DescriptionError

from .base import Example, Task, TaskError, split_examples
from .paraphrase import describe_examples

MIN_EXAMPLES = 10
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ID_CHARS = 100
HEADER_KEYS = frozenset({"id", "description", "descriptions", "family"})
EXAMPLE_KEYS = frozenset({"input", "output", "options"})


def sanitize_id(raw: str, where: str = "task id") -> str:
    """Keep ``[A-Za-z0-9_.-]``, replace other runs by ``_``, drop leading/trailing ``._-``.

    Raises:
        TaskError: nothing usable is left.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._-")[:MAX_ID_CHARS].rstrip("._-")
    if not cleaned:
        raise TaskError(f"{where}: {raw!r} has no usable characters (use letters, digits, _ . -)")
    return cleaned


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require_str(obj: dict, key: str, where: str) -> str:
    if key not in obj:
        raise TaskError(f"{where}: missing key '{key}'")
    return _check_str(obj[key], f"'{key}'", where)


def _check_str(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise TaskError(f"{where}: {what} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise TaskError(f"{where}: {what} must not be empty")
    bad = next((i for i, ch in enumerate(value) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:  # JSON "\\ud800" escapes decode to these; they are not text
        raise TaskError(f"{where}: {what} is not valid Unicode (lone surrogate at {bad})")
    return value


def _check_description(text: str, where: str) -> str:
    try:
        return check_description(text)
    except DescriptionError as exc:
        raise TaskError(f"{where}: {exc}") from exc


def _check_keys(obj: Any, allowed: frozenset[str], where: str) -> dict:
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: expected a JSON object, got {_type_name(obj)}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise TaskError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return obj


def _parse_options(obj: dict, output: str, where: str) -> tuple[str, ...] | None:
    options = obj.get("options")
    if options is None:
        return None
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise TaskError(f"{where}: 'options' must be a list of strings, got {_type_name(options)}")
    for option in options:
        _check_str(option, "every option", where)
    if len(options) < 2 or len(set(options)) != len(options) or not all(o.strip() for o in options):
        raise TaskError(f"{where}: 'options' must hold two or more distinct non-empty strings")
    if output not in options:
        raise TaskError(f"{where}: 'output' {output!r} is not one of 'options' {options!r}")
    return tuple(options)


def parse_example_line(obj: Any, where: str) -> Example:
    """Validate one example object (``where`` is e.g. ``"x.jsonl line 7"``)."""
    obj = _check_keys(obj, EXAMPLE_KEYS, where)
    text = _require_str(obj, "input", where)
    output = _require_str(obj, "output", where)
    return Example(text, output, _parse_options(obj, output, where))


def _parse_header(obj: Any, where: str) -> tuple[list[str], str | None, str | None]:
    if isinstance(obj, dict) and "input" in obj:
        raise TaskError(
            f"{where}: the first line must be a header like "
            '{"description": "..."}, got an example'
        )
    obj = _check_keys(obj, HEADER_KEYS, where)
    if "descriptions" in obj:
        descs = obj["descriptions"]
        if not isinstance(descs, list) or not descs or not all(isinstance(d, str) for d in descs):
            raise TaskError(f"{where}: 'descriptions' must be a non-empty list of strings")
        descriptions = [d for d in descs if d.strip()]
        if not descriptions:
            raise TaskError(f"{where}: 'descriptions' are all empty")
    else:
        descriptions = [_require_str(obj, "description", where)]
    descriptions = [_check_description(d, where) for d in descriptions]
    ids = [None if obj.get(k) is None else _require_str(obj, k, where) for k in ("id", "family")]
    return descriptions, ids[0], ids[1]


def _ids(raw_id: str | None, family: str | None, name: str, where: str) -> tuple[str, str]:
    """Sanitised ``(id, family)``: the id defaults to the file name, the family to the id."""
    if raw_id is not None:
        task_id = sanitize_id(raw_id, f"{where}: 'id'")
    else:
        task_id = sanitize_id(Path(name).stem, f"{name}: file name")
    return task_id, sanitize_id(family, f"{where}: 'family'") if family is not None else task_id


def _decode_lines(data: bytes, name: str) -> list[tuple[int, Any]]:
    """``(line number, parsed JSON)`` of every non-blank line."""
    rows = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{name} line {number}"
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise TaskError(f"{where}: invalid UTF-8 at byte {err.start}") from err
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise TaskError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from err
        except (ValueError, RecursionError) as err:  # e.g. a 5000-digit number, deep nesting
            raise TaskError(f"{where}: unreadable JSON ({type(err).__name__}: {err})") from err
    return rows


def parse_user_task(
    data: bytes | str,
    name: str = "task.jsonl",
    *,
    min_examples: int = MIN_EXAMPLES,
    max_train: int | None = None,
    max_eval: int = 200,
    seed: int = 0,
) -> Task:
    """Validate a JSONL task given as bytes/text; ``name`` is used in errors and as default id."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_FILE_BYTES:
        raise TaskError(f"{name}: {len(data)} bytes is over the {MAX_FILE_BYTES} byte limit")
    rows = _decode_lines(data, name)
    if not rows:
        raise TaskError(f"{name}: empty file; expected a header line and examples")
    descriptions, raw_id, family = _parse_header(rows[0][1], f"{name} line {rows[0][0]}")
    examples = [parse_example_line(obj, f"{name} line {n}") for n, obj in rows[1:]]
    if len(examples) < min_examples:
        raise TaskError(f"{name}: {len(examples)} examples, need at least {min_examples}")
    task_id, family = _ids(raw_id, family, name, f"{name} line {rows[0][0]}")
    all_descriptions = describe_examples(descriptions[0], family, examples, descriptions[1:])
    train, eval_ = split_examples(
        examples, eval_max=max_eval, train_max=max_train, seed=f"{seed}:user:{task_id}"
    )
    return Task(f"user:{task_id}", family, all_descriptions, train, eval_)


def load_user_task(path: str | Path, **kwargs: Any) -> Task:
    """Read and validate a JSONL task file (format in the module docstring).

    Keyword arguments are passed to :func:`parse_user_task`.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TaskError(f"{path.name}: {size} bytes is over the {MAX_FILE_BYTES} byte limit")
    return parse_user_task(path.read_bytes(), path.name, **kwargs)
