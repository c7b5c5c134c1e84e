"""The quality benchmark (``hypergen-eval``) on the tiny model, a tiny zoo of synthetic-task
experts and an untrained generator: every method scores every task, the outputs are written, a
failing method fails the run, and the topk-merge and gain-share arithmetic is exact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from expert_zoo.store import ExpertRecord, ExpertZoo, expert_id_for
from expert_zoo.tasks import is_held_out, synthetic_tasks
from expert_zoo.train import ExpertTrainConfig
from hypergen.base_model import BaseModel
from hypergen.encoder import TaskEncoder
from hypergen.layout import LoraLayout, delta_weights
from hypergen.router import NeighbourRouter
from tests.conftest import byte_tokenizer, random_adapter, tiny_llama
from training.evaluation import evaluate, methods, report
from training.evaluation.baselines import AdapterSlot, merge_topk, similarity_weights
from training.module import new_model

RECIPE = ExpertTrainConfig(steps=2, batch_size=4, max_length=64, eval_examples=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and leave the other core to other jobs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A zoo of random experts for the 7 zoo-side synthetic tasks and an untrained generator."""
    root = tmp_path_factory.mktemp("eval")
    encoder = TaskEncoder()
    layout = LoraLayout.for_model(tiny_llama())
    zoo = ExpertZoo(root / "zoo")
    zoo_tasks = [t for t in synthetic_tasks() if not is_held_out(t.family)]
    for i, task in enumerate(zoo_tasks):
        record = ExpertRecord(
            expert_id=expert_id_for(task.task_id),
            task_id=task.task_id,
            family=task.family,
            descriptions=list(task.descriptions),
            encoder=encoder.name,
            base_model="tiny-llama",
            layout=layout.to_dict(),
            metrics={"recipe": asdict(RECIPE)},
        )
        adapter = random_adapter(layout, seed=i, scale=0.2)
        zoo.add(record, adapter, encoder.encode(list(task.descriptions)))
    from hypergen.bank import ExpertBank

    bank = ExpertBank.load(zoo.root)
    torch.manual_seed(0)
    model = new_model(bank, np.arange(len(bank)), k=3, hidden_dim=32, latent_dim=4, cond_dim=16)
    with torch.no_grad():  # as if trained: the heads start at zero, which ignores the latent
        for name, param in model.named_parameters():
            if name.startswith("heads."):
                param.normal_(0, 0.02)
    model.save_pretrained(root / "generator")
    users = {
        t.task_id: [f"please {t.family.replace('_', ' ')}", f"my {t.family} task, done well"]
        for t in synthetic_tasks()
        if is_held_out(t.family)
    }
    (root / "users.json").write_text(json.dumps({"descriptions": users}))
    return root


