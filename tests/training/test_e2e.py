"""The end-to-end stage (training/e2e.py) on the tiny model and the tiny synthetic-task zoo of
test_evaluate: the batched LoRA forward is PEFT's, gradients reach the generator and never the
base model, a few steps lower the validation tasks' loss, a stopped run resumes exactly, and the
CLI runs the stage from a TOML recipe."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from expert_zoo.store import ExpertZoo, expert_id_for
from hypergen.apply import apply_adapter
from hypergen.bank import ExpertBank
from hypergen.base_model import load_base_model
from hypergen.conditioning import neighbour_inputs
from hypergen.cvae import CVAEConfig, LoraCVAE
from hypergen.layout import LoraLayout
from tests.conftest import random_adapter, tiny_llama
from tests.training.evaluation.test_evaluate import RECIPE, one_thread, setup  # noqa: F401  (fixtures)
from training import e2e_distributed, e2e_state, provenance
from training.cli import main
from training.data import GeneratorDataModule
from training.e2e import BatchedLora, E2EConfig, EndToEnd, train_e2e
from training.e2e_extra import ExtraTasks, extra_tasks
from training.e2e_loop import summary
from training.e2e_tasks import zoo_tasks
from training.e2e_validation import _shares
from training.evaluation.baselines import load_zoo_tasks, zoo_records
from training.lora_batch import change_cos, geometry
from training.module import new_model
from training.scripts import diagnostics, e2e_curves


def test_batched_lora_gives_each_sequence_its_own_adapter_exactly_as_peft_does():
    layout = LoraLayout.for_model(tiny_llama())
    adapters = [random_adapter(layout, seed=s, scale=0.3) for s in (1, 2)]
    stacked = {k: torch.stack([a.weights[k] for a in adapters]) for k in adapters[0].weights}
    ids = torch.tensor([[5, 17, 99, 3], [42, 8, 8, 61]])
    model = tiny_llama().eval()
    with torch.no_grad(), BatchedLora(model, layout) as lora:
        plain = model(ids).logits
        lora.set(stacked, torch.tensor([1, 0]))
        mixed = model(ids).logits
        lora.clear()
        torch.testing.assert_close(model(ids).logits, plain)
    for row, adapter in zip((1, 0), adapters, strict=True):
        expected = apply_adapter(tiny_llama(), adapter).eval()(ids[row : row + 1]).logits
        torch.testing.assert_close(mixed[row : row + 1], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(mixed[0], plain[0])
    assert not model.model.layers[0].self_attn.q_proj._forward_hooks  # removed on exit


@pytest.fixture
def parts(setup, tiny_model_dir):  # noqa: F811
    bank = ExpertBank.load(setup / "zoo")
    records = {r["expert_id"]: r for r in zoo_records(setup / "zoo")}
    tasks = load_zoo_tasks([records[e]["task_id"] for e in bank.expert_ids])
    model = LoraCVAE.from_pretrained(setup / "generator").train()
    data = GeneratorDataModule(bank, k=model.config.k, batch_size=3, val_fraction=0.3, seed=0)
    return bank, tasks, model, load_base_model(tiny_model_dir), data


def _stage(parts, **recipe) -> EndToEnd:
    bank, tasks, model, base, data = parts
    settings = {"tasks_per_step": 2, "examples_per_task": 2, "max_length": 64, "val_examples": 2}
    settings.update(base_dtype="float32", **recipe)
    return EndToEnd(model, bank, base, tasks, data, E2EConfig(**settings))


def test_the_older_nested_history_reads_as_flat_stages():
    shipped = json.loads(
        (Path(__file__).parents[2] / "hypergen/assets/generator/config.json").read_text()
    )["extra"]
    flat = provenance.stages(shipped)  # two end-to-end stages, the older one first
    assert [s["stage"] for s in flat] == ["end-to-end", "end-to-end"]
    assert flat[0]["warm_start"] is None and flat[1]["warm_start"] == shipped["warm_start"]
    assert flat[1] == {"stage": "end-to-end", "warm_start": shipped["warm_start"], **shipped["sft"]}
    extended = provenance.extend(shipped, [{"stage": "end-to-end", "steps": 3}], 1.0)
    assert provenance.stages(extended) == [*flat, {"stage": "end-to-end", "steps": 3}]
    with pytest.raises(ValueError, match="unknown training stages"):
        provenance.extend({}, [{"stage": "magic"}], 1.0)


def test_gradients_reach_the_generator_and_never_the_base_model(parts):
    stage = _stage(parts)
    loss = stage.step_loss(0)["loss"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    _, _, model, base, _ = parts
    assert all(p.grad is None for p in base.model.parameters())
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["heads.q_proj.1.weight"].abs().sum() > 0
    assert grads["cond_net.0.weight"].abs().sum() > 0
    stage.close()


def test_the_stage_checks_its_inputs(parts):
    bank, tasks, model, base, data = parts
    with pytest.raises(ValueError, match="one task per expert"):
        EndToEnd(model, bank, base, tasks[:-1], data, E2EConfig())
    with pytest.raises(ValueError, match="examples_per_task"):
        E2EConfig(examples_per_task=0)
    with pytest.raises(ValueError, match="unknown end-to-end settings"):
        E2EConfig.from_dict({"stepz": 3})


def test_the_contrast_term_asks_the_own_adapter_to_beat_another_tasks(parts):
    stage = _stage(parts, contrast_weight=0.5, contrast_margin=10.0, anchor_weight=0.0)
    parts_ = stage.step_loss(3)
    rows, examples, owner = stage.draw(3)
    with torch.no_grad():
        torch.manual_seed(0)
        stage.model.eval()  # no dropout: the two scorings below use one set of adapters
        weights, _ = stage.adapters(stage.batch(rows))
        own = stage.lm_loss(weights, examples, owner, stage.config.label_smoothing)
        other = stage.lm_loss(weights, examples, [1 - o for o in owner], 0.1)
        again = stage.contrast(weights, examples, owner, own, None)
    assert float(again["lm_other"]) == pytest.approx(float(other))
    assert float(again["contrast"]) == pytest.approx(10.0 - float(other - own))
    assert float(parts_["loss"].detach()) == pytest.approx(
        float((parts_["lm"] + 0.5 * parts_["contrast"]).detach()), rel=1e-6
    )
    parts_["loss"].backward()
    assert stage.model.heads["q_proj"][1].weight.grad.abs().sum() > 0
    stage.close()
    far = _stage(parts, contrast_weight=0.5, contrast_margin=0.0)
    met = far.contrast(weights, examples, owner, other - 1, None)  # own 1 nat below other
    assert float(met["contrast"]) == 0.0  # the margin is met: no pull
    far.close()
    with pytest.raises(ValueError, match="pairs a step's tasks"):
        _stage(parts, contrast_weight=0.5, tasks_per_step=3)
    assert "contrast_weight" not in E2EConfig().key()  # older states still resume
    assert E2EConfig(contrast_weight=0.5).key(("steps",))["contrast_weight"] == 0.5


def test_only_the_matching_experts_train_and_validate_the_rest_are_neighbours(
    parts,
    setup,  # noqa: F811
):
    bank, _, model, base, data = parts
    only = ["synthetic:*number*", "synthetic:parity", "synthetic:sentiment"]
    tasks, _ = zoo_tasks(setup / "zoo", bank, only)
    kept = {i for i, t in enumerate(tasks) if t is not None}
    names = {tasks[i].task_id for i in kept}
    assert names == {
        "synthetic:add_numbers",
        "synthetic:larger_number",
        "synthetic:parity",
        "synthetic:sentiment",
    }
    settings = {"tasks_per_step": 2, "examples_per_task": 1, "max_length": 64, "val_examples": 2}
    stage = EndToEnd(model, bank, base, tasks, data, E2EConfig(base_dtype="float32", **settings))
    assert set(stage.rows_of) == kept & set(data.train_experts.tolist())
    val = {int(bank.row_expert[r]) for r in stage.val_rows()}
    assert val == kept & set(data.val_experts.tolist())
    for step in range(6):
        rows, _, _ = stage.draw(step)
        assert {int(bank.row_expert[r]) for r in rows} <= kept
    assert set(data.idx.ravel().tolist()) - kept  # the others still serve as neighbours
    assert torch.isfinite(stage.step_loss(0)["loss"])
    with pytest.raises(ValueError, match="no expert's task id matches"):
        zoo_tasks(setup / "zoo", bank, ["bigbench:*"])


def test_a_recipe_gives_a_repeatable_option_as_a_list(tmp_path):
    from training.options import build_parser, parse_args

    recipe = tmp_path / "r.toml"
    need = 'zoo = "z"\nout = "o"\n'
    recipe.write_text(need + 'sft_only = "synthetic:*"\n')
    assert parse_args(["--config", str(recipe)], build_parser()).sft_only == ["synthetic:*"]
    recipe.write_text(need + 'sft_only = ["a:*", "b:*"]\n')
    args = parse_args(["--config", str(recipe), "--sft-only", "c:*"], build_parser())
    assert args.sft_only == ["a:*", "b:*", "c:*"]
    assert E2EConfig(only=args.sft_only).key()["only"] == ["a:*", "b:*", "c:*"]
    assert "only" not in E2EConfig().key()  # an older state without it still resumes
    recipe.write_text(need + "sft_only = 3\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(recipe)], build_parser())


def test_the_draw_is_a_function_of_seed_and_step(parts):
    stage = _stage(parts)
    rows, examples, owner = stage.draw(5)
    assert stage.draw(5) == (rows, examples, owner)
    assert stage.draw(6) != (rows, examples, owner)
    _, _, _, _, data = parts
    experts = {int(stage.bank.row_expert[r]) for r in rows}
    assert len(experts) == 2 and not experts & set(data.val_experts.tolist())
    assert owner == [0, 0, 1, 1]
    stage.close()


def test_a_few_steps_lower_the_loss_on_the_validation_experts_tasks(parts, tmp_path):
    stage = _stage(parts, lr=3e-3, warmup_steps=1, steps=12, val_every=4, anchor_weight=0.0)
    record = train_e2e(stage, tmp_path / "state", {"run": 1}, progress=False)
    assert record["best"]["val_loss"] < record["initial"]["val_loss"]
    start = record["initial"]
    assert start["norm_ratio"] == pytest.approx(1.0, abs=0.05)  # near the merge at step 0...
    assert start["cos_merge"] == pytest.approx(1.0, abs=0.05)
    assert record["initial"]["val_loss"] != pytest.approx(record["reference"]["val_loss_base"])
    lines = e2e_state.read_metrics(tmp_path / "state")
    assert [x["step"] for x in lines] == list(range(13))
    trained = [x for x in lines if "val_loss" in x and x["step"] > 0]
    moved = [abs(x["norm_ratio"] - start["norm_ratio"]) for x in trained]
    assert max(moved) > 1e-3  # ...and it moves
    assert len(start["norm_ratio_by_task"]) == len(record["reference"]["val_experts"])
    stage.close()
    png = tmp_path / "curves.png"
    assert e2e_curves.main([str(tmp_path / "state"), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [x["step"] for x in e2e_curves.validated(tmp_path / "state")] == [0, 4, 8, 12]


def test_patience_stops_the_run_after_validations_without_a_new_best(parts, tmp_path):
    stage = _stage(parts, lr=3e-3, warmup_steps=1, steps=20, val_every=2, patience=2)
    real, calls = stage.validate, []

    def worse_after_the_start():  # every validation after step 0 is worse than step 0's
        calls.append(1)
        metrics = real()
        return {**metrics, "val_loss": metrics["val_loss"] + (len(calls) > 1)}

    stage.validate = worse_after_the_start
    record = train_e2e(stage, tmp_path / "state", {"run": 1}, progress=False)
    assert record["step"] == 4 and record["stopped_early"] == 4  # not 20
    assert record["best"]["step"] == 0 and len(calls) == 3  # steps 0, 2 and 4
    assert [x["step"] for x in e2e_state.read_metrics(tmp_path / "state")] == list(range(5))
    assert "stopped early at 4" in summary(record)
    again = train_e2e(stage, tmp_path / "state", {"run": 1}, progress=False)  # resume: done
    assert again["step"] == 4 and len(calls) == 3
    stage.close()
    with pytest.raises(ValueError, match="patience"):
        E2EConfig(patience=-1)


def test_a_stopped_run_resumes_exactly(parts, setup, tmp_path):  # noqa: F811
    recipe = {"lr": 3e-3, "warmup_steps": 2, "val_every": 3, "kl_weight": 0.1}
    whole = _stage(parts, steps=6, **recipe)
    train_e2e(whole, tmp_path / "whole", {"run": 1}, progress=False)
    whole.close()
    expected = {k: v.clone() for k, v in whole.model.state_dict().items()}
    saved = LoraCVAE.from_pretrained(tmp_path / "whole" / "checkpoint" / "generator")

    bank, tasks, _, base, data = parts
    fresh = lambda steps: EndToEnd(  # noqa: E731
        LoraCVAE.from_pretrained(setup / "generator").train(),
        bank,
        base,
        tasks,
        data,
        E2EConfig(
            steps=steps,
            tasks_per_step=2,
            examples_per_task=2,
            max_length=64,
            val_examples=2,
            base_dtype="float32",
            **recipe,
        ),
    )
    first = fresh(4)  # stopped after 4 steps (as a kill after a save would leave it)
    train_e2e(first, tmp_path / "split", {"run": 1}, progress=False)
    first.close()
    second = fresh(6)
    record = train_e2e(second, tmp_path / "split", {"run": 1}, progress=False)
    second.close()
    assert record["step"] == 6
    resumed = LoraCVAE.from_pretrained(tmp_path / "split" / "checkpoint" / "generator")
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
    for name, value in second.model.state_dict().items():  # the best weights, the same ones
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    steps = [x["step"] for x in e2e_state.read_metrics(tmp_path / "split")]
    assert steps == list(range(7))
    assert "sample_spread" in e2e_state.read_metrics(tmp_path / "split")[3]
    with pytest.raises(ValueError, match="other settings"):
        train_e2e(fresh(6), tmp_path / "split", {"run": 2}, progress=False)


def _warm_start_argv(root, tiny_model_dir, tmp_path, *extra) -> list[str]:
    """hypergen-train from the setup generator, end-to-end stage only, into ``tmp_path/gen``."""
    argv = ["--zoo", str(root / "zoo"), "--out", str(tmp_path / "gen")]
    argv += ["--warm-start", str(root / "generator"), "--epochs", "0", "--sft-rows", "2"]
    argv += ["--sft-examples", "2", "--base-model", str(tiny_model_dir), "--quiet"]
    argv += ["--sft-val-examples", "2", "--base-dtype", "float32"]
    return [*argv, "--logs", str(tmp_path / "logs"), *extra]


def test_cli_runs_the_stage_after_a_warm_start(setup, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "gen"
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "4")
    argv += ["--sft-val-every", "2", "--val-fraction", "0.3"]
    argv += ["--val-split", "expert"]  # the tiny zoo's families are too few to hold one out
    assert main(argv) == 0
    assert "end-to-end stage: 4 steps; val_loss" in capsys.readouterr().out
    recorded = json.loads((out / "config.json").read_text())["extra"]["stages"]
    shipped_kind = provenance.stages(LoraCVAE.from_pretrained(setup / "generator").config.extra)
    assert recorded[: len(shipped_kind)] == shipped_kind  # the warm start's history stays
    sft = recorded[-1]
    assert sft["stage"] == "end-to-end" and sft["warm_start"] == str(setup / "generator")
    assert sft["step"] == 4 and sft["seconds"] > 0 and sft["recipe"]["tasks_per_step"] == 2
    assert {"val_loss", "val_loss_other", "norm_ratio", "cos_merge"} <= set(sft["initial"])
    assert {"val_loss_merge", "val_loss_base"} <= set(sft["reference"])
    assert sft["best"]["val_loss"] <= sft["initial"]["val_loss"]
    assert len(recorded) == len(shipped_kind) + 1  # no reconstruction epochs ran
    assert (tmp_path / "logs" / "e2e-state" / "checkpoint" / "state.json").is_file()
    reloaded = LoraCVAE.from_pretrained(out)
    original = LoraCVAE.from_pretrained(setup / "generator")
    changed = [
        n for n, p in reloaded.state_dict().items() if not torch.equal(p, original.state_dict()[n])
    ]
    assert sft["best"]["step"] == 0 or changed


def test_cli_reads_a_toml_recipe_and_resumes(setup, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'zoo = "{setup / "zoo"}"\nwarm-start = "{setup / "generator"}"\nepochs = 0\n'
        "sft_steps = 2\nsft_rows = 2\nsft_examples = 1\nval_fraction = 0.3\n"
        'val_split = "expert"\n'
        'base_dtype = "float32"\nsft_val_examples = 2\n'
    )
    state = tmp_path / "state"
    argv = ["--config", str(recipe), "--out", str(tmp_path / "a"), "--state", str(state)]
    argv += ["--base-model", str(tiny_model_dir), "--quiet"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "a" / "config.json").read_text())["extra"]["stages"][-1]
    assert first["step"] == 2 and first["recipe"]["examples_per_task"] == 1
    longer = [x if x != str(tmp_path / "a") else str(tmp_path / "b") for x in argv]
    longer[longer.index("--state")] = "--resume"
    assert main([*longer, "--sft-steps", "3"]) == 0  # flags override the file; a longer run
    again = json.loads((tmp_path / "b" / "config.json").read_text())["extra"]["stages"][-1]
    assert again["step"] == 3
    assert [x["step"] for x in e2e_state.read_metrics(state)] == [0, 1, 2, 3]
    bad = tmp_path / "bad.toml"
    bad.write_text("sft_stepz = 3\n")
    with pytest.raises(SystemExit):
        main(["--config", str(bad), "--out", str(tmp_path / "c")])
    assert "unknown option 'sft_stepz'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv[:4], "--resume", str(tmp_path / "nowhere")])
    assert "no end-to-end state there" in capsys.readouterr().err


def test_gates_only_training_changes_only_the_gates(setup, tiny_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "gen"
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "3")
    argv += ["--sft-train", "gates", "--sft-lr", "1e-2", "--val-fraction", "0"]
    argv += ["--save-dtype", "float32", "--sft-warmup", "1"]  # float16 would change every weight
    assert main(argv) == 0
    assert (
        json.loads((out / "config.json").read_text())["extra"]["stages"][-1]["recipe"]["trainable"]
        == "gates"
    )
    before = LoraCVAE.from_pretrained(setup / "generator").state_dict()
    after = LoraCVAE.from_pretrained(out).state_dict()
    changed = {n for n, p in after.items() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("gates.") for n in changed)


def test_layer_scales_training_changes_only_the_layer_scales(setup, tiny_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "gen"
    argv = ["--zoo", str(setup / "zoo"), "--out", str(out), "--epochs", "0", "--k", "3"]
    argv += ["--layer-scales", "--sft-steps", "3", "--sft-train", "layer-scales"]
    argv += ["--sft-rows", "2", "--sft-examples", "2", "--sft-lr", "1e-1", "--val-fraction", "0"]
    argv += ["--base-model", str(tiny_model_dir), "--quiet", "--logs", str(tmp_path / "logs")]
    argv += ["--sft-warmup", "1", "--base-dtype", "float32"]
    assert main([*argv, "--save-dtype", "float32"]) == 0
    after = LoraCVAE.from_pretrained(out)
    assert after.config.layer_scales
    changed = {
        n for n, p in after.state_dict().items() if n.startswith("layer_scales.") and p.any()
    }
    assert changed == {f"layer_scales.{m}" for m in after.layout.modules}
    assert not any(p.any() for layer in after._output_layers() for p in layer.parameters())


def test_layer_scales_training_needs_a_generator_that_has_them(
    setup,  # noqa: F811
    tiny_model_dir,
    tmp_path,
    capsys,
):
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "2")
    assert main([*argv, "--sft-train", "layer-scales"]) == 2
    assert "has no layer scales" in capsys.readouterr().err
    assert not (tmp_path / "gen").exists()


def test_merge_scale_diagnostic_agrees_with_the_stage_validation(
    parts,
    setup,  # noqa: F811
    tiny_model_dir,
    capsys,
):
    """Scale 1 is the merge and scale 0 no adapter: the same numbers the stage's own reference
    losses (val_loss_merge, val_loss_base) give on the same split."""
    zoo = str(setup / "zoo")
    losses, n = diagnostics.merge_scale_losses(
        zoo, [0.0, 1.0, 2.0], 2, 3, 0.1, 0.3, 0, tiny_model_dir
    )
    bank, tasks, _, base, _ = parts
    data = GeneratorDataModule(bank, 3, 4, 0.3, 0, exclude_same_family=False)  # as the diagnostic
    data.setup()
    model = new_model(bank, data.train_experts, k=3, tau=0.1)
    config = E2EConfig(val_examples=2, max_length=RECIPE.max_length, base_dtype="float32")
    stage = EndToEnd(model, bank, base, tasks, data, config)
    reference = stage.reference()
    stage.close()
    assert n == 2 * len(data.val_experts) > 0
    assert losses[1.0] == pytest.approx(reference["val_loss_merge"], rel=1e-5)
    assert losses[0.0] == pytest.approx(reference["val_loss_base"], rel=1e-5)
    assert losses[2.0] != pytest.approx(losses[1.0])
    assert (
        diagnostics.main(
            [
                "merge-scale",
                "--zoo",
                zoo,
                "--k",
                "3",
                "--examples",
                "1",
                "--val-fraction",
                "0.3",
                "--base-model",
                str(tiny_model_dir),
            ]
        )
        == 0
    )
    assert "scale 1.00" in capsys.readouterr().out


def test_headroom_diagnostic_scores_merges_neighbours_and_the_own_expert(
    setup,  # noqa: F811
    tiny_model_dir,
    tmp_path,
    capsys,
):
    """A merge at a tiny temperature is the nearest neighbour alone; the oracle columns are the
    per-task minima; the own expert is the validation expert's own adapter, which on the tiny
    zoo's synthetic tasks beats no adapter."""
    zoo = str(setup / "zoo")
    result = diagnostics.headroom(
        zoo, [1e-4, 1.0], 2, 3, 0.3, 0, True, False, str(setup / "generator"), tiny_model_dir
    )
    losses = {n: np.array(v) for n, v in result["losses"].items()}
    assert len(result["experts"]) == len(losses["base"]) > 0
    np.testing.assert_allclose(losses["merge tau=0.0001"], losses["neighbour 0"], atol=2e-3)
    single = np.stack([losses[f"neighbour {j}"] for j in range(3)])
    np.testing.assert_allclose(losses["best neighbour"], single.min(0), atol=1e-4)
    assert (losses["best tau"] <= losses["merge tau=1"] + 1e-4).all()
    assert losses["own expert"].mean() < losses["base"].mean()
    assert set(result["family_means"]) == set(result["means"])
    out = tmp_path / "headroom.json"
    argv = ["headroom", "--zoo", zoo, "--k", "2", "--examples", "1", "--val-fraction", "0.3"]
    argv += ["--no-singles", "--base-model", str(tiny_model_dir), "--out", str(out)]
    assert diagnostics.main(argv) == 0
    assert "own expert" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["examples"] == len(result["experts"])
    assert "neighbour 0" not in written["losses"] and "best tau" in written["losses"]


