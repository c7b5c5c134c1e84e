"""Recipes as files: a TOML file whose top-level keys are a command's option names (``-`` or
``_``), read as defaults under the command line (``hypergen-train --config``, ``expert-zoo build
--config``), so one committed file reproduces an artifact with one command."""

from __future__ import annotations

import argparse
from pathlib import Path


def read_recipe(path: Path, parser: argparse.ArgumentParser) -> dict:
    """``{option dest: value}`` of a TOML recipe (top-level keys, ``-`` or ``_``); an unknown
    key or a value of the wrong type is an error naming it."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"--config {path}: {exc}")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    values = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            parser.error(f"--config {path}: unknown option {key!r}")
        if isinstance(action, argparse._AppendAction):  # a repeatable option: a list
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list):
                parser.error(f"--config {path}: {key} must be a list, got {value!r}")
            values[dest] = value
            continue
        if action.type is not None and not isinstance(value, bool):
            try:
                value = action.type(value)
            except (TypeError, ValueError) as exc:
                parser.error(f"--config {path}: {key} = {value!r}: {exc}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"--config {path}: {key} must be one of {list(action.choices)}")
        values[dest] = value
    return values