def _argv(setup, tiny_model_dir, out, *extra) -> list[str]:
    return [
        "--generator",
        str(setup / "generator"),
        "--zoo",
        str(setup / "zoo"),
        "--base-model",
        str(tiny_model_dir),
        "--source",
        "synthetic",
        "--eval-examples",
        "4",
        "--oracle-steps",
        "2",
        "--multitask-steps",
        "2",
        "--best-of-n",
        "2",
        "--paraphrases",
        "2",
        "--user-descriptions",
        str(setup / "users.json"),
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def full_run(setup, tiny_model_dir):
    out = setup / "results"
    every = ",".join(methods.METHODS)  # the optional methods too
    NeighbourRouter(384, k=3).save_pretrained(setup / "router")  # a fresh one: the top-k merge
    argv = _argv(setup, tiny_model_dir, out, "--methods", every, "--router", str(setup / "router"))
    assert evaluate.main(argv) == 0
    return out, json.loads((out / "results.json").read_text())


def test_every_method_scores_every_task(full_run):
    out, results = full_run
    held_out = sorted(t.task_id for t in synthetic_tasks() if is_held_out(t.family))
    assert [t["task_id"] for t in results["tasks"]] == held_out
    assert results["methods"] == list(methods.METHODS)
    for task in results["tasks"]:
        assert task["n"] == 4
        assert set(task["scores"]) == set(methods.METHODS)
        assert all(0.0 <= s <= 1.0 for s in task["scores"].values())
        assert set(task["losses"]) == set(methods.METHODS)
        assert all(0.0 < x < 50.0 for x in task["losses"].values())
        assert task["losses"]["hypergen"] == task["details"]["hypergen"]["runs"][0]["answer_loss"]
        if task["metric"] == "mc_accuracy":
            assert set(task["choice_losses"]) == set(methods.METHODS)
            assert all(x >= 0 for x in task["choice_losses"].values())
        else:
            assert "choice_losses" not in task
        for m in ("base+description", "nearest", "hypergen"):  # original + 2 paraphrases
            detail = task["details"][m]
            assert len(detail["by_description"]) == 3
            assert detail["spread"]["min"] <= detail["score"] <= detail["spread"]["max"]
        merge = task["details"]["topk-merge"]
        assert len(merge["experts"]) == 3 and abs(sum(merge["weights"]) - 1) < 1e-6
        best = task["details"][report.BEST_OF_N]
        picked = best["selection_scores"]
        assert len(picked) == 2 and picked[best["best_sample"]] == max(picked)
    assert set(results["summary"]["means"]) == set(methods.METHODS)
    loss = results["summary"]["losses"]
    for m in methods.METHODS:
        per_task = [t["losses"][m] for t in results["tasks"]]
        assert loss[m]["mean"] == pytest.approx(sum(per_task) / len(per_task))
    below = sum(t["losses"]["oracle"] < t["losses"]["base"] for t in results["tasks"])
    assert loss["oracle"]["below_base"] == below and "below_base" not in loss["base"]
    assert set(results["timings"]) == set(methods.METHODS)
    assert results["training"]["multitask"]["steps"] == 2
    assert set(results["training"]["oracle"]) == set(held_out)
    assert results["config"]["recipe"]["steps"] == 2 and results["config"]["k"] == 3
    assert results["command"].startswith("hypergen-eval --generator ")


def test_outputs_written(full_run):
    out, results = full_run
    md = (out / "results.md").read_text()
    assert f"Command: `{results['command']}`" in md
    assert "| **mean** |" in md and "hypergen-best-of-n†" in md and "chosen on 5" in md
    assert "Spread over descriptions" in md
    spread = md.split("Spread over descriptions", 1)[1].split("\n\n")[1].splitlines()[2:]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in spread}
    # the controls give the generator one text per task: no spread row for them
    assert "hypergen" in rows and not {"hypergen-random", "hypergen-other"} & set(rows)
    assert len(rows["hypergen"]) == 3 + 3  # the task's description and 2 paraphrases; 3 figures
    assert rows["hypergen-user"][2] == "–"  # two user descriptions: the third column is empty
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_rerun_reuses_cached_adapters(full_run, setup, tiny_model_dir, tmp_path):
    """Without the method results (another output folder), the trained adapters of cache/ are
    reused and score the same."""
    out, first = full_run
    shutil.copytree(out / "cache", tmp_path / "cache")
    argv = _argv(setup, tiny_model_dir, tmp_path, "--methods", "oracle,multitask,base")
    assert evaluate.main(argv) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["methods"] == ["base", "multitask", "oracle"]
    assert again["training"]["multitask"]["cached"] is True
    assert all(m["cached"] for m in again["training"]["oracle"].values())
    for a, b in zip(first["tasks"], again["tasks"], strict=True):
        for m in again["methods"]:  # same examples, same adapters: same numbers
            assert a["scores"][m] == b["scores"][m]


def test_train_dtype_overrides_the_zoo_recipe(full_run, setup, tiny_model_dir, tmp_path):
    """--train-dtype trains the oracle on a base model in that precision, not the recipe's: the
    cached float32 adapters are not reused for it, and the run records the recipe it used."""
    out, first = full_run
    assert "base_dtype" not in first["config"]["recipe"]  # float32: left out of the record
    shutil.copytree(out / "cache", tmp_path / "cache")
    shutil.copytree(out / "method-cache", tmp_path / "method-cache")
    argv = _argv(
        setup, tiny_model_dir, tmp_path, "--methods", "base,oracle", "--train-dtype", "bfloat16"
    )
    assert evaluate.main(argv) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["config"]["recipe"]["base_dtype"] == "bfloat16"
    assert again["config"]["train_dtype"] == "bfloat16"
    assert not any(m["cached"] for m in again["training"]["oracle"].values())
    keys = [json.loads(f.read_text()) for f in (tmp_path / "cache" / "oracle").glob("*/key.json")]
    assert len(keys) == len(again["tasks"])
    assert {k["recipe"]["base_dtype"] for k in keys} == {"bfloat16"}
    for a, b in zip(first["tasks"], again["tasks"], strict=True):  # base did not train: cached
        assert b["details"]["base"]["cached"] and a["scores"]["base"] == b["scores"]["base"]
        assert not b["details"]["oracle"].get("cached")