@pytest.mark.parametrize("posterior_fraction", [0.0, 0.5])
def test_two_processes_train_as_one(parts, setup, tiny_model_dir, tmp_path, posterior_fraction):  # noqa: F811
    """gloo on CPU: each step's tasks dealt to 2 processes (in pairs, for the contrast term),
    gradients summed. Without dropout, and with the step's latent noise (and which tasks decode
    from the posterior) drawn once and dealt with the tasks, the only difference from one
    process is the order of the sums."""
    bank, tasks, _, base, data = parts
    shipped = LoraCVAE.from_pretrained(setup / "generator")
    config = {**shipped.config.to_dict(), "dropout": 0.0}
    state = {k: v.clone() for k, v in shipped.state_dict().items()}
    recipe = E2EConfig(
        steps=3,
        tasks_per_step=4,
        examples_per_task=2,
        max_length=64,
        val_examples=2,
        base_dtype="float32",
        lr=3e-3,
        warmup_steps=1,
        val_every=3,
        kl_weight=0.01,  # one latent draw per step, dealt with the tasks
        posterior_fraction=posterior_fraction,
        contrast_weight=0.5,  # active at this margin: its shares must add up too
        contrast_margin=5.0,
    )
    settings = {"run": "ddp"}
    one = LoraCVAE(CVAEConfig.from_dict(config))
    one.load_state_dict(state)
    stage = EndToEnd(one.train(), bank, base, tasks, data, recipe)
    single = train_e2e(stage, tmp_path / "one", settings, progress=False)
    stage.close()
    job = e2e_distributed.Job(
        zoo=str(setup / "zoo"),
        generator_config=config,
        generator_state=state,
        recipe=asdict(recipe),
        state=str(tmp_path / "two"),
        settings=settings,
        base_model=str(tiny_model_dir),
        val_fraction=0.3,
        seed=0,
        exclude_same_family=True,
    )
    record = e2e_distributed.run(job, 2)
    assert record["step"] == single["step"] == 3
    a = LoraCVAE.from_pretrained(tmp_path / "one" / "checkpoint" / "generator").state_dict()
    b = LoraCVAE.from_pretrained(tmp_path / "two" / "checkpoint" / "generator").state_dict()
    moved = [n for n in a if not torch.equal(a[n], state[n])]
    assert moved  # the steps changed the generator...
    for name in a:  # ...in the same way in both runs
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)
    lines_one = e2e_state.read_metrics(tmp_path / "one")
    lines_two = e2e_state.read_metrics(tmp_path / "two")
    assert [x["step"] for x in lines_two] == [0, 1, 2, 3]  # logged once, by the first process
    for x, y in zip(lines_one[1:], lines_two[1:], strict=True):
        assert y["lm"] == pytest.approx(x["lm"], rel=1e-4)
        assert y["contrast"] == pytest.approx(x["contrast"], rel=1e-4)


