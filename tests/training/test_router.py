"""The learned router over retrieved experts (hypergen/router.py, training/router.py) on the
tiny model and the tiny synthetic-task zoo: a fresh router is the top-k merge, its mixed adapter
is the exact weighted sum of the neighbours' updates, training moves it, a stopped run resumes
exactly, and hypergen-eval scores it with its other-description control."""

from __future__ import annotations

import json

import pytest
import torch

from hypergen.router import NeighbourRouter, RouterError
from tests.conftest import random_adapter
from tests.training.evaluation.test_evaluate import _argv, one_thread, setup  # noqa: F401
from training import router as train
from training.evaluation.evaluate import main as eval_main


def _inputs(n=3, k=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    nbrs = torch.nn.functional.normalize(torch.randn(n, k, d, generator=g), dim=-1)
    sims = torch.rand(n, k, generator=g)
    return query, nbrs, sims, torch.rand(n, k, generator=g)


def test_a_fresh_router_gives_the_merge_weights_and_reads_back(tmp_path):
    router = NeighbourRouter(6, k=4, tau=0.1)
    query, nbrs, sims, gains = _inputs()
    torch.testing.assert_close(router(query, nbrs, sims, gains), torch.softmax(sims / 0.1, -1))
    with torch.no_grad():
        router.pair[2].weight.normal_()  # as if trained
        router.gamma.fill_(0.3)
    w = router(query, nbrs, sims, gains)
    assert torch.allclose(w.sum(-1), torch.full((3,), float(torch.tensor(0.3).exp())))
    assert not torch.allclose(w / w.sum(-1, keepdim=True), torch.softmax(sims / 0.1, -1))
    router.save_pretrained(tmp_path / "r", extra={"step": 7})
    back = NeighbourRouter.from_pretrained(tmp_path / "r")
    torch.testing.assert_close(back(query, nbrs, sims, gains), w)
    assert back.extra == {"step": 7}
    g = torch.Generator().manual_seed(1)
    one, two = (back(query, nbrs, sims, gains, temperature=1.0, generator=g) for _ in range(2))
    assert not torch.allclose(one, two)  # samples are other mixtures of the same neighbours
    with pytest.raises(RouterError, match="not a router folder"):
        NeighbourRouter.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="tau > 0"):
        NeighbourRouter(6, k=4, tau=0.0)


def test_the_mixed_adapter_is_the_weighted_sum_of_the_neighbours_updates(tiny_layout):
    experts = [random_adapter(tiny_layout, seed=s) for s in range(5)]
    stacked = {k: torch.stack([a.weights[k] for a in experts]) for k in experts[0].weights}
    idx = torch.tensor([[0, 3, 4], [2, 2, 1]])
    w = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.6, 0.9]])
    mixed = train.mixed_adapters(stacked, tiny_layout.modules, idx, w)
    for m in tiny_layout.modules:
        got = mixed[f"{m}.B"] @ mixed[f"{m}.A"]  # (n, L, out, in)
        for row in range(2):
            want = sum(
                w[row, j] * stacked[f"{m}.B"][idx[row, j]] @ stacked[f"{m}.A"][idx[row, j]]
                for j in range(3)
            )
            torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-5)


def _train_argv(setup, tiny_model_dir, out, steps, *extra):  # noqa: F811
    argv = ["--zoo", str(setup / "zoo"), "--out", str(out), "--base-model", str(tiny_model_dir)]
    argv += ["--k", "3", "--steps", str(steps), "--tasks-per-step", "2", "--examples", "2"]
    argv += ["--val-examples", "2", "--val-every", "2", "--val-fraction", "0.3", "--lr", "0.05"]
    return [*argv, "--val-split", "expert", "--quiet", *extra]