def test_cached_results_of_another_recipe_train_again(
    full_run, setup, tiny_model_dir, tmp_path, monkeypatch
):
    """The method cache is keyed by the zoo's expert ids, not by the recipe the harness derives
    from them: a stored multitask result is reused only while the recipe it was trained with is
    this run's (here the derivation changes, as multitask_recipe's did when it dropped early
    stopping), and the oracle of the same rerun, whose recipe did not change, is reused."""
    out, _ = full_run
    runs = {}
    for name, lr in (("same", None), ("changed", 3e-3)):
        shutil.copytree(out / "method-cache", tmp_path / name / "method-cache")
        if lr is not None:
            derive = methods.multitask_recipe

            def derive_otherwise(*args, derive=derive, lr=lr):
                return replace(derive(*args), lr=lr)

            monkeypatch.setattr(methods, "multitask_recipe", derive_otherwise)
        argv = _argv(setup, tiny_model_dir, tmp_path / name, "--methods", "base,multitask,oracle")
        assert evaluate.main(argv) == 0
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    same, changed = runs["same"], runs["changed"]
    assert all(t["details"][m]["cached"] for t in same["tasks"] for m in same["methods"])
    assert changed["training"]["multitask"]["recipe"]["lr"] == 3e-3
    for task in changed["tasks"]:
        assert not task["details"]["multitask"].get("cached")
        assert task["details"]["oracle"]["cached"] and task["details"]["base"]["cached"]
    stored = (tmp_path / "changed" / "method-cache" / "multitask").glob("*.json")
    assert {json.loads(f.read_text())["training"]["recipe"]["lr"] for f in stored} == {3e-3}


def test_zoo_methods_cached_without_the_generator(full_run, setup, tiny_model_dir):
    """A run of the zoo-side methods alone (the generator not loaded) finds the results of a run
    that loaded it, and top-k merge is the generator's k (3 here, not CVAEConfig's default)."""
    out, first = full_run
    zoo_side = ["nearest", "topk-merge", "multitask", "oracle"]
    argv = _argv(setup, tiny_model_dir, out, "--methods", ",".join(zoo_side))
    assert evaluate.main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["config"]["k"] == 3
    n = len(again["tasks"]) * len(zoo_side)
    assert (
        f"({n} of the {n} method results read from method-cache/"
        in (out / "results.md").read_text()
    )
    for a, b in zip(first["tasks"], again["tasks"], strict=True):
        assert all(b["details"][m]["cached"] for m in zoo_side)
        assert len(b["details"]["topk-merge"]["experts"]) == 3
        assert all(a["scores"][m] == b["scores"][m] for m in zoo_side)


def test_hypergen_methods_cached_per_generator(full_run, setup, tiny_model_dir, tmp_path):
    out, first = full_run
    argv = _argv(setup, tiny_model_dir, out, "--methods", "hypergen,hypergen-user")
    assert evaluate.main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    for a, b in zip(first["tasks"], again["tasks"], strict=True):
        assert all(b["details"][m]["cached"] for m in again["methods"])
        assert a["scores"]["hypergen-user"] == b["scores"]["hypergen-user"]
    other = tmp_path / "generator"  # the same weights, another file: another fingerprint
    shutil.copytree(argv[1], other)
    (other / "note.txt").write_text("a copy")
    argv[1] = str(other)
    assert evaluate.main(argv) == 0
    fresh = json.loads((out / "results.json").read_text())
    assert not any(t["details"]["hypergen"].get("cached") for t in fresh["tasks"])