def test_cli_runs_the_stage_in_two_processes(setup, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "2")
    argv += ["--sft-processes", "2", "--val-fraction", "0.3", "--sft-val-every", "2"]
    argv += ["--val-split", "expert"]
    assert main(argv) == 0
    assert "end-to-end stage: 2 steps; val_loss" in capsys.readouterr().out
    stage = json.loads((tmp_path / "gen" / "config.json").read_text())["extra"]["stages"][-1]
    assert stage["step"] == 2 and stage["best"]["val_loss"] <= stage["initial"]["val_loss"]
    assert LoraCVAE.from_pretrained(tmp_path / "gen").num_parameters() > 0


def test_a_checkpoint_caught_mid_swap_is_put_back(tmp_path):
    """A kill between moving the old checkpoint aside and renaming the new one in leaves only
    ``.checkpoint.old-*/x``: the resume puts it back instead of starting over."""
    aside = tmp_path / ".checkpoint.old-abc" / "x"
    aside.mkdir(parents=True)
    (aside / "state.json").write_text("{}")
    e2e_state._recover(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "state.json").read_text() == "{}"


def test_every_committed_recipe_parses_into_known_options():
    from training import cli as train_cli
    from training.options import parse_args

    recipes = sorted((Path(train_cli.__file__).parent / "recipes").glob("*.toml"))
    assert {r.name for r in recipes} >= {"generator-v1-stage1.toml", "generator-v1.toml"}
    for recipe in recipes:
        args = parse_args(["--config", str(recipe)], train_cli.build_parser())
        assert args.zoo and args.out and args.epochs == 0, recipe.name
    stage2 = parse_args(
        ["--config", str(recipes[0].parent / "generator-v1.toml")], train_cli.build_parser()
    )
    stage1 = parse_args(
        ["--config", str(recipes[0].parent / "generator-v1-stage1.toml")], train_cli.build_parser()
    )
    assert stage2.warm_start == stage1.out and stage1.layer_scales and stage1.k == 8


