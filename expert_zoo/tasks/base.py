"""The task data model shared by every task source, the held-out rule and the train/eval split.

A :class:`Task` is a description (the original first, then paraphrases) plus train and eval
examples. An :class:`Example` is generative (``options is None``) or multiple choice (``output``
is one of ``options``). :func:`is_held_out` is the one place the fixed held-out family rule lives.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass


class TaskError(ValueError):
    """Bad task input; the message names the file (and line) and what is wrong."""


@dataclass(frozen=True)
class Example:
    """One input/output pair of a task."""

    input: str
    """The prompt text the model sees."""
    output: str
    """The expected answer; for multiple choice the correct option's text."""
    options: tuple[str, ...] | None = None
    """Multiple-choice options (``output`` is one of them), or ``None`` for a generative example."""

    def __post_init__(self) -> None:
        if self.options is not None and self.output not in self.options:
            raise TaskError(f"output {self.output!r} is not one of the options {self.options!r}")


@dataclass(frozen=True)
class Task:
    """A task: its id, family, descriptions and examples split into train and eval."""

    task_id: str
    """Source-prefixed id, e.g. ``bigbench:multiemo/all_sentence_en``, ``user:x``, ``synthetic:y``."""
    family: str
    """Group of related tasks; the held-out split is decided per family (see :func:`is_held_out`)."""
    descriptions: tuple[str, ...]
    """The original description first, then paraphrases."""
    train: tuple[Example, ...]
    """Examples an expert may be trained on."""
    eval: tuple[Example, ...]
    """Examples kept apart for evaluation."""

    def __post_init__(self) -> None:
        if not self.descriptions or not all(d.strip() for d in self.descriptions):
            raise TaskError(f"task {self.task_id!r}: descriptions must be non-empty strings")

    @property
    def description(self) -> str:
        """The original description."""
        return self.descriptions[0]

    @property
    def is_multiple_choice(self) -> bool:
        """True when every example has options."""
        examples = self.train + self.eval
        return bool(examples) and all(e.options is not None for e in examples)


def is_held_out(family: str) -> bool:
    """Whether a task family is held out of the zoo (fixed rule, never tuned; see docs/design.md,
    "The held-out rule")."""
    return int(hashlib.sha256(family.encode()).hexdigest()[:8], 16) % 5 == 0


def split_examples(
    examples: Sequence[Example],
    *,
    eval_fraction: float = 0.2,
    eval_max: int = 200,
    train_max: int | None = None,
    seed: int | str = 0,
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """Shuffle ``examples`` deterministically and split them into ``(train, eval)``.

    Args:
        examples: all usable examples of one task.
        eval_fraction: share of examples kept for eval (at least 1 when there are 2 or more).
        eval_max: cap on the eval examples.
        train_max: cap on the train examples (``None``: no cap).
        seed: an int or str (e.g. ``f"{seed}:{task_id}"``); the same seed gives the same split
            in every process (str seeds do not depend on ``PYTHONHASHSEED``).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    shuffled = list(examples)
    random.Random(str(seed)).shuffle(shuffled)
    n_eval = min(eval_max, round(len(shuffled) * eval_fraction))
    if eval_fraction > 0 and eval_max > 0 and len(shuffled) >= 2:
        n_eval = max(1, n_eval)
    eval_part = shuffled[:n_eval]
    train_part = shuffled[n_eval:]
    if train_max is not None:
        train_part = train_part[:train_max]
    return tuple(train_part), tuple(eval_part)
