"""Deterministic paraphrases of task descriptions, so the generator learns meaning, not one string.

No model is involved: a small set of rules rewrites the original description.

1. the original, whitespace cleaned (or the task's name in words when it is empty);
2. an imperative rewrite: lead-ins like "In this task, you will", "The task is to" or
   "This task asks the model to" are dropped ("Given a review, decide ..." is kept as is)
   and the rest is capitalised; when no lead-in matches, ``"Task: <original>"``;
3. the name in words: ``"A(n) <name words> task. <original>"``, where the name is the family,
   or for a BIG-bench subtask its path (``multiemo/products_sentence_es`` -> "multiemo products
   sentence es"), so subtasks that share one description still get distinct ones;
4. the answer format: ``"<original> Choose one of: a, b, c."`` for multiple choice with a
   small fixed label set, ``"<original> Pick the correct option."`` for other multiple choice,
   ``"<original> Reply with the answer only."`` for generative tasks.

Duplicates are dropped, so a task gets the original plus at least two paraphrases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .base import Example

MAX_LISTED_OPTIONS = 8
"""A multiple-choice label set larger than this is not spelled out in a paraphrase."""
MAX_OPTION_CHARS = 30
"""Nor is one whose longest option is longer than this."""

_LEAD_INS = (
    r"in this task,?\s+(?:you\s+)?(?:(?:will|are asked to|must|should|need to|have to)\s+)?",
    r"the (?:task|goal|objective|aim) (?:of this task )?is (?:to )?",
    r"this task (?:asks|requires|tests|evaluates|measures) (?:the )?(?:model|models|you|"
    r"language models?)?\s*(?:to |whether |on |how )?",
    r"(?:your|the model's) (?:task|job|goal) is to ",
    r"you (?:will|are asked to|must|should|need to) ",
    r"ask (?:the )?(?:model|models|language models?) to ",
    r"an? (?:task|test) (?:to|that asks (?:the )?(?:model|you) to) ",
)
_LEAD_IN_RE = re.compile(r"^(?:" + "|".join(_LEAD_INS) + r")", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Collapse runs of whitespace (newlines included) into single spaces and strip the ends."""
    return " ".join(text.split())


def family_words(family: str) -> str:
    """``"logical_deduction"`` -> ``"logical deduction"``; also splits ``-`` and camelCase."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", family)
    return clean_text(re.sub(r"[_\-/.:]+", " ", spaced)).lower()


def _sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop (or the existing punctuation)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?:;" else text + "."


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def _imperative(description: str) -> str:
    match = _LEAD_IN_RE.match(description)
    rest = description[match.end() :].strip() if match else ""
    if len(rest) < 3:
        return f"Task: {description}"
    return _sentence(rest)


def fixed_label_set(option_sets: Iterable[Sequence[str] | None]) -> tuple[str, ...] | None:
    """The one option list shared by every example, if small and short enough to spell out."""
    distinct = {tuple(options) for options in option_sets if options is not None}
    if len(distinct) != 1:
        return None
    (labels,) = distinct
    if len(labels) > MAX_LISTED_OPTIONS or max(len(o) for o in labels) > MAX_OPTION_CHARS:
        return None
    return labels


def _answer_format(description: str, multiple_choice: bool, labels: Sequence[str] | None) -> str:
    base = _sentence(description)
    if labels:
        return f"{base} Choose one of: {', '.join(clean_text(o) for o in labels)}."
    if multiple_choice:
        return f"{base} Pick the correct option."
    return f"{base} Reply with the answer only."


def describe(
    description: str,
    name: str,
    *,
    multiple_choice: bool = False,
    labels: Sequence[str] | None = None,
    extra: Iterable[str] = (),
) -> tuple[str, ...]:
    """The original description (cleaned) followed by deterministic paraphrases.

    Args:
        description: the task's own description; empty falls back to ``name`` in words.
        name: the task's family or path (in words in one paraphrase).
        multiple_choice: whether the task's answers are options to choose from.
        labels: the fixed option list shared by every example, if any (see
            :func:`fixed_label_set`); spelled out in the answer-format paraphrase.
        extra: further descriptions written by a person (e.g. a user task's list); they follow
            the original, before the generated paraphrases.
    """
    words = family_words(name) or "unnamed"
    original = clean_text(description) or _sentence(words)
    candidates = [original, *(clean_text(d) for d in extra)]
    candidates += [
        _imperative(original),
        f"{_article(words)} {words} task. {_sentence(original)}",
        _answer_format(original, multiple_choice, labels),
    ]
    seen: dict[str, None] = {}
    for text in candidates:
        if text and text not in seen:
            seen[text] = None
    return tuple(seen)


def describe_examples(
    description: str, name: str, examples: Sequence[Example], extra: Iterable[str] = ()
) -> tuple[str, ...]:
    """:func:`describe` with the answer format read off the task's examples."""
    options = [e.options for e in examples]
    multiple_choice = bool(options) and all(o is not None for o in options)
    labels = fixed_label_set(options) if multiple_choice else None
    return describe(description, name, multiple_choice=multiple_choice, labels=labels, extra=extra)
