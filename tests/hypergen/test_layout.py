import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict

from hypergen.errors import AdapterError, LayoutError
from hypergen.layout import LoraLayout, delta_weights
from tests.conftest import random_adapter


def test_layout_finds_modules_and_shapes(tiny_model, tiny_layout):
    assert tiny_layout.modules == ("q_proj", "v_proj")
    assert tiny_layout.num_layers == 2
    assert tiny_layout.shapes == {"q_proj": (16, 16), "v_proj": (8, 16)}
    assert tiny_layout.paths["q_proj"] == "model.layers.{layer}.self_attn.q_proj"
    assert tiny_layout.expected_shapes()["v_proj.B"] == (2, 8, 8)
    assert tiny_layout.num_params == 2 * 8 * (16 + 16) + 2 * 8 * (8 + 16)


def test_layout_matches_peft_parameter_count(tiny_model, tiny_layout):
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(tiny_model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == tiny_layout.num_params


def test_peft_state_dict_round_trip(tiny_model, tiny_layout):
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    sd = get_peft_model_state_dict(get_peft_model(tiny_model, config))
    stacked = tiny_layout.from_peft_state_dict(sd)
    back = tiny_layout.to_peft_state_dict(stacked)
    assert set(back) == set(sd)
    for key in sd:
        torch.testing.assert_close(back[key], sd[key], rtol=0, atol=0)
    inferred = LoraLayout.from_peft_state_dict_keys(sd, rank=8, alpha=16)
    tiny_layout.check_matches(inferred)


def test_layout_json_round_trip(tiny_layout):
    assert LoraLayout.from_dict(tiny_layout.to_dict()) == tiny_layout


def test_delta_weights_scaling(tiny_layout):
    adapter = random_adapter(tiny_layout)
    dw = delta_weights(tiny_layout, adapter.weights)["q_proj"]
    w = adapter.weights
    torch.testing.assert_close(dw[1], 2.0 * w["q_proj.B"][1] @ w["q_proj.A"][1])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w: w.pop("v_proj.A"), "missing tensor v_proj.A"),
        (lambda w: w.update({"k_proj.A": w["q_proj.A"]}), "unknown tensor k_proj.A"),
        (
            lambda w: w.update({"q_proj.A": w["q_proj.A"][:, :4]}),
            r"q_proj.A: expected shape \(2, 8, 16\), found \(2, 4, 16\)",
        ),
        (lambda w: w["v_proj.B"].__setitem__((0, 0, 0), float("nan")), "v_proj.B has 1 non-finite"),
        (lambda w: w.update({"q_proj.B": w["q_proj.B"].long()}), "floating dtype"),
    ],
)
def test_validate_rejects_bad_weights(tiny_layout, mutate, message):
    weights = dict(random_adapter(tiny_layout).weights)
    mutate(weights)
    with pytest.raises(AdapterError, match=message):
        tiny_layout.validate(weights)


def test_from_peft_state_dict_names_the_bad_key(tiny_layout):
    sd = tiny_layout.to_peft_state_dict(random_adapter(tiny_layout).weights)
    key = tiny_layout.peft_key("q_proj", 1, "A")
    bad = dict(sd, **{key: torch.zeros(4, 16)})
    with pytest.raises(AdapterError, match=rf"{key}: expected shape \(8, 16\), found \(4, 16\)"):
        tiny_layout.from_peft_state_dict(bad)
    extra = dict(sd, **{key.replace("q_proj", "k_proj"): torch.zeros(8, 16)})
    with pytest.raises(AdapterError, match="unknown tensor .*k_proj"):
        tiny_layout.from_peft_state_dict(extra)


def test_layout_mismatch_names_field(tiny_model, tiny_layout):
    other = LoraLayout.for_model(tiny_model, rank=4)
    with pytest.raises(LayoutError, match="rank: expected 8, found 4"):
        tiny_layout.check_matches(other)
    with pytest.raises(LayoutError, match="k_norm"):
        LoraLayout.for_model(tiny_model, target_modules=("k_norm",))