def test_family_weighted_validation_counts_each_family_once(parts):
    bank = parts[0]
    stage = _stage(parts, family_weighted_val=True)
    try:
        rows = stage.val_rows()
        assert len(rows) >= 2
        stage.bank.families = ["a"] * (len(bank.expert_ids) - 1) + ["b"]  # val: family a ...
        last = int(bank.row_expert[rows[-1]])
        stage.bank.families[last] = "b"  # ... and one task of family b
        shares = stage._val_shares(rows)
        assert sum(shares) == pytest.approx(1.0) and shares[-1] == pytest.approx(0.5)
        assert shares[0] == pytest.approx(0.5 / (len(rows) - 1))
        examples, owner = stage._val_examples(rows)
        merge = stage.merges(stage.batch(rows))
        with torch.no_grad():
            each = stage.lm_loss(merge, examples, owner, per_example=True)
            first = stage.lm_loss({k: v[:1] for k, v in merge.items()}, examples[:1], [0])
        assert each.shape == (len(examples),)
        assert float(each[0]) == pytest.approx(float(first), rel=1e-5)  # one example's own mean
        by_task = {t: [] for t in set(owner)}
        for loss, t in zip(each.tolist(), owner, strict=True):
            by_task[t].append(loss)
        expected = sum(shares[t] * sum(v) / len(v) for t, v in by_task.items())
        assert stage._val_loss(merge, examples, owner) == pytest.approx(expected, rel=1e-5)
        stage.config.family_weighted_val = False  # every task once: a different number
        assert stage._val_loss(merge, examples, owner) != pytest.approx(expected, rel=1e-5)
    finally:
        stage.close()