def test_training_moves_the_router_and_a_stopped_run_resumes_exactly(
    setup,  # noqa: F811
    tiny_model_dir,
    tmp_path,
    one_thread,  # noqa: F811
):
    assert train.main(_train_argv(setup, tiny_model_dir, tmp_path / "whole", 4)) == 0
    state = tmp_path / "whole-state"
    lines = [json.loads(t) for t in (state / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2, 3, 4]
    assert lines[0]["tv_from_merge"] == 0 and lines[0]["scale"] == 1.0
    assert lines[4]["tv_from_merge"] > 0 and "val_loss_other" in lines[4]
    final = train.load_file(str(state / "checkpoint" / "router.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in final.items() if k.startswith("pair.2"))

    assert train.main(_train_argv(setup, tiny_model_dir, tmp_path / "split", 2)) == 0
    assert train.main(_train_argv(setup, tiny_model_dir, tmp_path / "split", 4)) == 0
    resumed = train.load_file(str(tmp_path / "split-state" / "checkpoint" / "router.safetensors"))
    for name, value in final.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0)
    again = [
        json.loads(t) for t in (tmp_path / "split-state" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [x["step"] for x in again] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="other settings"):
        train.main(_train_argv(setup, tiny_model_dir, tmp_path / "split", 6, "--lr", "0.01"))


def test_a_fixed_scale_keeps_the_routers_weight_at_the_merges_and_settings_tell_it_apart(
    setup,  # noqa: F811
    tiny_model_dir,
    tmp_path,
    one_thread,  # noqa: F811
):
    extra = ("--fixed-scale", "--pair-lr", "0.1")
    assert train.main(_train_argv(setup, tiny_model_dir, tmp_path / "fixed", 3, *extra)) == 0
    state = tmp_path / "fixed-state"
    lines = [json.loads(t) for t in (state / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["scale"] == 1.0 and lines[-1]["tv_from_merge"] > 0
    final = train.load_file(str(state / "checkpoint" / "router.safetensors"))
    assert float(final["gamma"]) == 0.0 and float(final["beta"]) != 0.0
    meta = json.loads((state / "checkpoint" / "state.json").read_text())
    assert meta["settings"]["fixed_scale"] is True and meta["settings"]["pair_lr"] == 0.1
    assert [g["lr"] for g in meta["param_groups"]] == [0.1, 0.05]
    with pytest.raises(ValueError, match="fixed_scale"):  # the same state without the option
        train.main(_train_argv(setup, tiny_model_dir, tmp_path / "fixed", 4, "--pair-lr", "0.1"))


def test_hypergen_eval_scores_the_router_and_its_control(
    setup,  # noqa: F811
    tiny_model_dir,
    tmp_path,
    one_thread,  # noqa: F811
):
    router = NeighbourRouter(384, k=3, tau=0.1)
    with torch.no_grad():
        router.pair[2].weight.normal_(0, 1.0)
    router.save_pretrained(tmp_path / "router")
    out = tmp_path / "eval"
    argv = _argv(setup, tiny_model_dir, out, "--methods", "topk-merge,router,router-other")
    assert eval_main([*argv, "--router", str(tmp_path / "router")]) == 0
    results = json.loads((out / "results.json").read_text())
    other_experts = []
    for task in results["tasks"]:
        mixed, merge = task["details"]["router"], task["details"]["topk-merge"]
        assert mixed["experts"] == merge["experts"]  # the same neighbours, other weights
        assert sum(mixed["weights"]) == pytest.approx(1.0, abs=1e-5)
        assert mixed["weights"] != pytest.approx(merge["weights"], abs=1e-4)
        assert 0 <= mixed["score"] <= 1 and 0 <= task["details"]["router-other"]["score"] <= 1
        other_experts.append(task["details"]["router-other"]["experts"] != mixed["experts"])
    assert any(other_experts)  # the control retrieves for another task's description
    with pytest.raises(SystemExit, match="need --router DIR"):
        eval_main(_argv(setup, tiny_model_dir, tmp_path / "e2", "--methods", "router"))
