"""``python -m training.scripts.diagnostics merge-scale``: the validation answer loss of the neighbours'
merge scaled by ``s`` (ΔW → s·ΔW), on the validation experts' tasks of ``hypergen-train``'s split.

It asks whether the generator's gates (which rescale the merge per layer and module) have
anything to learn in the simplest direction: when the loss is flat or lowest at ``s = 1``, a
global rescaling of the merge cannot beat the untrained generator.

Example::

    python -m training.scripts.diagnostics merge-scale --zoo expert_zoo/zoo --examples 8
"""

from __future__ import annotations

import argparse
import sys

from hypergen.cvae import CVAEConfig
from training.data import GeneratorDataModule, load_bank
from training.e2e import E2EConfig, EndToEnd, zoo_tasks
from training.module import new_model


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
    from hypergen.base_model import load_base_model

    bank = load_bank(zoo)
    data = GeneratorDataModule(bank, k, 4, val_fraction, seed, False)
    data.setup()
    model = new_model(bank, data.train_experts, k=k, tau=tau)
    tasks, recipe = zoo_tasks(zoo, bank)
    config = E2EConfig(
        val_examples=examples, max_length=recipe.max_length, base_dtype="float32", seed=seed
    )
    stage = EndToEnd(model, bank, load_base_model(base_model), tasks, data, config)
    try:
        rows = stage.val_rows()
        if not rows:
            raise SystemExit("no validation experts: raise --val-fraction")
        picked, owner = stage._val_examples(rows)
        merge = stage.merges(stage.batch(rows))
        sums = {}
        for s in scales:
            scaled = {n: v * s if n.endswith(".B") else v for n, v in merge.items()}
            sums[s] = stage._val_loss(scaled, picked, owner)
    finally:
        stage.close()
    return sums, len(picked)


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
    args = p.parse_args(argv)
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