@pytest.fixture
def zoo_without_parity(setup, tmp_path):  # noqa: F811
    """The tiny zoo less its ``synthetic:parity`` expert: a catalogue task without an expert, in
    a family (number_choice) that keeps a member in the zoo."""
    zoo = tmp_path / "zoo"
    shutil.copytree(setup / "zoo", zoo)
    ExpertZoo(zoo).remove(expert_id_for("synthetic:parity"))
    return zoo


def test_tasks_without_an_expert_train_beside_the_zoos(parts, zoo_without_parity):
    _, _, model, base, _ = parts
    zoo = zoo_without_parity
    bank = ExpertBank.load(zoo)
    with pytest.raises(ValueError, match="no catalogue training task without an expert"):
        extra_tasks(zoo, bank, ["synthetic:sentiment"])  # it has its expert
    found = extra_tasks(zoo, bank, ["synthetic:par*", "synthetic:reverse_word"])
    assert [t.task_id for t in found] == ["synthetic:parity"]  # reverse_word is held out
    sibling = bank.families.index("number_choice")
    data = next(  # a split that leaves parity's family to training
        d
        for s in range(20)
        if sibling not in (d := GeneratorDataModule(bank, 3, 3, 0.15, s)).val_experts.tolist()
    )
    extra = ExtraTasks.build(found, bank, data)
    assert extra.dropped == [] and len(extra.row_task) == len(found[0].descriptions)
    val = set(data.val_experts.tolist())
    for neighbours in extra.idx.tolist():  # never its family, never a validation expert
        assert "number_choice" not in {bank.families[n] for n in neighbours}
        assert not val & set(neighbours)
    records = {r["expert_id"]: r for r in zoo_records(zoo)}
    tasks = load_zoo_tasks([records[e]["task_id"] for e in bank.expert_ids])
    settings = {"tasks_per_step": 2, "examples_per_task": 1, "max_length": 64, "val_examples": 2}
    config = E2EConfig(base_dtype="float32", **settings)
    plain = EndToEnd(model, bank, base, tasks, data, config)
    plain_val = plain.val_rows()
    plain.close()
    stage = EndToEnd(model, bank, base, tasks, data, config, extra)
    assert stage.val_rows() == plain_val  # validated on exactly the zoo's validation tasks
    new = len(bank)  # the extra task is expert number len(bank) of the stage
    rows = stage.rows_of[new]
    assert (rows >= len(bank.row_expert)).all() and len(rows) == len(found[0].descriptions)
    drawn = [r for step in range(12) for r in stage.draw(step)[0]]
    assert set(drawn) & set(rows.tolist())
    cond = stage.batch([int(rows[0])])
    plain = neighbour_inputs(
        model.layout,
        bank.weights,
        bank.expert_embeddings,
        torch.as_tensor(extra.embeddings[:1]),
        torch.as_tensor(extra.idx[:1]),
        torch.as_tensor(extra.sims[:1]),
        model.config.tau,
    )
    for name in model.layout.modules:  # its condition is the merge of its own neighbours
        torch.testing.assert_close(cond[f"merge.{name}"], plain[f"merge.{name}"])
    assert torch.isfinite(stage.step_loss(0)["loss"])
    for seed in range(40):  # a split that puts its family in validation leaves it out
        by_family = GeneratorDataModule(bank, 3, 3, 0.15, seed, split_by_family=True)
        if sibling in by_family.val_experts.tolist():
            left = ExtraTasks.build(found, bank, by_family)
            assert left.tasks == [] and left.dropped == ["synthetic:parity"]
            break
    else:
        pytest.fail("no seed of 40 drew the number_choice family for validation")