def test_failing_method_fails_the_run(setup, tiny_model_dir, tmp_path, monkeypatch, capsys):
    def broken(h, task, examples):
        raise RuntimeError("no expert for you")

    monkeypatch.setitem(methods.RUNNERS, "nearest", broken)
    argv = _argv(setup, tiny_model_dir, tmp_path, "--methods", "base,nearest")
    assert evaluate.main(argv) == 1
    assert "method 'nearest' failed on task synthetic:" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_missing_generator_or_unknown_method_fails(setup, tiny_model_dir, tmp_path, capsys):
    argv = _argv(setup, tiny_model_dir, tmp_path, "--methods", "hypergen")
    argv[1] = str(tmp_path / "nowhere")
    assert evaluate.main(argv) == 1
    assert "no generator checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(_argv(setup, tiny_model_dir, tmp_path, "--methods", "base,magic"))


def test_gain_share_on_a_hand_made_example():
    scores = [
        {"base": 0.2, "oracle": 0.6, "m": 0.4},  # half of the gain
        {"base": 0.5, "oracle": 0.7, "m": 0.7},  # all of it
        {"base": 0.5, "oracle": 0.5, "m": 0.9},  # oracle does not beat base: left out
        {"base": 0.3, "oracle": 0.1, "m": 0.0},  # nor here
        {"base": 0.4, "oracle": 0.8, "m": 0.3},  # worse than base: -0.25
    ]
    share = report.gain_share(scores, "m")
    assert share["tasks"] == 3
    assert share["value"] == pytest.approx((0.5 + 1.0 - 0.25) / 3)
    assert report.gain_share(scores[2:4], "m") == {"value": None, "tasks": 0}
    assert report.spread([0.2, 0.5, 0.2])["range"] == pytest.approx(0.3)


def test_topk_merge_is_the_weighted_sum_of_updates(tiny_layout):
    experts = [random_adapter(tiny_layout, seed=s) for s in range(3)]
    weights = similarity_weights(np.array([0.9, 0.7, 0.2]), tau=0.1)
    assert weights.sum() == pytest.approx(1.0) and weights[0] > weights[1] > weights[2]
    merged = merge_topk(experts, weights.tolist())
    assert merged.layout.rank == 3 * tiny_layout.rank
    assert merged.layout.scaling == tiny_layout.scaling
    got = delta_weights(merged.layout, merged.weights)
    for m in tiny_layout.modules:
        want = sum(
            w * delta_weights(tiny_layout, e.weights)[m]
            for w, e in zip(weights, experts, strict=True)
        )
        torch.testing.assert_close(got[m], want.float(), atol=1e-5, rtol=1e-5)


def test_merged_adapter_acts_as_the_weighted_sum_in_the_model(tiny_layout):
    experts = [random_adapter(tiny_layout, seed=s, scale=0.3) for s in range(2)]
    merged = merge_topk(experts, [0.25, 0.75])
    model = tiny_llama()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        before = model(ids).logits
        slot = AdapterSlot(BaseModel(model, byte_tokenizer(), "tiny"))
        merged_logits = slot.use(merged)(ids).logits
        reference = tiny_llama()
        for m in tiny_layout.modules:
            delta = sum(
                w * delta_weights(tiny_layout, e.weights)[m]
                for w, e in zip([0.25, 0.75], experts, strict=True)
            )
            for layer in range(tiny_layout.num_layers):
                path = tiny_layout.paths[m].format(layer=layer)
                reference.get_submodule(path).weight += delta[layer]
        torch.testing.assert_close(merged_logits, reference(ids).logits, atol=1e-4, rtol=1e-4)
        slot.use(experts[0])  # another rank: unloaded and attached afresh
        assert torch.equal(slot.use(None)(ids).logits, before)  # the base is exactly restored


def test_eval_examples_are_fixed_by_the_seed():
    task = synthetic_tasks(n_eval=16)[0]
    a = evaluate.eval_examples(task, 5, seed=0)
    assert a == evaluate.eval_examples(task, 5, seed=0)
    assert a != evaluate.eval_examples(task, 5, seed=1)
    assert set(a) <= set(task.eval) and len(a) == 5
    assert evaluate.eval_examples(task, 100, seed=0) == list(task.eval)


