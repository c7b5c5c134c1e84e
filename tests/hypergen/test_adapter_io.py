import json
import warnings

import pytest
import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from hypergen.adapter_io import CONFIG_NAME, WEIGHTS_NAME, LoraAdapter
from hypergen.apply import apply_adapter
from hypergen.errors import AdapterError, LayoutError
from hypergen.layout import LoraLayout
from tests.conftest import random_adapter, tiny_llama

IDS = torch.tensor([[5, 17, 99, 3, 42, 7]])


def test_save_load_round_trip(tmp_path, tiny_layout):
    adapter = random_adapter(tiny_layout, seed=1)
    adapter.metadata["description"] = "reverse a word"
    adapter.save_pretrained(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = LoraAdapter.from_pretrained(tmp_path / "a", layout=tiny_layout)
    assert loaded.layout == tiny_layout and loaded.base_model == "tiny-llama"
    assert loaded.metadata == {"seed": 1, "description": "reverse a word"}
    for k, v in adapter.weights.items():
        torch.testing.assert_close(loaded.weights[k], v, rtol=0, atol=0)


def test_peft_from_pretrained_loads_folder_with_same_logits(tmp_path, tiny_layout):
    adapter = random_adapter(tiny_layout, seed=2)
    adapter.save_pretrained(tmp_path / "a")
    in_memory = apply_adapter(tiny_llama(), adapter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_disk = PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "a")).eval()
    assert not [
        w
        for w in caught
        if "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower()
    ]
    on_disk = get_peft_model_state_dict(from_disk)
    assert set(on_disk) == set(adapter.to_peft_state_dict())
    with torch.no_grad():
        diff = (in_memory(IDS).logits - from_disk(IDS).logits).abs().max()
        base_diff = (tiny_llama()(IDS).logits - from_disk(IDS).logits).abs().max()
    assert diff < 1e-4
    assert base_diff > 1e-3  # the adapter really changes the model


def test_folder_made_by_peft_loads_without_hypergen_metadata(tmp_path, tiny_layout):
    peft_model = apply_adapter(tiny_llama(), random_adapter(tiny_layout, seed=3))
    peft_model.save_pretrained(tmp_path / "peft")
    loaded = LoraAdapter.from_pretrained(tmp_path / "peft", layout=tiny_layout)
    expected = random_adapter(tiny_layout, seed=3).weights
    for k in expected:
        torch.testing.assert_close(loaded.weights[k], expected[k])


def test_from_peft_model_copies_weights(tiny_layout):
    adapter = random_adapter(tiny_layout, seed=4)
    copied = LoraAdapter.from_peft_model(apply_adapter(tiny_llama(), adapter), "tiny-llama")
    assert copied.layout == tiny_layout
    torch.testing.assert_close(copied.weights["v_proj.B"], adapter.weights["v_proj.B"])


def test_save_refuses_existing_folder_and_failed_save_leaves_nothing(
    tmp_path, tiny_layout, monkeypatch
):
    adapter = random_adapter(tiny_layout)
    adapter.save_pretrained(tmp_path / "a")
    with pytest.raises(FileExistsError):
        adapter.save_pretrained(tmp_path / "a")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("hypergen.adapter_io.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        adapter.save_pretrained(tmp_path / "b")
    with pytest.raises(OSError, match="disk full"):
        adapter.save_pretrained(tmp_path / "a", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    LoraAdapter.from_pretrained(tmp_path / "a")  # the old adapter survived


def test_load_errors(tmp_path, tiny_layout):
    with pytest.raises(AdapterError, match="does not exist"):
        LoraAdapter.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        LoraAdapter.from_pretrained(tmp_path / "empty")

    folder = random_adapter(tiny_layout).save_pretrained(tmp_path / "a")
    (folder / WEIGHTS_NAME).rename(folder / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle"):
        LoraAdapter.from_pretrained(folder)
    (folder / "adapter_model.bin").unlink()
    with pytest.raises(AdapterError, match="no adapter_model.safetensors"):
        LoraAdapter.from_pretrained(folder)
    (folder / WEIGHTS_NAME).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AdapterError, match="not a readable safetensors"):
        LoraAdapter.from_pretrained(folder)


def test_load_rejects_nan_and_wrong_shapes(tmp_path, tiny_layout):
    adapter = random_adapter(tiny_layout)
    sd = adapter.to_peft_state_dict()
    key = tiny_layout.peft_key("v_proj", 0, "B")
    folder = adapter.save_pretrained(tmp_path / "nan")
    save_file({**sd, key: torch.full_like(sd[key], float("nan"))}, str(folder / WEIGHTS_NAME))
    with pytest.raises(AdapterError, match="v_proj.B has 64 non-finite"):
        LoraAdapter.from_pretrained(folder)
    folder = adapter.save_pretrained(tmp_path / "shape")
    save_file({**sd, key: torch.zeros(8, 4)}, str(folder / WEIGHTS_NAME))
    with pytest.raises(AdapterError, match=rf"{key}: expected shape \(8, 8\), found \(8, 4\)"):
        LoraAdapter.from_pretrained(folder)


def test_load_rejects_layout_mismatch(tmp_path, tiny_model, tiny_layout):
    folder = random_adapter(LoraLayout.for_model(tiny_model, rank=4)).save_pretrained(
        tmp_path / "r4"
    )
    with pytest.raises(LayoutError, match="rank: expected 8, found 4"):
        LoraAdapter.from_pretrained(folder, layout=tiny_layout)
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "peft_type": "NOPE"}))
    with pytest.raises(AdapterError, match="not a valid PEFT config"):
        LoraAdapter.from_pretrained(folder)