@pytest.mark.parametrize("processes", [1, 2])
def test_cli_trains_on_extra_tasks_and_records_them(
    setup,  # noqa: F811
    zoo_without_parity,
    tiny_model_dir,
    tmp_path,
    processes,
):
    bank = ExpertBank.load(zoo_without_parity)
    seed = next(  # a split whose validation expert is not parity's sibling, so parity trains
        s
        for s in range(20)
        if bank.families.index("number_choice")
        not in GeneratorDataModule(bank, 3, 1, 0.15, s).val_experts.tolist()
    )
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "2")
    argv[argv.index(str(setup / "zoo"))] = str(zoo_without_parity)
    argv += ["--val-fraction", "0.15", "--val-split", "expert", "--seed", str(seed)]
    argv += ["--sft-extra", "synthetic:parity", "--sft-processes", str(processes)]
    assert main(argv) == 0
    sft = json.loads((tmp_path / "gen" / "config.json").read_text())["extra"]["stages"][-1]
    assert sft["extra_tasks"] == ["synthetic:parity"] and sft["recipe"]["extra"] == [
        "synthetic:parity"
    ]
    state = json.loads((tmp_path / "logs" / "e2e-state" / "checkpoint" / "state.json").read_text())
    assert state["settings"]["extra_tasks"] == ["synthetic:parity"]


