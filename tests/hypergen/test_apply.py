import pytest
import torch

from hypergen.apply import apply_adapter, is_merged, merge_into_base, swap_adapter
from hypergen.errors import AdapterError, LayoutError
from hypergen.layout import LoraLayout
from tests.conftest import random_adapter, tiny_llama

IDS = torch.tensor([[1, 2, 3, 4, 200, 100]])


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_merge_and_unload_gives_same_logits(tiny_layout):
    peft_model = apply_adapter(tiny_llama(), random_adapter(tiny_layout))
    expected = _logits(peft_model)
    merged = merge_into_base(peft_model)
    assert not any("lora" in n for n, _ in merged.named_modules())
    assert (_logits(merged) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("merged", [False, True])
def test_swap_equals_fresh_apply(tiny_layout, merged):
    a, b = random_adapter(tiny_layout, seed=1), random_adapter(tiny_layout, seed=2)
    peft_model = apply_adapter(tiny_llama(), a)
    base_weight = peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    if merged:
        peft_model.merge_adapter()
    swap_adapter(peft_model, b)
    assert is_merged(peft_model) is merged
    fresh = apply_adapter(tiny_llama(), b)
    assert (_logits(peft_model) - _logits(fresh)).abs().max() < 1e-5
    if merged:
        peft_model.unmerge_adapter()
    original = tiny_llama().model.layers[0].self_attn.q_proj.weight
    assert (base_weight - original).abs().max() < 1e-6  # the base was never reloaded or drifted


def test_apply_and_swap_refuse_mismatched_adapter(tiny_model, tiny_layout):
    other_model = LoraLayout(2, {"q_proj": (16, 16), "v_proj": (4, 16)}, tiny_layout.paths)
    with pytest.raises(
        LayoutError, match=r"shapes: expected .*'v_proj': \(8, 16\).*found .*\(4, 16\)"
    ):
        apply_adapter(tiny_llama(), random_adapter(other_model))
    peft_model = apply_adapter(tiny_llama(), random_adapter(tiny_layout))
    with pytest.raises(AdapterError, match="cannot swap"):
        swap_adapter(peft_model, random_adapter(LoraLayout.for_model(tiny_model, rank=4)))
    with pytest.raises(AdapterError, match="no adapter named 'other'"):
        swap_adapter(peft_model, random_adapter(tiny_layout), adapter_name="other")