def test_help_documents_every_method(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    text = capsys.readouterr().out
    for m in methods.METHODS:
        assert m in text
    for option in ("--multitask-steps", "--oracle-steps", "--paraphrases", "--best-of-n"):
        assert option in text


def test_a_stopped_run_resumes_where_it_stopped(setup, tiny_model_dir, tmp_path, monkeypatch):
    """A run killed on its second task keeps the first; the rerun scores only what is left."""
    argv = _argv(setup, tiny_model_dir, tmp_path, "--methods", "base,topk-merge")
    held_out = sorted(t.task_id for t in synthetic_tasks() if is_held_out(t.family))
    real_merge, calls = methods.RUNNERS["topk-merge"], []

    def dies_on_the_second_task(h, task, examples):
        if task.task_id == held_out[1]:
            raise KeyboardInterrupt  # as when the user stops it: nothing catches this
        return real_merge(h, task, examples)

    monkeypatch.setitem(methods.RUNNERS, "topk-merge", dies_on_the_second_task)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(argv)
    lines = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["task_id"] == held_out[0]
    with (tmp_path / "progress.jsonl").open("a") as f:
        f.write(lines[1] + "\n")  # the same task finished twice (two runs at once): kept once
        f.write('{"task_id": "cut short by a kill')  # a half-written line is run again

    def counted(h, task, examples):
        calls.append(task.task_id)
        return real_merge(h, task, examples)

    monkeypatch.setitem(methods.RUNNERS, "topk-merge", counted)
    assert evaluate.main(argv) == 0
    assert calls == held_out[1:]
    saved = (tmp_path / "progress.jsonl").read_text().splitlines()[1:]
    assert [json.loads(x)["task_id"] for x in saved] == [held_out[0], *held_out]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["resumed_tasks"] == 1
    assert (
        "(1 tasks read back from a stopped run's progress.jsonl"
        in (tmp_path / "results.md").read_text()
    )
    assert [t["task_id"] for t in results["tasks"]] == held_out
    assert results["tasks"][0]["scores"] == json.loads(lines[1])["scores"]
    assert results["timings"]["topk-merge"] == pytest.approx(
        sum(t["details"]["topk-merge"]["seconds"] for t in results["tasks"]), abs=0.05
    )

    calls.clear()  # another seed changes the numbers: nothing is reused
    assert evaluate.main([*argv, "--seed", "1"]) == 0
    assert calls == held_out
    assert json.loads((tmp_path / "results.json").read_text())["resumed_tasks"] == 0
    assert (tmp_path / "progress.jsonl.old").exists()
    calls.clear()
    assert evaluate.main([*argv, "--seed", "1", "--fresh"]) == 0
    assert calls == held_out


def test_multiple_choice_tasks_get_a_choice_loss(setup, tiny_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "mc"
    extra = ["--tasks", "all", "--families", "number_choice,string_edit"]
    extra += ["--methods", "base,topk-merge", "--paraphrases", "0"]
    assert evaluate.main(_argv(setup, tiny_model_dir, out, *extra)) == 0
    results = json.loads((out / "results.json").read_text())
    mc = [t for t in results["tasks"] if t["metric"] == "mc_accuracy"]
    assert 0 < len(mc) < len(results["tasks"])
    assert all("choice_losses" in t for t in mc)
    choice = results["summary"]["choice_losses"]
    for m in ("base", "topk-merge"):
        assert choice[m]["tasks"] == len(mc)
        assert choice[m]["mean"] == pytest.approx(np.mean([t["choice_losses"][m] for t in mc]))
    text = (out / "results.md").read_text()
    assert f"choice loss (NLL of the gold option), lower is better** ({len(mc)} tasks)" in text


def test_per_family_keeps_the_first_tasks_of_each_family(setup, tiny_model_dir, tmp_path):
    argv = _argv(setup, tiny_model_dir, tmp_path, "--methods", "base", "--per-family", "1")
    assert evaluate.main(argv) == 0
    tasks = json.loads((tmp_path / "results.json").read_text())["tasks"]
    first = min(t.task_id for t in synthetic_tasks() if is_held_out(t.family))
    assert [t["task_id"] for t in tasks] == [first]


def test_controls_user_descriptions_generation_and_paired_intervals(full_run, setup):
    out, results = full_run
    users = json.loads((setup / "users.json").read_text())["descriptions"]
    for task in results["tasks"]:
        random_run = task["details"]["hypergen-random"]["runs"][0]
        assert random_run["description"] != task["descriptions"][0]
        assert len(random_run["description"]) <= len(task["descriptions"][0])
        other = task["details"]["hypergen-other"]["runs"][0]["description"]
        assert other != task["descriptions"][0]  # another task's description
        user_runs = task["details"]["hypergen-user"]["runs"]
        texts = users[task["task_id"]]
        assert [r["description"] for r in user_runs] == texts[: task["n"]]
        dealt = sorted(j for r in user_runs for j in r["examples"])
        assert dealt == list(range(task["n"]))  # every example scored once, by one description
        for r in user_runs:
            assert all(j % len(texts) == texts.index(r["description"]) for j in r["examples"])
        user = task["details"]["hypergen-user"]
        assert task["scores"]["hypergen-user"] == pytest.approx(np.mean(user["correct"]))
        for m in methods.METHODS:
            assert len(task["details"][m]["correct"]) == task["n"]
        if task["metric"] == "mc_accuracy":
            skipped = {"nearest", "hypergen-random", "hypergen-other", report.BEST_OF_N}
            assert set(task["generation"]) == set(methods.METHODS) - skipped
            for m in set(methods.METHODS) - skipped:
                g = task["generation"][m]
                assert 0 <= g["gen_accuracy"] <= g["in_format"] <= 1
    pairs = {(p["a"], p["b"]): p for p in results["summary"]["paired"]}
    assert {("hypergen", m) for m in methods.METHODS if m != "hypergen"} <= set(pairs)
    assert ("hypergen-user", "hypergen-random") in pairs
    p = pairs[("hypergen", "base")]
    assert p["low"] <= p["diff"] <= p["high"] and p["tasks"] == len(results["tasks"])
    md = report.markdown(results)  # (later tests rewrite the folder's results.md)
    assert "| hypergen | base |" in md and "95% interval" in md


def test_a_new_generator_rescores_only_the_hypergen_methods(
    full_run, setup, tiny_model_dir, tmp_path, monkeypatch
):
    out, first = full_run
    import shutil

    other = tmp_path / "generator"
    shutil.copytree(setup / "generator", other)
    (other / "note.txt").write_text("another checkpoint")  # another fingerprint, same weights
    calls = []
    for m in ("base", "in-context", "hypergen"):
        real = methods.RUNNERS[m]

        def counted(h, task, examples, real=real, m=m):
            calls.append(m)
            return real(h, task, examples)

        monkeypatch.setitem(methods.RUNNERS, m, counted)
    argv = _argv(setup, tiny_model_dir, out, "--methods", "base,in-context,hypergen")
    argv[1] = str(other)
    assert evaluate.main(argv) == 0
    assert calls == ["hypergen"] * len(first["tasks"])  # base and in-context read back
    again = json.loads((out / "results.json").read_text())
    for a, b in zip(first["tasks"], again["tasks"], strict=True):
        assert a["scores"]["base"] == b["scores"]["base"]
        assert a["scores"]["hypergen"] == b["scores"]["hypergen"]


def test_the_default_methods_leave_out_only_the_optional_ones():
    assert evaluate.parse_methods(None) == [m for m in methods.METHODS if m not in methods.OPTIONAL]
    assert "hypergen-random" in evaluate.parse_methods(None)


def test_multitask_recipe_trains_the_budget_without_early_stopping():
    """The zoo v2 recipe validates on a task's last 32 training examples; on the union of the
    zoo's tasks those are one task's, so the multitask LoRA trains its budget without them."""
    zoo = ExpertTrainConfig(steps=64, max_seconds=600, val_examples=32, val_every=16, patience=2)
    capped = methods.multitask_recipe(zoo, 180, 480)
    assert (capped.steps, capped.max_seconds, capped.val_examples) == (480, 600 * 180, 0)
    assert (capped.lr, capped.batch_size, capped.rank) == (zoo.lr, zoo.batch_size, zoo.rank)
    assert methods.multitask_recipe(zoo, 3, None).steps == 64 * 3
    assert methods.multitask_recipe(zoo, 3, 1000).steps == 64 * 3
    assert (
        methods.multitask_recipe(ExpertTrainConfig(max_seconds=None), 3, None).max_seconds is None
    )
