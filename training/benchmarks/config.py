"""What ``hypergen-bench`` measures and how often: :class:`BenchConfig` (its fields are the
command's options), the descriptions it generates adapters for, and the ``--quick`` counts."""

from __future__ import annotations

from dataclasses import dataclass

DESCRIPTIONS = (
    "Decide whether a movie review is positive or negative.",
    "Translate the English sentence into French.",
    "Answer the arithmetic word problem with a number.",
    "Pick the word that does not belong with the others.",
    "Say whether the second sentence follows from the first.",
    "Name the emotion expressed in the tweet.",
    "Sort the letters of the word alphabetically.",
    "Choose the correct answer to the physics question.",
    "Tell whether the statement about geography is true.",
    "Find the date that is one week after the given date.",
    "Decide which of two sentences is more polite.",
    "Identify the logical fallacy in the argument.",
    "Give the plural form of the noun.",
    "Say whether the code snippet has a bug.",
    "Pick the best continuation of the short story.",
    "Classify the news headline by topic.",
    "Answer the riddle with a single word.",
    "Decide whether the two questions ask the same thing.",
    "Count the vowels in the word.",
    "Choose the antonym of the given word.",
    "Tell whether the sentence is sarcastic.",
    "Convert the temperature from Celsius to Fahrenheit.",
    "Pick the chess move that wins material.",
    "Decide whether the review mentions the price.",
    "Say which of two numbers is larger.",
    "Answer the question about the table of data.",
    "Identify the language of the sentence.",
    "Decide whether the medical claim is supported.",
    "Complete the analogy with one word.",
    "Tell whether the email is spam.",
    "Reverse the order of the words in the sentence.",
    "Choose the most likely cause of the event.",
)


@dataclass
class BenchConfig:
    """What to measure and how often (``--quick`` shrinks every count)."""

    generator: str | None = None
    """Generator checkpoint folder (default: the shipped one)."""
    zoo: str | None = None
    """Zoo folder or export file (default: the shipped zoo)."""
    encoder: str | None = None
    """Task encoder folder (default: all-MiniLM-L6-v2)."""
    base_model: str | None = None
    """Base model (default: SmolLM2-135M-Instruct)."""
    repeats: int = 30
    """Timed calls per latency figure (after one warm-up call)."""
    batch: int = 32
    """Descriptions per batched generate() call."""
    sizes: tuple[int, ...] = (100, 1000, 10000)
    """Synthetic zoo sizes (experts)."""
    cold_runs: int = 3
    """Fresh processes for the cold-start figures."""
    adds: int = 3
    """Experts added, one at a time, to each synthetic zoo folder."""
    train_steps: int | None = None
    """Cut the recipe's steps (and its eval examples to 4) for a smoke run; default: the zoo's."""
    workdir: str | None = None
    """Where synthetic zoos are written (default: a temp folder), deleted afterwards."""

    def __post_init__(self) -> None:
        counts = (self.repeats, self.batch, self.cold_runs, self.adds, *self.sizes)
        if min(counts) < 1 or not self.sizes or self.batch > len(DESCRIPTIONS):
            raise ValueError(f"counts must be positive and batch <= {len(DESCRIPTIONS)}: {self}")


QUICK = dict(repeats=3, batch=4, sizes=(20, 50), cold_runs=1, adds=2, train_steps=2)