def test_cli_trust_radius_is_part_of_a_runs_settings(setup, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    state = tmp_path / "state"
    argv = ["--zoo", str(setup / "zoo"), "--epochs", "0", "--k", "3", "--state", str(state)]
    argv += ["--sft-steps", "2", "--sft-rows", "2", "--sft-examples", "1", "--val-fraction", "0"]
    argv += ["--base-model", str(tiny_model_dir), "--quiet", "--logs", str(tmp_path / "logs")]
    argv += ["--sft-warmup", "1", "--base-dtype", "float32", "--sft-lr", "1e-1"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--max-deviation", "0.2"]) == 0
    meta = json.loads((state / "checkpoint" / "state.json").read_text())
    assert meta["settings"]["max_deviation"] == 0.2
    assert LoraCVAE.from_pretrained(tmp_path / "a").config.max_deviation == 0.2
    resumed = [*argv, "--out", str(tmp_path / "b"), "--max-deviation", "0.4", "--sft-steps", "3"]
    resumed[resumed.index("--state")] = "--resume"
    assert main(resumed) == 2  # the same fresh weights, another radius: a new run, not this one
    assert "other settings (differing: max_deviation)" in capsys.readouterr().err


def test_source_shares_weigh_sources_then_families_then_tasks():
    names = ["freedict_a_b", "freedict_c_d", "freedict_c_d", "celex_x", "", "spam"]
    shares = _shares(names, by_source=True)  # sources: freedict (2 families), celex, "", spam
    assert shares == pytest.approx([1 / 8, 1 / 16, 1 / 16, 1 / 4, 1 / 4, 1 / 4])
    assert _shares(["x", "y"], by_source=True) == [0.5, 0.5]
    by_family = _shares(names)  # 5 families, freedict_c_d's two tasks share one
    assert by_family == pytest.approx([1 / 5, 1 / 10, 1 / 10, 1 / 5, 1 / 5, 1 / 5])


def test_balanced_draws_give_each_source_the_same_share(parts):
    bank = parts[0]
    stage = _stage(parts, balance_sources=True, tasks_per_step=1)
    experts = sorted(stage.rows_of)
    source = {e: stage.tasks[e].family.split("_", 1)[0] for e in experts}
    assert len(set(source.values())) < len(experts)  # some source holds several tasks
    drawn = [source[bank.row_expert[stage.draw(step)[0][0]]] for step in range(800)]
    for s in set(source.values()):  # every source about equally often, however many tasks
        assert abs(drawn.count(s) / len(drawn) - 1 / len(set(source.values()))) < 0.06
    plain = _stage(parts, tasks_per_step=1)
    assert [plain.draw(t) for t in range(20)] != [stage.draw(t) for t in range(20)]
    assert stage.draw(7) == _stage(parts, balance_sources=True, tasks_per_step=1).draw(7)
    rows = stage.val_rows()
    names = [bank.families[int(bank.row_expert[r])] for r in rows]
    assert stage._val_shares(rows) == _shares(names, by_source=True)
    assert (
        "balance_sources" not in E2EConfig().key()
        and E2EConfig(balance_sources=True).key()["balance_sources"]
    )
    stage.close()
    plain.close()


def _moving_decoder(model: LoraCVAE) -> LoraCVAE:
    """``model`` with random output heads and gates, so that the latent changes the adapter."""
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model._output_layers():
            layer.weight.normal_(0, 0.05)
    return model.eval()


def test_posterior_rows_read_their_expert_and_the_others_decode_the_prior_mean(parts):
    bank, _, model, _, _ = parts
    model = _moving_decoder(model)
    rows = np.unique(bank.row_expert, return_index=True)[1][:3].tolist()  # 3 experts' rows
    cond = model.condition_inputs(bank, bank.embeddings[rows])
    mask = torch.tensor([True, False, True])
    experts = torch.as_tensor(bank.row_expert[rows])[mask]
    targets = bank.gather(experts)
    eps = torch.zeros(2, model.config.latent_dim)
    chunks, kl, term = model.decode_posterior(cond, targets, mask, eps)
    prior_mean, _, _ = model.decode_prior(cond)
    for m in model.layout.modules:  # the unmasked row is the prior mean's adapter...
        torch.testing.assert_close(chunks[m][1], prior_mean[m][1])
        assert not torch.allclose(chunks[m][0], prior_mean[m][0])  # ...the masked ones are not
    assert kl[1] == 0 and (kl[[0, 2]] > 0).all()
    torch.testing.assert_close(term, kl)  # no free bits: the term is the KL
    other = bank.gather(experts.flip(0))  # another expert, another latent, another adapter
    swapped, _, _ = model.decode_posterior(cond, other, mask, eps)
    assert not torch.allclose(swapped["q_proj"][0], chunks["q_proj"][0])
    none, kl_none, _ = model.decode_posterior(cond, {}, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(none["q_proj"], prior_mean["q_proj"])
    assert (kl_none == 0).all()


def test_free_bits_leave_the_posterior_free_below_them_and_the_prior_learning(parts):
    bank, _, model, _, _ = parts
    model = _moving_decoder(model)
    rows = np.unique(bank.row_expert, return_index=True)[1][:2].tolist()
    cond = model.condition_inputs(bank, bank.embeddings[rows])
    mask = torch.ones(2, dtype=torch.bool)
    targets = bank.gather(torch.as_tensor(bank.row_expert[rows]))
    eps = torch.zeros(2, model.config.latent_dim)

    def grads(free_bits: float) -> tuple[Tensor, Tensor, dict[str, float]]:
        model.zero_grad()
        _, kl, term = model.decode_posterior(cond, targets, mask, eps, free_bits)
        term.sum().backward()
        norms = {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None}
        return kl.detach(), term.detach(), norms

    kl, term, plain = grads(0.0)
    big = float(kl.max()) + 1.0  # above both rows' KL: the posterior pays a constant
    kl_free, term_free, free = grads(big)
    torch.testing.assert_close(kl_free, kl)
    torch.testing.assert_close(term_free, kl + big)  # KL(sg(q) || p) + λ
    assert plain["post_net.0.weight"] > 0 and free.get("post_net.0.weight", 0.0) == 0.0
    assert free["prior_net.0.weight"] > 0  # the prior still moves toward the posterior
    _, term_low, low = grads(1e-9)  # below the KL: the posterior pays it
    torch.testing.assert_close(term_low, 2 * kl)
    assert low["post_net.0.weight"] > 0
    with pytest.raises(ValueError, match="free_bits"):
        E2EConfig(free_bits=1.0)


def test_the_posterior_fraction_trains_the_posterior_and_needs_a_kl_weight(parts):
    with pytest.raises(ValueError, match="needs kl_weight"):
        E2EConfig(posterior_fraction=0.5)
    with pytest.raises(ValueError, match="posterior_fraction must be in"):
        E2EConfig(posterior_fraction=1.5, kl_weight=0.1)
    _moving_decoder(parts[2]).train()
    stage = _stage(parts, tasks_per_step=4, posterior_fraction=0.5, kl_weight=0.1)
    rows = stage.draw(0)[0]
    assert stage.posterior_mask(rows).tolist() == [True, True, False, False]
    parts_ = stage.step_loss(0)
    assert torch.isfinite(parts_["loss"]) and parts_["kl"] > 0
    parts_["loss"].backward()
    grads = {n: p.grad for n, p in stage.model.named_parameters()}
    assert grads["post_net.0.weight"].abs().sum() > 0  # the posterior and the prior both learn
    assert grads["prior_net.0.weight"].abs().sum() > 0
    val = stage.validate()
    assert np.isfinite(val["val_loss_posterior"]) and val["val_loss_posterior"] != val["val_loss"]
    stage.close()
    free = _stage(parts, tasks_per_step=4, posterior_fraction=0.5, kl_weight=0.1, free_bits=50.0)
    logged = free.step_loss(0)  # the same draw: the KL itself, and the term with 50 free nats
    assert logged["kl_q"] == pytest.approx(float(parts_["kl"]), rel=1e-4)
    assert float(logged["kl"]) == pytest.approx(float(parts_["kl"]) + 50.0 / 2, rel=1e-4)  # 2 of 4
    free.close()


def test_the_radius_penalty_measures_the_reach_past_the_trust_radius(parts):
    bank, tasks, model, base, data = parts
    with pytest.raises(ValueError, match="has none"):
        _stage(parts, radius_weight=1.0)  # the tiny generator has no trust radius
    config = CVAEConfig.from_dict({**model.config.to_dict(), "max_deviation": 0.01})
    bounded = _moving_decoder(LoraCVAE(config))
    bounded.load_state_dict(model.state_dict())
    _moving_decoder(bounded).train()
    recipe = {"tasks_per_step": 2, "examples_per_task": 2, "max_length": 64, "val_examples": 2}
    stage = EndToEnd(
        bounded,
        bank,
        base,
        tasks,
        data,
        E2EConfig(base_dtype="float32", radius_weight=0.5, **recipe),
    )
    got = stage.step_loss(0)
    assert got["radius"] > 0  # random heads reach far past a 1% radius
    rest = got["lm"] + 1e-3 * got["anchor"]
    torch.testing.assert_close(got["loss"], rest + 0.5 * got["radius"])
    rows = stage.draw(0)[0]
    cond = stage.batch(rows)
    with torch.no_grad():  # the same number from the decoder's raw change, by hand
        c = bounded.condition(cond)
        mu, _ = bounded.prior(c)
        bounded.config = CVAEConfig.from_dict({**config.to_dict(), "max_deviation": 0.0})
        torch.manual_seed(0)
        raw = bounded.eval().decode(mu, c, cond)
        bounded.config = config
        reach = []
        for m in bounded.layout.modules:
            d = bounded.denormalise(m, raw[m]) - cond[f"merge.{m}"]
            r = 0.01 * cond[f"merge.{m}"].norm(dim=-1)
            reach.append((d.norm(dim=-1) / r - 1).clamp_min(0).pow(2).mean(-1))
        bounded.decode(mu, c, cond)
    expected = torch.stack(reach).mean(0)
    measured = torch.stack(list(bounded.radius_excess.values())).mean(0)
    torch.testing.assert_close(measured, expected, rtol=1e-4, atol=1e-6)
    stage.close()


def test_change_cos_tells_a_shared_offset_from_changes_of_each_tasks_own():
    torch.manual_seed(0)
    n, layers, r, d_in, d_out = 4, 3, 2, 12, 10

    def lora(rows: int) -> dict[str, Tensor]:
        return {
            "q.A": torch.randn(rows, layers, r, d_in),
            "q.B": torch.randn(rows, layers, d_out, r),
        }

    def plus(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
        """ΔW_a + ΔW_b as one LoRA of twice the rank."""
        return {
            "q.A": torch.cat([a["q.A"], b["q.A"]], -2),
            "q.B": torch.cat([a["q.B"], b["q.B"]], -1),
        }

    merge = lora(n)
    shared = {k: v[:1].expand(n, *v.shape[1:]) for k, v in lora(1).items()}
    assert change_cos(plus(merge, shared), merge, ["q"]) == pytest.approx(1.0, abs=1e-4)
    own = lora(n)  # independent random changes: nearly orthogonal in 360 dimensions
    assert abs(change_cos(plus(merge, own), merge, ["q"])) < 0.2
    half = {k: torch.cat([shared[k], own[k]], -2 if k.endswith("A") else -1) for k in own}
    assert 0.2 < change_cos(plus(merge, half), merge, ["q"]) < 0.8
    assert "change_cos" in geometry(plus(merge, own), merge, ["q"])
    assert "change_cos" not in geometry(
        {k: v[:1] for k, v in merge.items()}, {k: v[:1] for k, v in merge.items()}, ["q"]
    )


def test_reach_diagnostic_reads_the_runs_validation_tasks_and_the_radius(
    parts,
    setup,  # noqa: F811
    tmp_path,
    capsys,
):
    bank, tasks, model, base, data = parts
    config = CVAEConfig.from_dict({**model.config.to_dict(), "max_deviation": 0.01})
    bounded = LoraCVAE(config)
    bounded.load_state_dict(model.state_dict())
    _moving_decoder(bounded).train()
    recipe = {"tasks_per_step": 2, "examples_per_task": 1, "max_length": 64, "val_examples": 1}
    stage = EndToEnd(
        bounded, bank, base, tasks, data, E2EConfig(base_dtype="float32", steps=1, **recipe)
    )
    train_e2e(stage, tmp_path / "state", {"run": 1}, progress=False)
    stage.close()
    folder = bounded.save_pretrained(tmp_path / "gen")
    result = diagnostics.reach(setup / "zoo", tmp_path / "state", folder)
    assert result["tasks"] == len(e2e_state.read_metrics(tmp_path / "state")[0]["val_experts"])
    assert result["reach"][0.5] > 1  # random heads reach far past a 1% radius
    assert -1 <= result["change_cos"] <= 1 and result["sample_spread"] >= 0
    argv = ["reach", "--zoo", str(setup / "zoo"), "--state", str(tmp_path / "state")]
    assert diagnostics.main([*argv, "--generator", str(folder)]) == 0
    assert '"change_cos"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no validation experts"):
        diagnostics.reach(setup / "zoo", tmp_path, folder)  # not a state folder
