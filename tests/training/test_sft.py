"""The end-to-end stage (training/sft.py) on the tiny model and the tiny synthetic-task zoo of
test_evaluate: the batched LoRA forward is PEFT's, gradients reach the generator and never the
base model, a few steps lower the validation tasks' loss, and the CLI runs the stage."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from hypergen.apply import apply_adapter
from hypergen.bank import ExpertBank
from hypergen.base_model import load_base_model
from hypergen.cvae import LoraCVAE
from hypergen.layout import LoraLayout
from tests.conftest import random_adapter, tiny_llama
from tests.training.test_evaluate import RECIPE, one_thread, setup  # noqa: F401  (fixtures)
from training import diagnostics
from training.baselines import load_zoo_tasks, zoo_records
from training.cli import SFT_RESCUE, main
from training.data import GeneratorDataModule
from training.module import new_model
from training.sft import BatchedLora, SFTModule, first_description_loader


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


def test_gradients_reach_the_generator_and_never_the_base_model(parts):
    bank, tasks, model, base, data = parts
    module = SFTModule(model, bank, base, tasks, examples_per_row=2, max_length=64)
    loss = module.training_step(next(iter(data.train_dataloader())), 0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is None for p in base.model.parameters())
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["heads.q_proj.1.weight"].abs().sum() > 0
    assert grads["cond_net.0.weight"].abs().sum() > 0
    module.teardown("fit")


def test_the_stage_checks_its_inputs(parts):
    bank, tasks, model, base, _ = parts
    with pytest.raises(ValueError, match="one task per expert"):
        SFTModule(model, bank, base, tasks[:-1])
    with pytest.raises(ValueError, match="examples_per_row"):
        SFTModule(model, bank, base, tasks, examples_per_row=0)


def test_a_few_steps_lower_the_loss_on_the_validation_experts_tasks(parts):
    bank, tasks, model, base, data = parts
    module = SFTModule(model, bank, base, tasks, examples_per_row=2, max_length=64, lr=3e-3)
    val = next(iter(first_description_loader(data, batch_size=8)))
    assert set(val["expert"].tolist()) == set(data.val_experts.tolist())

    def val_loss():
        with torch.no_grad():
            examples, rows = module.examples(val["expert"], train=False)
            return float(module.lm_loss(module.adapters(module.condition(val)), examples, rows))

    before, opt = val_loss(), module.configure_optimizers()
    for batch, _ in zip(data.train_dataloader(), range(12), strict=False):
        opt.zero_grad()
        module.training_step(batch, 0).backward()
        opt.step()
    assert val_loss() < before
    module.teardown("fit")


def _warm_start_argv(root, tiny_model_dir, tmp_path, *extra) -> list[str]:
    """hypergen-train from the setup generator, end-to-end stage only, into ``tmp_path/gen``."""
    argv = ["--zoo", str(root / "zoo"), "--out", str(tmp_path / "gen")]
    argv += ["--warm-start", str(root / "generator"), "--epochs", "0", "--sft-rows", "2"]
    argv += ["--sft-examples", "2", "--base-model", str(tiny_model_dir), "--quiet"]
    return [*argv, "--logs", str(tmp_path / "logs"), *extra]


def test_cli_runs_the_stage_after_a_warm_start(setup, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "gen"
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "4")
    argv += ["--sft-val-every", "2", "--val-fraction", "0.3"]
    assert main(argv) == 0
    assert "end-to-end stage: val_sft_loss" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())["extra"]
    sft = record["sft"]
    assert sft["steps"] == 4 and sft["seconds"] > 0
    start = sft["initial_metrics"]
    assert {"val_sft_loss", "val_sft_loss_merge", "val_sft_loss_base"} <= set(start)
    assert sft["best_val_sft_loss"] <= start["val_sft_loss"]
    assert "epochs" not in record  # no reconstruction epochs ran
    assert record["warm_start"] == str(setup / "generator")
    assert record["warm_start_record"] == LoraCVAE.from_pretrained(setup / "generator").config.extra
    reloaded = LoraCVAE.from_pretrained(out)
    original = LoraCVAE.from_pretrained(setup / "generator")
    changed = [
        n for n, p in reloaded.state_dict().items() if not torch.equal(p, original.state_dict()[n])
    ]
    assert not sft["improved"] or changed
    assert np.isfinite(sft["last_metrics"]["train_sft_loss"])


def test_gates_only_training_changes_only_the_gates(setup, tiny_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "gen"
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "3")
    argv += ["--sft-train", "gates", "--sft-lr", "1e-2", "--val-fraction", "0"]
    argv += ["--save-dtype", "float32"]  # float16 rounding would change every weight
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["extra"]["sft"]["trained"] == "gates"
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


def test_a_stage_that_fails_leaves_its_best_generator(setup, tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    def fail_at_the_end(self):  # as if a validation had improved, then the logger died
        self.best_score = 0.5
        self.best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        with torch.no_grad():
            next(iter(self.best_state.values())).add_(1.0)
        raise RuntimeError("the logger died")

    monkeypatch.setattr(SFTModule, "on_train_end", fail_at_the_end, raising=False)
    argv = _warm_start_argv(setup, tiny_model_dir, tmp_path, "--sft-steps", "2")
    with pytest.raises(RuntimeError, match="the logger died"):
        main([*argv, "--val-fraction", "0"])
    assert not (tmp_path / "gen").exists()
    rescued = LoraCVAE.from_pretrained(tmp_path / "logs" / SFT_RESCUE)
    assert rescued.config.extra["sft_failed"] and rescued.config.extra["best_val_sft_loss"] == 0.5
    original = LoraCVAE.from_pretrained(setup / "generator").state_dict()
    name = next(iter(original))
    torch.testing.assert_close(rescued.state_dict()[name], original[name] + 1.0, atol=2e-3, rtol=0)


def test_merge_scale_diagnostic_agrees_with_the_stage_validation(setup, tiny_model_dir, capsys):  # noqa: F811
    """Scale 1 is the merge and scale 0 no adapter: the same numbers the stage's own validation
    logs (val_sft_loss_merge, val_sft_loss_base) on the same split."""
    zoo = str(setup / "zoo")
    losses, n = diagnostics.merge_scale_losses(
        zoo, [0.0, 1.0, 2.0], 2, 3, 0.1, 0.3, 0, tiny_model_dir
    )
    bank = ExpertBank.load(zoo)
    records = {r["expert_id"]: r for r in zoo_records(zoo)}
    tasks = load_zoo_tasks([records[e]["task_id"] for e in bank.expert_ids])
    data = GeneratorDataModule(bank, k=3, batch_size=4, val_fraction=0.3, seed=0)
    data.setup()
    model = new_model(bank, data.train_experts, k=3, tau=0.1)
    module = SFTModule(model, bank, load_base_model(tiny_model_dir), tasks, 2, RECIPE.max_length)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(module, first_description_loader(data, 4), verbose=False)[0]
    assert n == 2 * len(data.val_experts) > 0
    # (rel 1e-4: Lightning averages the logged batch means in float32; another split or other
    # examples would be off by far more)
    assert losses[1.0] == pytest.approx(logged["val_sft_loss_merge"], rel=1e-4)
    assert losses[0.0] == pytest.approx(logged["val_sft_loss_base"], rel=1e-4)
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
