"""Small synthetic tasks generated in code, for tests and smoke runs (no download, no model).

Ten tasks in four families; the same ``seed`` always gives the same tasks. Each task draws its
examples from its own ``random.Random(f"{seed}:{name}")``, so tasks do not depend on each other.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from .base import Example, Task
from .paraphrase import describe_examples

_WORDS = tuple(
    "apple river stone cloud garden lamp window forest candle bridge mirror rocket pencil island"
    " ladder violin desert jacket planet tunnel honey castle meadow harbor".split()
)
_GOOD = ("great", "lovely", "wonderful", "superb", "delightful", "brilliant", "charming")
_BAD = ("awful", "boring", "dreadful", "terrible", "dull", "clumsy", "tedious")
_NOUNS = ("film", "meal", "book", "concert", "hotel", "game", "trip")


def _word(rng: random.Random) -> str:
    return rng.choice(_WORDS)


def _reverse(rng: random.Random) -> Example:
    word = _word(rng)
    return Example(word, word[::-1])


def _uppercase(rng: random.Random) -> Example:
    text = " ".join(_word(rng) for _ in range(rng.randint(1, 3)))
    return Example(text, text.upper())


def _copy_first_word(rng: random.Random) -> Example:
    words = [_word(rng) for _ in range(rng.randint(2, 5))]
    return Example(" ".join(words), words[0])


def _sort_letters(rng: random.Random) -> Example:
    letters = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 7)))
    return Example(letters, "".join(sorted(letters)))


def _add(rng: random.Random) -> Example:
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    return Example(f"{a} + {b}", str(a + b))


def _count_letters(rng: random.Random) -> Example:
    word = _word(rng)
    return Example(word, str(len(word)))


def _larger(rng: random.Random) -> Example:
    a, b = rng.sample(range(100), 2)
    return Example(f"{a} or {b}", str(max(a, b)), (str(a), str(b)))


def _parity(rng: random.Random) -> Example:
    n = rng.randint(0, 999)
    return Example(str(n), "even" if n % 2 == 0 else "odd", ("even", "odd"))


def _sentiment(rng: random.Random) -> Example:
    positive = rng.random() < 0.5
    adjective = rng.choice(_GOOD if positive else _BAD)
    text = f"The {rng.choice(_NOUNS)} was {adjective}."
    return Example(text, "positive" if positive else "negative", ("positive", "negative"))


def _starts_with_vowel(rng: random.Random) -> Example:
    word = _word(rng)
    return Example(word, "yes" if word[0] in "aeiou" else "no", ("yes", "no"))


@dataclass(frozen=True)
class _Spec:
    name: str
    family: str
    description: str
    make: Callable[[random.Random], Example]


_SPECS = (
    _Spec("reverse_word", "string_edit", "Reverse the letters of the word.", _reverse),
    _Spec("uppercase", "string_edit", "Rewrite the text in upper case.", _uppercase),
    _Spec("sort_letters", "string_edit", "Sort the letters alphabetically.", _sort_letters),
    _Spec("copy_first_word", "string_select", "Copy the first word of the text.", _copy_first_word),
    _Spec("add_numbers", "arithmetic", "Add the two numbers.", _add),
    _Spec("count_letters", "arithmetic", "Count the letters in the word.", _count_letters),
    _Spec("larger_number", "number_choice", "Pick the larger of the two numbers.", _larger),
    _Spec("parity", "number_choice", "Say whether the number is even or odd.", _parity),
    _Spec(
        "sentiment",
        "text_classification",
        "Decide whether the sentence is positive or negative.",
        _sentiment,
    ),
    _Spec(
        "starts_with_vowel",
        "text_classification",
        "Decide whether the word starts with a vowel.",
        _starts_with_vowel,
    ),
)

SYNTHETIC_TASK_NAMES = tuple(spec.name for spec in _SPECS)


def _build(spec: _Spec, n_train: int, n_eval: int, seed: int) -> Task:
    rng = random.Random(f"{seed}:{spec.name}")
    examples = [spec.make(rng) for _ in range(n_train + n_eval)]
    descriptions = describe_examples(spec.description, spec.family, examples)
    return Task(
        task_id=f"synthetic:{spec.name}",
        family=spec.family,
        descriptions=descriptions,
        train=tuple(examples[:n_train]),
        eval=tuple(examples[n_train:]),
    )


def synthetic_tasks(n_train: int = 64, n_eval: int = 16, seed: int = 0) -> list[Task]:
    """The synthetic tasks, sorted by id, each with ``n_train`` + ``n_eval`` examples.

    Examples may repeat within a task (small vocabularies); that is fine for smoke tests.
    """
    if n_train < 1 or n_eval < 0:
        raise ValueError(f"need n_train >= 1 and n_eval >= 0, got {n_train}, {n_eval}")
    tasks = [_build(spec, n_train, n_eval, seed) for spec in _SPECS]
    return sorted(tasks, key=lambda t: t.task_id)
