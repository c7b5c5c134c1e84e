"""Diagnostics of the generator's room to learn, on the validation experts of ``hypergen-train``'s
split (no training).

``merge-scale``: the validation answer loss of the neighbours' merge scaled by ``s`` (ΔW → s·ΔW).
It asks whether the generator's gates (which rescale the merge per layer and module) have
anything to learn in the simplest direction: when the loss is flat or lowest at ``s = 1``, a
global rescaling of the merge cannot beat the untrained generator.

``headroom``: per validation task, the answer loss of no adapter, of the merge of its ``k``
retrieved neighbours at several softmax temperatures, of each neighbour alone, of a generator
(optional) and of the task's own expert (the oracle, which the generator never sees). It bounds
what a generator that only re-weights its neighbours could gain: the best single neighbour per
task (an oracle re-ranking) and the best temperature per task (an oracle mixing) against the
merge, and how far the own expert is beyond any of them (what must come from elsewhere).

``reach``: for a generator and the validation experts of a ``hypergen-train`` state folder
(their first descriptions, never retrieving a validation expert nor one of the task's own
family, as in training), how far the decoder's change to the merge reaches past its trust radius (``|d| / r``
per row, layer and module: past 1 the bound saturates and the output follows only ``d``'s
direction), the changes' mean cosine between tasks (near 1: one shared offset), and the spread
of two samples. Needs no base model.

Examples::

    python -m training.scripts.diagnostics merge-scale --zoo expert_zoo/zoo --examples 8
    python -m training.scripts.diagnostics headroom --zoo expert_zoo/zoo --out headroom.json
    python -m training.scripts.diagnostics reach --zoo /tmp/zoo-291 \
        --state results/generator-v22/state --generator results/generator-v22/state/best
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hypergen.conditioning import merge_pairs
from hypergen.cvae import CVAEConfig, LoraCVAE
from training.data import GeneratorDataModule, load_bank
from training.e2e import E2EConfig, EndToEnd
from training.e2e_tasks import zoo_tasks
from training.module import new_model


def _validation_stage(zoo, bank, data, model, examples, seed, base_model, base_dtype="float32"):
    """The end-to-end stage over ``data``'s split (no training), its validation rows, and their
    first ``examples`` eval examples with the row (0..) each belongs to."""
    from hypergen.base_model import load_base_model

    tasks, recipe = zoo_tasks(zoo, bank)
    config = E2EConfig(
        val_examples=examples, max_length=recipe.max_length, base_dtype=base_dtype, seed=seed
    )
    stage = EndToEnd(model, bank, load_base_model(base_model), tasks, data, config)
    rows = stage.val_rows()
    if not rows:
        stage.close()
        raise SystemExit("no validation experts: raise --val-fraction")
    picked, owner = stage._val_examples(rows)
    return stage, rows, picked, owner


def merge_scale_losses(
    zoo: str,
    scales: list[float],
    examples: int,
    k: int,
    tau: float,
    val_fraction: float,
    seed: int,
    base_model: str | None = None,
) -> tuple[dict[float, float], int]:
    """``{scale: mean answer loss}`` over the validation experts, and the number of examples."""
    bank = load_bank(zoo)
    data = GeneratorDataModule(bank, k, 4, val_fraction, seed, False)
    data.setup()
    model = new_model(bank, data.train_experts, k=k, tau=tau)
    stage, rows, picked, owner = _validation_stage(
        zoo, bank, data, model, examples, seed, base_model
    )
    try:
        merge = stage.merges(stage.batch(rows))
        sums = {}
        for s in scales:
            scaled = {n: v * s if n.endswith(".B") else v for n, v in merge.items()}
            sums[s] = stage._val_loss(scaled, picked, owner)
    finally:
        stage.close()
    return sums, len(picked)


def _task_losses(stage: EndToEnd, weights, examples, owner) -> np.ndarray:
    """Mean answer loss per validation task (``owner`` indexes both tasks and adapters)."""
    per_example = stage.example_losses(weights, examples, owner).numpy()
    owner = np.asarray(owner)
    return np.array([per_example[owner == t].mean() for t in range(owner.max() + 1)])


def headroom(
    zoo: str,
    taus: list[float],
    examples: int,
    k: int,
    val_fraction: float,
    seed: int,
    split_by_family: bool = True,
    exclude_same_family: bool = True,
    generator: str | None = None,
    base_model: str | None = None,
    base_dtype: str = "float32",
    singles: bool = True,
) -> dict:
    """Per validation task, the answer losses of the module docstring's ``headroom``.

    Returns ``{"experts", "families", "losses": {name: [per task]}, "means",
    "family_means", "examples"}``: names ``base``, ``merge tau=<t>``, ``neighbour <j>`` (j-th
    nearest alone), ``best neighbour`` / ``best tau`` (per task, the lowest of those), ``own
    expert`` and, with ``generator``, ``generator``; without ``singles`` no neighbour is scored
    alone (``k`` single adapters cost as much as ``k`` merges). ``family_means`` count each family once.
    """
    with torch.no_grad():
        bank = load_bank(zoo)
        data = GeneratorDataModule(
            bank, k, 4, val_fraction, seed, exclude_same_family, 0, split_by_family
        )
        data.setup()
        model = (
            LoraCVAE.from_pretrained(generator)
            if generator
            else new_model(bank, data.train_experts, k=k)
        )
        if model.config.k != k:
            raise SystemExit(
                f"the generator retrieves k={model.config.k}: pass --k {model.config.k}"
            )
        stage, rows, picked, owner = _validation_stage(
            zoo, bank, data, model, examples, seed, base_model, base_dtype
        )
        try:
            experts = torch.as_tensor(bank.row_expert[rows])
            idx = torch.as_tensor(data.idx[rows])
            sims = torch.as_tensor(data.sims[rows]).float()
            zoo_w = bank.weights
            modules = model.layout.modules

            def score(weights):
                return _task_losses(stage, weights, picked, owner)

            out = {"base": score(None)}
            for tau in taus:
                w = torch.softmax(sims / tau, dim=-1)
                merged = {}
                for m in modules:
                    a, b = zoo_w[f"{m}.A"], zoo_w[f"{m}.B"]
                    merged[f"{m}.A"], merged[f"{m}.B"] = merge_pairs(a[idx], b[idx], w)
                out[f"merge tau={tau:g}"] = score(merged)
            for j in range(k if singles else 0):
                out[f"neighbour {j}"] = score({n: v[idx[:, j]].float() for n, v in zoo_w.items()})
            if generator:
                model.eval()
                weights, _ = stage.adapters(stage.batch(rows))
                out["generator"] = score(weights)
            out["own expert"] = score({n: v[experts].float() for n, v in zoo_w.items()})
        finally:
            stage.close()
    if singles:
        out["best neighbour"] = np.stack([out[f"neighbour {j}"] for j in range(k)]).min(0)
    out["best tau"] = np.stack([out[f"merge tau={t:g}"] for t in taus]).min(0)
    ids = [bank.expert_ids[int(e)] for e in experts]
    families = [bank.families[int(e)] or ids[i] for i, e in enumerate(experts)]
    weight = np.array(stage._val_shares(rows))  # each family once, as family_weighted_val
    return {
        "experts": ids,
        "families": families,
        "examples": len(picked),
        "losses": {n: [round(float(x), 4) for x in v] for n, v in out.items()},
        "means": {n: round(float(v.mean()), 4) for n, v in out.items()},
        "family_means": {n: round(float((v * weight).sum()), 4) for n, v in out.items()},
    }


@torch.no_grad()
def reach(zoo, state: Path, generator: Path) -> dict:
    """``|d| / r`` quantiles, ``change_cos``, ``cos_merge``, ``norm_ratio`` and ``sample_spread``
    of ``generator`` on the validation experts named in ``state``'s metrics (``reach`` above)."""
    from training.e2e_state import read_metrics
    from training.lora_batch import geometry, sample_spread

    bank, model = load_bank(zoo), LoraCVAE.from_pretrained(generator)
    ids = next((x["val_experts"] for x in read_metrics(state) if "val_experts" in x), None)
    if not ids:
        raise SystemExit(f"{state}: no validation experts in its metrics")
    experts = [bank.expert_ids.index(e) for e in ids]
    rows = [int(np.flatnonzero(bank.row_expert == e)[0]) for e in experts]
    val = set(experts)  # as in training: no validation expert, nor one of the own family
    exclude = [
        val | {j for j, f in enumerate(bank.families) if f == bank.families[e]} for e in experts
    ]
    cond = model.condition_inputs(bank, bank.embeddings[rows], exclude)
    chunks, _, _ = model.decode_prior(cond)
    ratios = [model.radius_reach[m].flatten() for m in model.layout.modules if model.radius_reach]
    weights = model.to_weights(chunks)
    merge = model.to_weights(
        {m: model.normalise(m, cond[f"merge.{m}"]) for m in model.layout.modules}, scale=False
    )
    out = geometry(weights, merge, model.layout.modules)
    torch.manual_seed(0)
    one = model.to_weights(model.decode_prior(cond, 1.0)[0])
    two = model.to_weights(model.decode_prior(cond, 1.0)[0])
    out["sample_spread"] = sample_spread(one, two, weights, model.layout.modules)
    if ratios:
        ratio = torch.cat(ratios)
        out["reach"] = {q: float(ratio.quantile(q)) for q in (0.1, 0.5, 0.9)}
    out["tasks"] = len(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.scripts.diagnostics", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("merge-scale", help="validation answer loss of the merge scaled by s")
    q.add_argument("--zoo", default="expert_zoo/zoo", help="zoo folder (default: %(default)s)")
    q.add_argument("--scales", default="0,0.5,1,1.5,2,3", help="comma-separated s values")
    q.add_argument("--examples", type=int, default=8, help="eval examples per validation expert")
    q.add_argument("--k", type=int, default=CVAEConfig.k, help="neighbours (default: %(default)s)")
    q.add_argument(
        "--tau",
        type=float,
        default=CVAEConfig.tau,
        help="weights' temperature (default: %(default)s)",
    )
    q.add_argument("--val-fraction", type=float, default=0.1, help="as hypergen-train's")
    q.add_argument("--seed", type=int, default=0, help="as hypergen-train's (the split)")
    q.add_argument("--base-model", help="transformers folder or .gguf (default: SmolLM2-135M)")
    h = sub.add_parser("headroom", help="losses of merges, single neighbours and the own expert")
    h.add_argument("--zoo", default="expert_zoo/zoo", help="zoo folder (default: %(default)s)")
    h.add_argument("--taus", default="0.02,0.05,0.1,0.3,1", help="merge temperatures")
    h.add_argument("--examples", type=int, default=8, help="eval examples per validation expert")
    h.add_argument("--k", type=int, default=CVAEConfig.k, help="neighbours (default: %(default)s)")
    h.add_argument("--val-fraction", type=float, default=0.1, help="as hypergen-train's")
    h.add_argument("--val-split", choices=("family", "expert"), default="family")
    h.add_argument("--seed", type=int, default=0, help="as hypergen-train's (the split)")
    h.add_argument(
        "--no-exclude-same-family",
        dest="exclude_same_family",
        action="store_false",
        help="let a task retrieve experts of its own family (hypergen-train's default excludes them)",
    )
    h.add_argument("--generator", help="also score this generator checkpoint folder")
    h.add_argument("--base-model", help="transformers folder or .gguf (default: SmolLM2-135M)")
    h.add_argument(
        "--base-dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="precision of the base model (bfloat16: faster only on CPUs with AVX-512 BF16)",
    )
    h.add_argument(
        "--no-singles",
        dest="singles",
        action="store_false",
        help="do not score each neighbour alone (saves k passes; no 'best neighbour' column)",
    )
    h.add_argument("--out", type=Path, help="write the per-task losses here (JSON)")
    g = sub.add_parser("reach", help="the change's reach past the trust radius, and its spread")
    g.add_argument("--zoo", default="expert_zoo/zoo", help="zoo folder (default: %(default)s)")
    g.add_argument("--state", type=Path, required=True, help="hypergen-train state folder")
    g.add_argument("--generator", type=Path, required=True, help="generator checkpoint folder")
    args = p.parse_args(argv)
    if args.command == "reach":
        result = reach(args.zoo, args.state, args.generator)
        by_task = ("norm_ratio_by_task", "cos_merge_by_task")
        print(json.dumps({k: v for k, v in result.items() if k not in by_task}, indent=1))
        return 0
    if args.command == "headroom":
        result = headroom(
            args.zoo,
            [float(t) for t in args.taus.split(",")],
            args.examples,
            args.k,
            args.val_fraction,
            args.seed,
            args.val_split == "family",
            args.exclude_same_family,
            args.generator,
            args.base_model,
            args.base_dtype,
            args.singles,
        )
        n, fams = len(result["experts"]), len(set(result["families"]))
        print(
            f"validation answer loss, {n} tasks from {fams} families, {result['examples']} examples"
        )
        print(f"  {'':18s} {'task mean':>10s} {'family mean':>12s}")
        for name, mean in result["means"].items():
            print(f"  {name:18s} {mean:10.4f} {result['family_means'][name]:12.4f}")
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
            print(f"wrote {args.out}")
        return 0
    scales = [float(s) for s in args.scales.split(",")]
    losses, n = merge_scale_losses(
        args.zoo,
        scales,
        args.examples,
        args.k,
        args.tau,
        args.val_fraction,
        args.seed,
        args.base_model,
    )
    print(f"validation answer loss over {n} examples (scale 0 = no adapter)")
    for s, loss in losses.items():
        print(f"  scale {s:4.2f}  {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
