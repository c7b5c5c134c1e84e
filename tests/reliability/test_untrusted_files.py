"""Files other people made: adapters, generator checkpoints, zoo folders and exports, base model
folders and zips. Nothing is unpickled; everything is checked before it is used, the cheap checks
(header size, keys, shapes, dtypes) before any tensor is read."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file

from app.handlers import write_download
from expert_zoo import _folder
from expert_zoo.store import ExpertZoo, ZooError, read_export
from hypergen._untrusted import UntrustedFileError, extract_zip, read_safetensors_header
from hypergen.adapter_io import CONFIG_NAME, WEIGHTS_NAME, LoraAdapter
from hypergen.base_model import load_base_model
from hypergen.cvae import CheckpointError, CVAEConfig, LoraCVAE
from hypergen.cvae_config import MAX_PARAMETERS
from hypergen.errors import AdapterError, BaseModelError, HypergenError
from hypergen.layout import LoraLayout
from tests.conftest import random_adapter, tiny_llama

GB = 10**9


def _forbid(monkeypatch, *targets: str) -> None:
    """Make loading functions fail the test if they are reached (the check must come first)."""

    def reached(*args, **kwargs):
        raise AssertionError("tensors were read before the file was checked")

    for target in targets:
        monkeypatch.setattr(target, reached)


def _header_only(path: Path, claimed: int, body: bytes = b"{}") -> Path:
    path.write_bytes(struct.pack("<Q", claimed) + body)
    return path


# --- pickle -------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt", ".pkl"])
def test_pickle_files_are_refused_with_a_way_to_convert(tmp_path, tiny_layout, suffix, monkeypatch):
    _forbid(monkeypatch, "torch.load", "pickle.load", "pickle.loads")
    folder = random_adapter(tiny_layout).save_pretrained(tmp_path / "a")
    (folder / WEIGHTS_NAME).rename(folder / f"adapter_model{suffix}")
    for path in (folder, folder / f"adapter_model{suffix}"):
        with pytest.raises(AdapterError, match="pickle.*never loads.*convert"):
            LoraAdapter.from_pretrained(path)
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / CONFIG_NAME).write_text("{}")
    (tmp_path / "gen" / f"model{suffix}").write_bytes(b"\x80\x04junk")
    for path in (tmp_path / "gen", tmp_path / "gen" / f"model{suffix}"):
        with pytest.raises(CheckpointError, match="pickle.*convert"):
            LoraCVAE.from_pretrained(path)


def test_a_base_model_folder_with_only_pickle_weights_is_refused(tmp_path, tiny_model_dir):
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(BaseModelError, match="pickle.*convert"):
        load_base_model(folder)


# --- safetensors headers ------------------------------------------------------------------------
def test_a_10_gb_header_is_refused_unread(tmp_path, tiny_layout, monkeypatch):
    folder = random_adapter(tiny_layout).save_pretrained(tmp_path / "a")
    _header_only(folder / WEIGHTS_NAME, 10 * GB)
    _forbid(monkeypatch, "hypergen.adapter_io.load_peft_weights")
    with pytest.raises(AdapterError, match="header claims 10,000,000,000 bytes"):
        LoraAdapter.from_pretrained(folder)
    with pytest.raises(UntrustedFileError, match="at most 67,108,864"):
        read_safetensors_header(_header_only(tmp_path / "x.safetensors", 10 * GB, b"{" * 64))


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b'{"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4]}}', "spans 4 bytes"),
        (b'{"t": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}', "malformed"),
        (b'{"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', "malformed"),
        (b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 99]}}', "malformed"),
        (b'{"__metadata__": {"a": 1}}', "metadata must map strings"),
    ],
)
def test_malformed_headers_are_refused(tmp_path, body, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(body)) + body + b"\0" * 4)
    with pytest.raises(UntrustedFileError, match=message):
        read_safetensors_header(path)


def _rewrite_adapter(folder: Path, change) -> None:
    """Replace one tensor of a saved adapter, keeping its hypergen record."""
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(change(sd), str(folder / WEIGHTS_NAME), metadata=meta)


KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
ADAPTER_DAMAGE = {
    "tensor bigger than the layout": (
        lambda sd: {**sd, KEY: torch.zeros(8, 4096)},
        r"expected shape \(8, 16\), found \(8, 4096\)",
    ),
    "int32 weights": (lambda sd: {**sd, KEY: sd[KEY].to(torch.int32)}, "found I32"),
    "float64 weights": (lambda sd: {**sd, KEY: sd[KEY].double()}, "found F64"),
    "unknown key": (lambda sd: {**sd, "evil": torch.zeros(1)}, "holds 9 tensors"),
    "renamed key": (
        lambda sd: {**{k: v for k, v in sd.items() if k != KEY}, "x.lora_A.weight": sd[KEY]},
        r"unexpected tensors \['x.lora_A.weight'\]",
    ),
    "missing key": (lambda sd: {k: v for k, v in sd.items() if k != KEY}, "holds 7 tensors"),
}


@pytest.mark.parametrize("damage", list(ADAPTER_DAMAGE))
def test_adapter_tensors_are_checked_before_they_are_read(
    tmp_path, tiny_layout, damage, monkeypatch
):
    change, message = ADAPTER_DAMAGE[damage]
    folder = random_adapter(tiny_layout).save_pretrained(tmp_path / "a")
    _rewrite_adapter(folder, change)
    _forbid(monkeypatch, "hypergen.adapter_io.load_peft_weights")
    with pytest.raises(AdapterError, match=message):
        LoraAdapter.from_pretrained(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: {**r, "layout": {**r["layout"], "num_layers": 10**12}}, "its layout needs"),
        (
            lambda r: {
                **r,
                "layout": {**r["layout"], "paths": dict.fromkeys(r["layout"]["paths"], "{x}")},
            },
            "malformed layout paths",
        ),
        (lambda r: {**r, "layout": {**r["layout"], "rank": -1}}, "must be positive"),
        (lambda r: {**r, "metadata": [1]}, "not a JSON record"),
        (lambda r: "[" * 100_000, "corrupt hypergen metadata"),
    ],
)
def test_a_crafted_hypergen_record_is_refused(tmp_path, tiny_layout, change, message):
    from safetensors import safe_open

    folder = random_adapter(tiny_layout).save_pretrained(tmp_path / "a")
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    changed = change(json.loads(meta["hypergen"]))
    meta["hypergen"] = changed if isinstance(changed, str) else json.dumps(changed)
    save_file(sd, str(folder / WEIGHTS_NAME), metadata=meta)
    with pytest.raises(HypergenError, match=message):  # AdapterError or LayoutError
        LoraAdapter.from_pretrained(folder)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_adapter_values_must_be_finite(tmp_path, tiny_layout, value):
    folder = random_adapter(tiny_layout).save_pretrained(tmp_path / "a")
    _rewrite_adapter(folder, lambda sd: {**sd, KEY: torch.full_like(sd[KEY], value)})
    with pytest.raises(AdapterError, match="non-finite"):
        LoraAdapter.from_pretrained(folder)


# --- generator checkpoints ----------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path, tiny_layout) -> Path:
    config = CVAEConfig(layout=tiny_layout.to_dict(), embed_dim=8, k=2, hidden_dim=16)
    return LoraCVAE(config).save_pretrained(tmp_path / "gen")


def _edit_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file

    save_file(
        change(load_file(str(folder / "model.safetensors"))), str(folder / "model.safetensors")
    )


CHECKPOINT_DAMAGE = {
    "nan": (
        lambda sd: {**sd, "layer_emb.weight": sd["layer_emb.weight"] * float("nan")},
        "non-finite",
    ),
    "int weights": (
        lambda sd: {**sd, "layer_emb.weight": sd["layer_emb.weight"].int()},
        "found I32",
    ),
    "extra key": (
        lambda sd: {**sd, "backdoor": torch.zeros(3)},
        r"unexpected tensors \['backdoor'\]",
    ),
    "bigger tensor": (
        lambda sd: {**sd, "layer_emb.weight": torch.zeros(2, 10_000)},
        r"layer_emb.weight: expected shape \(2, 32\)",
    ),
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_generator_checkpoints_are_checked(checkpoint, damage, monkeypatch):
    change, message = CHECKPOINT_DAMAGE[damage]
    _edit_weights(checkpoint, change)
    if damage != "nan":  # everything but the values is refused from the header alone
        _forbid(monkeypatch, "hypergen._untrusted.load_file")
    with pytest.raises(CheckpointError, match=message):
        LoraCVAE.from_pretrained(checkpoint)


def test_a_config_describing_a_huge_generator_is_refused_before_it_is_built(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "hidden_dim": 10**6}))
    with pytest.raises(CheckpointError, match=f"more than the {MAX_PARAMETERS:,} allowed"):
        LoraCVAE.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text("[" * 100_000)
    with pytest.raises(CheckpointError, match="not a valid generator config"):
        LoraCVAE.from_pretrained(checkpoint)


# --- zoo folders and exports --------------------------------------------------------------------
def test_expert_embeddings_are_checked(fake_zoo, tmp_path):
    zoo = ExpertZoo(shutil.copytree(fake_zoo.root, tmp_path / "zoo"))
    folder = zoo.experts_dir / zoo.records()[0].expert_id
    emb = _folder.read_embeddings(folder)
    for bad, message in [
        (emb * np.nan, "NaN or inf"),
        (emb.astype(np.float64), "expected one float32 matrix"),
        (np.zeros((5000, 4096), np.float32), "more than 16,777,216"),
    ]:
        save_np({"embeddings": bad}, str(folder / _folder.EMBEDDINGS_NAME))
        with pytest.raises(ZooError, match=message):
            _folder.read_embeddings(folder)


def test_a_crafted_zoo_export_is_refused_before_it_is_read(fake_zoo, tmp_path, monkeypatch):
    path = fake_zoo.export(tmp_path / "zoo.safetensors")
    assert len(read_export(path).records) == len(fake_zoo)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    bad = tmp_path / "bad.safetensors"
    save_file({**tensors, "weights.q_proj.A": tensors["weights.q_proj.A"][:3]}, str(bad), meta)
    _forbid(monkeypatch, "hypergen.bank.read_zoo_export")
    with pytest.raises(ZooError, match="disagree on the number of experts"):
        read_export(bad)
    save_file({**tensors, "row_expert": tensors["row_expert"].float()}, str(bad), meta)
    with pytest.raises(ZooError, match="unexpected tensor 'row_expert'"):
        read_export(bad)


# --- zips ---------------------------------------------------------------------------------------
def test_the_download_zip_loads_back(fake_generator, tmp_path):
    made = fake_generator.generate("Reverse the letters of a word")
    archive = write_download(made, tmp_path)
    loaded = LoraAdapter.from_pretrained(archive, layout=made.adapter.layout)
    for key, value in made.adapter.weights.items():
        assert torch.equal(loaded.weights[key], value)


def _zip(path: Path, entries: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16  # a symlink entry
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    "entries, link, message",
    [
        ({"../evil.txt": b"x"}, None, "outside the folder"),
        ({"a/../../evil.txt": b"x"}, None, "outside the folder"),
        ({"/tmp/evil.txt": b"x"}, None, "outside the folder"),
        ({"C:\\evil.txt": b"x"}, None, "outside the folder"),
        ({"a.txt": b"x"}, "link", "is a link"),
        ({"bomb.bin": b"\0" * (20 * 1024 * 1024)}, None, "zip bomb"),
        ({f"f{i}": b"x" for i in range(65)}, None, "65 entries"),
    ],
)
def test_unsafe_zips_are_refused_and_write_nothing(tmp_path, entries, link, message):
    archive = _zip(tmp_path / "x.zip", entries, link)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UntrustedFileError, match=message):
        extract_zip(archive, dest)
    with pytest.raises(AdapterError, match=message):
        LoraAdapter.from_pretrained(archive)
    assert list(dest.iterdir()) == [] and sorted(os.listdir(tmp_path)) == ["out", "x.zip"]


def test_a_zip_bomb_under_the_ratio_still_stops_at_the_byte_limit(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"a": os.urandom(2000), "b": os.urandom(2000)})
    with pytest.raises(UntrustedFileError, match="zip bomb"):
        extract_zip(archive, tmp_path, max_bytes=3000)
    assert sorted(p.name for p in extract_zip(archive, tmp_path / "ok")) == ["a", "b"]


# --- damaged bytes (hypothesis) -----------------------------------------------------------------
MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("length"), st.integers(0, 2**64 - 1), st.just(0)),
)


DAMAGED: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if DAMAGED:
        print(f"\ndamaged files tried: {dict(sorted(DAMAGED.items()))}")


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, at, value in mutations:
        if kind == "flip" and out:
            out[at % len(out)] ^= value
        elif kind == "cut":
            del out[at % (len(out) + 1) :]
        elif kind == "length" and len(out) >= 8:
            out[:8] = at.to_bytes(8, "little")
    return bytes(out)


@settings(max_examples=200)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_damaged_adapter_and_checkpoint_bytes_load_sound_or_raise_a_clear_error(
    tmp_path_factory, mutations
):
    layout = LoraLayout.for_model(tiny_llama())
    root = tmp_path_factory.mktemp("damaged")
    folder = random_adapter(layout).save_pretrained(root / "a")
    config = CVAEConfig(layout=layout.to_dict(), embed_dim=8, k=2, hidden_dim=16)
    generator = LoraCVAE(config).save_pretrained(root / "gen")
    for path, load, error in [
        (folder / WEIGHTS_NAME, lambda: LoraAdapter.from_pretrained(folder, layout), HypergenError),
        (
            generator / "model.safetensors",
            lambda: LoraCVAE.from_pretrained(generator),
            CheckpointError,
        ),
    ]:
        path.write_bytes(_mutate(path.read_bytes(), mutations))
        try:
            loaded = load()
        except error:
            DAMAGED["refused"] += 1
            continue
        DAMAGED["loaded sound"] += 1
        tensors = (
            loaded.weights.values()
            if isinstance(loaded, LoraAdapter)
            else loaded.state_dict().values()
        )
        assert all(torch.isfinite(t).all() for t in tensors)
