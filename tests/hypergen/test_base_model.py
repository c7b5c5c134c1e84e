import json

import pytest
import torch
from transformers import T5Config, T5Model

from hypergen._fs import atomic_dir
from hypergen.base_model import gguf_cache_folder, load_base_model
from hypergen.errors import BaseModelError


def test_load_transformers_folder(tiny_model_dir):
    base = load_base_model(tiny_model_dir)
    assert base.model.config.num_hidden_layers == 2 and not base.model.training
    assert base.tokenizer.pad_token is not None
    assert base.name == tiny_model_dir.name.lower().replace("_", "-")
    assert base.model.dtype == torch.float32


def test_missing_path_and_non_model_folders(tmp_path):
    with pytest.raises(BaseModelError, match="does not exist"):
        load_base_model(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(BaseModelError, match="neither a transformers folder"):
        load_base_model(tmp_path / "file.txt")
    with pytest.raises(BaseModelError, match="neither a transformers folder"):
        load_base_model(tmp_path)


def test_folder_that_is_not_a_causal_lm(tmp_path):
    config = T5Config(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, vocab_size=50)
    T5Model(config).save_pretrained(tmp_path / "t5")  # an encoder-decoder: no causal LM head
    with pytest.raises(BaseModelError, match="not a causal language model"):
        load_base_model(tmp_path / "t5")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(BaseModelError, match="not a causal language model"):
        load_base_model(tmp_path / "broken")


def test_corrupt_gguf_is_a_clear_error_and_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises((BaseModelError, ValueError)):
        load_base_model(bad)
    models = tmp_path / "home" / "models"
    assert not [p for p in models.iterdir() if not p.name.endswith(".lock")]


def test_half_written_cache_is_never_used(tmp_path, monkeypatch):
    """A crash inside atomic_dir leaves no folder, so the next load converts again."""
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path))
    target = tmp_path / "models" / "x"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("killed halfway")
    assert not target.exists() and list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_gguf_conversion_runs_once_across_processes(tmp_path, monkeypatch):
    """Two processes loading the default model into an empty cache convert it once."""
    import subprocess
    import sys

    code = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from hypergen import load_base_model; b = load_base_model(); print(b.model.num_parameters())"
    )
    env = {"HYPERGEN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [o.strip().splitlines()[-1] for o, _ in outs] == ["134515008"] * 2
    assert sum(err.count("converting") for _, err in outs) == 1
    from hypergen.base_model import default_gguf_path

    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path))

    folder = gguf_cache_folder(default_gguf_path())
    assert folder.parent == tmp_path / "models"
    assert [p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")] == [
        folder.name
    ]


def test_atomic_dir_restores_the_old_folder_when_publishing_fails(tmp_path, monkeypatch):
    import os

    target = tmp_path / "t"
    target.mkdir()
    (target / "v").write_text("old")
    real_replace = os.replace

    def fail_publish(src, dst):
        if str(dst) == str(target) and ".tmp-" in str(src):
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_publish)
    with pytest.raises(OSError, match="rename failed"):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "v").write_text("new")
    assert (target / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_bfloat16_on_a_cpu_that_emulates_it_warns_once(monkeypatch, caplog):
    """Without AVX-512 BF16 or AMX, bfloat16 matmuls are emulated (6x slower than float32 on the
    2-core EPYC here): the loader says so once, and says nothing for float32 or a capable CPU."""
    import hypergen.base_model as bm

    monkeypatch.setattr(bm, "_warned_bf16", False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with caplog.at_level("WARNING", logger="hypergen.base_model"):
        assert not bm.warn_if_bf16_is_emulated(torch.float32)
        assert bm.warn_if_bf16_is_emulated(torch.bfloat16)
        assert bm.warn_if_bf16_is_emulated(torch.bfloat16)
    assert [r.message.count("--base-dtype float32") for r in caplog.records] == [1]
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert not bm.warn_if_bf16_is_emulated(torch.bfloat16)
