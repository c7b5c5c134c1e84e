"""hypergen-bench --quick on the tiny model and a tiny zoo: every figure is measured and positive,
ratios agree with the figures they come from (no timing thresholds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors import safe_open

from hypergen.bank import ExpertBank
from hypergen.layout import LoraLayout
from tests.conftest import tiny_llama
from tests.hypergen.test_generator import encoder, setup  # noqa: F401  (fixtures)
from training.benchmarks import bench_scale as bench_zoo
from training.benchmarks.bench import main


def numbers(tree, path=""):
    """Every number in a nested dict, with its path."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


@pytest.fixture(scope="module")
def result(setup, tiny_model_dir, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--quick", "--generator", str(setup / "generator"), "--zoo", str(setup / "zoo")]
    argv += ["--base-model", str(tiny_model_dir), "--out", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_every_figure_is_present_and_positive(result, capsys):
    f = result["figures"]
    for section in ("generate", "cold", "apply", "train", "scale", "sizes"):
        assert f[section], section
    for key in ("tensors_ms", "peft_folder_ms", "batch_ms"):
        assert f["generate"][key]["p95"] >= f["generate"][key]["p50"] > 0
    assert set(f["scale"]) == {"20", "50"}
    for n, s in f["scale"].items():
        assert s["experts"] == int(n) and s["rows"] == bench_zoo.DESCRIPTIONS * int(n)
        assert not s["weights_in_memory"]  # the bank read only the neighbours' weights
        assert s["search_mode"] == "exact" and s["search_recall"] == 1.0  # small zoos: exact
    assert f["train"]["steps"] == 2 and "quick" in f["train"]["recipe_source"]
    found = dict(numbers(f))
    assert len(found) > 60
    bad = {k: v for k, v in found.items() if not (v > 0 and math.isfinite(v))}
    bad = {k: v for k, v in bad.items() if "rss" not in k and ".recipe." not in k}  # RSS may shrink
    assert not bad


def test_ratios_come_from_the_figures(result):
    f, r = result["figures"], result["ratios"]
    generate_s = f["generate"]["tensors_ms"]["p50"] / 1000
    assert r["train_wall_over_generate"] == pytest.approx(f["train"]["wall_s"] / generate_s)
    assert r["train_optimise_over_generate"] == pytest.approx(f["train"]["optimise_s"] / generate_s)
    sizes = f["sizes"]
    assert r["generator_over_zoo_bytes"] == pytest.approx(
        sizes["generator_bytes"] / sizes["zoo_bytes"]
    )
    for n, share in r["generator_over_synthetic_zoo_bytes"].items():
        assert share == pytest.approx(sizes["generator_bytes"] / f["scale"][n]["export_bytes"])
    assert result["targets"]["search_ms"]["met"] is False  # 50 experts is not 10,000
    assert result["machine"]["cores"] >= 1 and result["command"].startswith("hypergen-bench")


def test_report_is_printed(result, capsys):
    from training.benchmarks.bench_report import render

    text = render(result)
    for words in ("command", "machine", "cold start", "swap", "add one expert", "targets"):
        assert words in text


def test_synthetic_export_is_a_valid_export(tmp_path):
    layout = LoraLayout.for_model(tiny_llama())
    header = bench_zoo.header_for(layout, "enc", "tiny-llama", 8)
    path = bench_zoo.write_export(tmp_path / "zoo.safetensors", 5, header)
    bank = ExpertBank.from_export(path)
    assert len(bank) == 5 and bank.dim == 8 and len(bank.embeddings) == 20
    with safe_open(str(path), framework="pt") as f:  # every expert's factors are canonical
        a = f.get_tensor("weights.q_proj.A").float()
    gram = a @ a.transpose(-1, -2)  # A = √S Vᵀ: orthogonal rows
    off = gram - gram.diagonal(dim1=-2, dim2=-1).diag_embed()
    assert off.abs().max() < 1e-2 * gram.abs().max()


def test_synthetic_descriptions_cluster_like_the_shipped_zoos_paraphrases():
    rows = bench_zoo.description_rows(200, 384, seed=3)
    centres = rows.reshape(200, bench_zoo.DESCRIPTIONS, 384).mean(1)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    own = np.einsum("erd,ed->er", rows.reshape(200, -1, 384), centres)
    assert 0.93 < own.mean() < 0.97  # the shipped zoo: 0.952
    others = centres @ centres.T - 2 * np.eye(200)
    assert others.max(1).mean() < 0.4  # distinct experts stay apart
