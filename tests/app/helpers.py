"""A fake generator for the app tests: HyperGen's API (generate / apply / info / base / bank /
encoder / base_model_source) over the tiny model and a tiny zoo, with a bag-of-words encoder, so
no sentence-transformers model or trained CVAE is needed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from expert_zoo.store import ExpertRecord, ExpertZoo, expert_id_for
from hypergen.adapter_io import LoraAdapter
from hypergen.apply import apply_adapter, swap_adapter
from hypergen.bank import ExpertBank
from hypergen.base_model import BaseModel, load_base_model
from hypergen.encoder import check_description
from hypergen.generator import GeneratedAdapter
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


class FakeGenerator:
    """HyperGen's API without a CVAE: neighbours from the bank, weights seeded by the input."""

    def __init__(self, bank: ExpertBank, encoder, base_model_source: Path, k: int = 3):
        self.bank, self.encoder, self.base_model_source, self.k = (
            bank,
            encoder,
            base_model_source,
            k,
        )
        self._base: BaseModel | None = None
        self._slot = None

    samples_differ = True

    def generate(self, description, num_samples: int = 1, temperature: float = 0.0, seed: int = 0):
        check_description(description)
        idx, sims = self.bank.search(self.encoder.encode([description]), self.k)
        neighbors = [
            (self.bank.expert_ids[e], self.bank.descriptions[e][0], float(s))
            for e, s in zip(idx[0].tolist(), sims[0].tolist(), strict=True)
        ]
        out = [
            GeneratedAdapter(self._adapter(description, seed, s), description, neighbors, s)
            for s in range(num_samples)
        ]
        return out[0] if num_samples == 1 else out

    def _adapter(self, description: str, seed: int, sample: int) -> LoraAdapter:
        key = json.dumps([description, seed, sample]).encode()
        gen = torch.Generator().manual_seed(int(hashlib.sha256(key).hexdigest()[:12], 16))
        layout = self.bank.layout
        weights = {
            k: 0.5 * torch.randn(s, generator=gen) for k, s in layout.expected_shapes().items()
        }
        return LoraAdapter(layout, weights, self.bank.base_model, {"description": description})

    @property
    def base(self) -> BaseModel:
        if self._base is None:
            self._base = load_base_model(self.base_model_source)
        return self._base

    def apply(self, adapter):
        lora = adapter.adapter if isinstance(adapter, GeneratedAdapter) else adapter
        if self._slot is None:
            self._slot = apply_adapter(self.base.model, lora)
            self._slot.merge_adapter()
        else:
            swap_adapter(self._slot, lora)
        return self._slot

    def info(self) -> dict:
        return {
            "base_model": self.bank.base_model,
            "encoder": self.encoder.name,
            "zoo": self.bank.name,
            "zoo_experts": len(self.bank),
            "generator_parameters": 0,
            "lora_parameters": self.bank.layout.num_params,
        }


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
