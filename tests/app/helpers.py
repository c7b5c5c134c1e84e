"""The app tests' generator: a real :class:`HyperGen` over the tiny model and a tiny zoo, with a
small untrained CVAE and a bag-of-words encoder, so no sentence-transformers model or trained
generator is needed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from expert_zoo.store import ExpertRecord, ExpertZoo, expert_id_for
from hypergen.bank import ExpertBank
from hypergen.layout import LoraLayout
from tests.conftest import random_adapter, tiny_llama

TASKS = [
    "Reverse the letters of a word",
    "Add two small numbers",
    "Say if a review is positive",
    "Translate a word to French",
    "Uppercase the sentence",
    "Count the vowels in a word",
    "Pick the larger of two numbers",
    "Tell whether a sentence is toxic",
]


class BagOfWordsEncoder:
    """A deterministic stand-in for TaskEncoder: hashed bag of words, unit rows."""

    name = "fake-bag-of-words"
    dim = 32

    def encode(self, texts, truncate: bool = False) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i, -1] += 0.1  # no zero rows
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def build_zoo(root: Path, encoder, base_model: str = "tiny-llama") -> ExpertZoo:
    """A zoo of 8 tiny experts with eval gains 0.00, 0.05, ..., 0.35."""
    layout = LoraLayout.for_model(tiny_llama())
    zoo = ExpertZoo(root)
    for i, text in enumerate(TASKS):
        descriptions = [text, f"Task: {text.lower()}."]
        record = ExpertRecord(
            expert_id=expert_id_for(f"t:{i}"),
            task_id=f"t:{i}",
            family=f"f{i}",
            descriptions=descriptions,
            encoder=encoder.name,
            base_model=base_model,
            layout=layout.to_dict(),
            metrics={"gain": 0.05 * i},
        )
        adapter = random_adapter(layout, seed=i, scale=0.2)
        adapter.base_model = base_model
        zoo.add(record, adapter, encoder.encode(descriptions))
    return zoo


def tiny_generator(zoo_root: Path, base_model: Path, seed: int = 0):
    """A real :class:`HyperGen` over ``zoo_root``: a small CVAE for its layout whose output heads
    are randomised (as if trained: samples at temperature > 0 differ), the bag-of-words encoder,
    and the tiny base model."""
    from hypergen.generator import HyperGen
    from training.module import new_model

    bank = ExpertBank.load(zoo_root)
    torch.manual_seed(seed)
    model = new_model(bank, np.arange(len(bank)), k=3, hidden_dim=32, latent_dim=4, cond_dim=16)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("heads."):
                param.normal_(0, 0.05)
    generator = HyperGen(model, bank, BagOfWordsEncoder(), base_model)
    generator.zoo_paths = [Path(zoo_root)]
    return generator


def task_jsonl(n: int = 12, task_id: str = "shout", bad_line: int | None = None) -> bytes:
    """A user task file (header + ``n`` examples); ``bad_line`` (1-based) is made malformed."""
    lines = [json.dumps({"id": task_id, "description": "Repeat the word in capitals."})]
    words = ["cat", "dog", "sun", "map", "cup", "pen", "box", "hat", "fig", "jam", "kit", "log"]
    for i in range(n):
        word = words[i % len(words)] + str(i)
        lines.append(json.dumps({"input": word, "output": word.upper()}))
    if bad_line is not None:
        lines[bad_line - 1] = '{"input": "oops", "output": '
    return ("\n".join(lines) + "\n").encode()
