"""Tests of generator training (training/): leave-one-out data, the Lightning module, the CLI.

Zoos are the structured toy zoos of ``tests/hypergen/test_cvae.py`` (weights a smooth function of
the description embeddings), so generalisation to held-out experts is measurable in seconds.
"""

from __future__ import annotations

import csv

import lightning as L
import numpy as np
import pytest
import torch

from expert_zoo.store import ExpertRecord, ExpertZoo
from hypergen.adapter_io import LoraAdapter
from hypergen.cvae import LoraCVAE
from tests.hypergen.test_cvae import ENCODER, structured_bank, tiny_layout
from training import cli
from training.data import GeneratorDataModule, exclusions, split_experts
from training.module import GeneratorModule, new_model

SIZES = dict(hidden_dim=64, latent_dim=8, cond_dim=32, pos_dim=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and do not fight other jobs for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quiet_trainer(epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


# --- data ---------------------------------------------------------------------------------------
def test_split_is_by_expert_and_deterministic():
    train, val = split_experts(24, 0.25, seed=3)
    assert len(val) == 6 and sorted([*train, *val]) == list(range(24))
    again = split_experts(24, 0.25, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, split_experts(24, 0.25, seed=4)[1])
    assert len(split_experts(24, 0.0, seed=3)[1]) == 0
    assert len(split_experts(2, 0.9, seed=0)[0]) == 1  # always one expert left to train on
    with pytest.raises(ValueError, match="val_fraction"):
        split_experts(24, 1.0, seed=0)


def test_split_of_eligible_experts_counts_and_draws_only_them():
    families = [f"f{i // 2}" for i in range(40)]  # 20 families of 2
    eligible = np.zeros(40, bool)
    eligible[[0, 1, 6, 7, 12, 13, 18, 19, 24, 25, 30, 31, 33]] = True  # f16 half eligible
    for seed in range(5):
        train, val = split_experts(40, 0.25, seed, families, eligible)
        assert sorted([*train, *val]) == list(range(40))
        assert {families[i] for i in val} <= {families[i] for i in np.flatnonzero(eligible)}
        assert not {families[i] for i in val} & {families[i] for i in train}  # whole families
        assert round(0.25 * 13) <= eligible[val].sum() < 13  # the share counts eligible ones
        train, val = split_experts(40, 0.25, seed, None, eligible)
        assert len(val) == round(0.25 * 13) and eligible[val].all()
    everyone = split_experts(40, 0.25, 3, families)
    same = split_experts(40, 0.25, 3, families, np.ones(40, bool))
    assert all(np.array_equal(a, b) for a, b in zip(everyone, same, strict=True))
    with pytest.raises(ValueError, match="eligible"):
        split_experts(40, 0.25, 0, families, np.zeros(40, bool))


def test_split_by_family_keeps_siblings_together():
    families = [f"f{i // 3}" for i in range(24)] + ["", ""]  # 8 families of 3, two loners
    train, val = split_experts(26, 0.25, seed=5, families=families)
    assert sorted([*train, *val]) == list(range(26)) and len(val) >= round(0.25 * 26)
    val_families = {families[i] for i in val if families[i]}
    train_families = {families[i] for i in train if families[i]}
    assert val_families and not val_families & train_families  # no sibling on both sides
    assert len(val) < 26 - 2  # whole families, but never all of them
    again = split_experts(26, 0.25, seed=5, families=families)
    assert np.array_equal(val, again[1])
    assert len(split_experts(26, 0.0, seed=5, families=families)[1]) == 0
    one_family = split_experts(4, 0.5, seed=0, families=["a"] * 4)  # nothing can be held out
    assert len(one_family[0]) == 4 and len(one_family[1]) == 0
    with pytest.raises(ValueError, match="family names"):
        split_experts(26, 0.25, seed=5, families=families[:-1])
    bank = structured_bank(num_experts=12, family_size=2)
    data = GeneratorDataModule(bank, k=3, val_fraction=0.25, split_by_family=True)
    val = set(data.val_experts.tolist())
    assert val and all((e ^ 1) in val for e in val)  # experts 2i and 2i+1 share a family


@pytest.mark.parametrize("same_family", [True, False])
def test_leave_one_out_never_retrieves_the_target(same_family):
    bank = structured_bank(num_experts=12, family_size=2)
    data = GeneratorDataModule(bank, k=3, val_fraction=0.25, exclude_same_family=same_family)
    data.setup()
    val = set(data.val_experts.tolist())
    siblings_seen = 0
    for row, expert in enumerate(bank.row_expert):
        found = set(data.idx[row].tolist())
        sibling = expert ^ 1  # experts 2i and 2i+1 share a family
        assert expert not in found and not found & val
        assert (sibling not in found) if same_family else True
        siblings_seen += sibling in found
    assert siblings_seen > 0 if not same_family else siblings_seen == 0
    # without leave-one-out every row would retrieve its own expert first (similarity 1)
    own = bank.search(bank.embeddings, 1)[0][:, 0]
    assert np.array_equal(own, bank.row_expert)
    assert exclusions(bank, np.array([5]), True)[0] == {0, 1, 5}


def test_rows_and_batches(tmp_path):
    bank = structured_bank(num_experts=12)
    data = GeneratorDataModule(bank, k=3, batch_size=4, val_fraction=0.25)
    batch = next(iter(data.train_dataloader()))
    assert batch["embedding"].shape == (4, 16) and batch["neighbours"].shape == (4, 3)
    train_rows = sum(len(b["row"]) for b in data.train_dataloader())
    val_rows = sum(len(b["row"]) for b in data.val_dataloader())
    assert train_rows == 2 * 9 and val_rows == 2 * 3
    assert set(b.item() for b in next(iter(data.val_dataloader()))["expert"]) <= set(
        data.val_experts.tolist()
    )
    with pytest.raises(ValueError, match="lower k"):
        GeneratorDataModule(bank, k=9, val_fraction=0.25).setup()


def test_kl_weight_warms_up_linearly():
    bank = structured_bank(num_experts=12)
    model = new_model(bank, np.arange(12), beta=0.5, **SIZES)
    module = GeneratorModule(model, bank, kl_warmup_steps=10)
    module.trainer = type("T", (), {"global_step": 0})()  # only global_step is read
    steps = {0: 0.0, 5: 0.25, 10: 0.5, 50: 0.5}
    for step, beta in steps.items():
        module.trainer.global_step = step
        assert module.beta() == pytest.approx(beta)
    assert GeneratorModule(model, bank, kl_warmup_steps=0).beta() == 0.5


# --- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A generator trained for 60 epochs on 18 of 24 experts; returns (module, before, after)."""
    bank = structured_bank(num_experts=24)
    L.seed_everything(0, verbose=False)
    data = GeneratorDataModule(bank, k=4, batch_size=8, val_fraction=0.25, seed=0)
    module = GeneratorModule(new_model(bank, data.train_experts, **SIZES), bank, lr=3e-3)
    trainer = quiet_trainer(60)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]
    trainer.fit(module, datamodule=data)
    after = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return module, before, after


def test_training_beats_the_zoo_mean_and_the_neighbours_on_held_out_experts(trained):
    module, before, after = trained
    mean_baseline = after["val_recon_mean_baseline"]
    assert mean_baseline == pytest.approx(before["val_recon_mean_baseline"])
    assert after["val_recon_prior"] < 0.5 * mean_baseline
    assert after["train_recon"] < 0.5 * before["val_recon_prior"]
    # the untrained decoder outputs the neighbours' merge (already far better than the zoo mean:
    # it carries the θ part); training must improve on it by reading the h part from c
    assert before["val_recon_prior"] == pytest.approx(before["val_recon_neighbour_baseline"])
    assert before["val_recon_neighbour_baseline"] < 0.7 * mean_baseline
    assert module.best_score < 0.9 * before["val_recon_neighbour_baseline"]
    assert module.best_score <= after["val_recon_prior"]


def test_the_best_weights_are_kept(trained):
    module, _, _ = trained
    model = LoraCVAE(module.model.config)
    model.load_state_dict(module.best_state)
    assert module.best_state is not None and model.num_parameters() > 0


# --- CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory):
    """A zoo folder of 8 structured experts, written with ExpertZoo.add."""
    bank = structured_bank(num_experts=8)
    zoo = ExpertZoo(tmp_path_factory.mktemp("zoo") / "zoo")
    for i, expert_id in enumerate(bank.expert_ids):
        record = ExpertRecord(
            expert_id=expert_id,
            task_id=f"synthetic:{expert_id}",
            family=bank.families[i],
            descriptions=bank.descriptions[i],
            encoder=ENCODER,
            base_model="tiny-llama",
            layout=bank.layout.to_dict(),
        )
        weights = {k: v[i] for k, v in bank.weights.items()}
        adapter = LoraAdapter(bank.layout, weights, "tiny-llama")
        zoo.add(record, adapter, bank.embeddings[bank.row_expert == i])
    return zoo.root


def run_cli(zoo, out, *extra) -> int:
    args = ["--zoo", str(zoo), "--out", str(out), "--epochs", "3", "--batch-size", "4"]
    sizes = ["--hidden-dim", "32", "--latent-dim", "4", "--k", "3", "--val-fraction", "0.25"]
    return cli.main([*args, *sizes, "--accelerator", "cpu", "--quiet", *extra])


def test_cli_trains_saves_and_warm_starts(zoo_folder, tmp_path, capsys):
    assert run_cli(zoo_folder, tmp_path / "gen") == 0
    assert "zoo mean" in capsys.readouterr().out
    model = LoraCVAE.from_pretrained(tmp_path / "gen", tiny_layout(), 16)
    config = model.config
    assert (config.zoo, config.encoder, config.base_model) == ("zoo", ENCODER, "tiny-llama")
    (stage,) = config.extra["stages"]
    assert stage["stage"] == "reconstruction" and stage["warm_start"] is None
    assert config.hidden_dim == 32 and stage["epochs"] == 3 and stage["zoo"] == "zoo"
    assert stage["train_experts"] == 6 and stage["val_experts"] == 2
    with open(next((tmp_path / "gen-logs" / "csv").rglob("metrics.csv"))) as f:
        columns = set(next(csv.reader(f)))
    assert {"train_recon", "val_recon_prior", "val_recon_mean_baseline"} <= columns
    assert (tmp_path / "gen-logs" / "checkpoints" / "last.ckpt").is_file()

    with pytest.raises(SystemExit, match="already exists"):
        run_cli(zoo_folder, tmp_path / "gen")
    warm = ["--warm-start", str(tmp_path / "gen"), "--beta", "0.05", "--logs", str(tmp_path / "l")]
    assert run_cli(zoo_folder, tmp_path / "gen2", *warm) == 0
    tuned = LoraCVAE.from_pretrained(tmp_path / "gen2")
    first, second = tuned.config.extra["stages"]  # the history stays, flat, oldest first
    assert tuned.config.beta == 0.05 and second["warm_start"] == str(tmp_path / "gen")
    assert first == stage and second["epochs"] == 3
    for name in ("mean_q_proj", "std_v_proj"):  # the warm start keeps its normalisation
        assert torch.equal(tuned.state_dict()[name], model.state_dict()[name])


def test_cli_refuses_a_mismatched_warm_start_or_zoo(zoo_folder, tmp_path, capsys):
    other = structured_bank(tiny_layout(rank=4), num_experts=8)
    new_model(other, np.arange(8), **SIZES).save_pretrained(tmp_path / "r4")
    assert run_cli(zoo_folder, tmp_path / "gen", "--warm-start", str(tmp_path / "r4")) == 2
    assert "rank: expected 8, found 4" in capsys.readouterr().err
    renamed = new_model(structured_bank(num_experts=8), np.arange(8), **SIZES)
    renamed.config.encoder = "other-encoder"
    renamed.save_pretrained(tmp_path / "enc")
    assert run_cli(zoo_folder, tmp_path / "gen", "--warm-start", str(tmp_path / "enc")) == 2
    assert "encoder 'other-encoder', but the zoo uses 'test-encoder'" in capsys.readouterr().err
    assert run_cli(tmp_path / "no-zoo", tmp_path / "gen") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli(zoo_folder, tmp_path / "gen", "--k", "7") == 2
    assert "lower k" in capsys.readouterr().err
    assert not (tmp_path / "gen").exists()


def test_cli_reads_an_export_file_and_documents_its_options(zoo_folder, tmp_path, capsys):
    export = ExpertZoo(zoo_folder).export(tmp_path / "zoo.safetensors")
    assert run_cli(export, tmp_path / "gen", "--val-fraction", "0", "--dw-weight", "0.1") == 0
    config = LoraCVAE.from_pretrained(tmp_path / "gen").config
    assert (
        config.zoo == "zoo"
        and config.dw_weight == 0.1
        and config.extra["stages"][-1]["val_experts"] == 0
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--zoo", "--warm-start", "--strategy", "--num-nodes", "--kl-warmup"):
        assert option in text


def test_the_reconstruction_stage_under_lightnings_ddp_on_cpu(zoo_folder, tmp_path):
    """Two processes (gloo, ``ddp_spawn``): the spawned processes' best weights and counts come
    back to the caller through the safetensors + JSON hand-off (a spawned module's attributes
    do not)."""
    argv = ["--devices", "2", "--strategy", "ddp_spawn", "--logs", str(tmp_path / "logs")]
    assert run_cli(zoo_folder, tmp_path / "gen", *argv) == 0
    (stage,) = LoraCVAE.from_pretrained(tmp_path / "gen", tiny_layout(), 16).config.extra["stages"]
    assert stage["epochs"] == 3 and stage["steps"] > 0
    assert stage["best_val_objective_prior"] is not None
    assert stage["best_val_objective_prior"] <= stage["last_metrics"]["val_objective_prior"] + 1e-6
    assert (tmp_path / "logs" / "reconstruction-end" / "weights.safetensors").is_file()
