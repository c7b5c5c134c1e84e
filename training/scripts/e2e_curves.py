"""``python -m training.scripts.e2e_curves STATE [STATE ...] --out curves.png``: the validation
curves of end-to-end runs (``hypergen-train`` state folders, :mod:`training.e2e`), one line per
run: the validation answer loss against the neighbours' merge and no adapter; the generated
ΔW's norm over the merge's; and the other-description control's gap (the loss with another
validation task's adapter minus the loss with the task's own: above 0 the generator's output
depends on the task, and a gap that grows says it reads the description more than retrieval
alone does; the table also gives ``change cos``, the mean cosine between tasks of the change to
the merge: near 1 it is one shared offset); and, for runs with a latent, the spread of two samples' ΔW and the loss with the
posterior's latent given the task's own expert (dotted: what the latent can carry). Prints the
same numbers as a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.e2e_state import read_metrics


def validated(state: Path) -> list[dict]:
    """The metric lines of ``state`` that carry a validation (step 0 first)."""
    return [line for line in read_metrics(state) if "val_loss" in line]


def table(runs: dict[str, list[dict]]) -> str:
    rows = [
        "| run | step | val loss | merge | no adapter | other − own | ΔW norm / merge | cos "
        "| change cos | posterior | sample spread |"
    ]
    rows.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, lines in runs.items():
        ref = lines[0] if lines else {}
        for x in lines:
            gap = x.get("val_loss_other", float("nan")) - x["val_loss"]
            rows.append(
                f"| {name} | {x['step']} | {x['val_loss']:.4f} | {ref.get('val_loss_merge', float('nan')):.4f} "
                f"| {ref.get('val_loss_base', float('nan')):.4f} | {gap:+.4f} "
                f"| {x.get('norm_ratio', float('nan')):.2f} | {x.get('cos_merge', float('nan')):.3f} "
                f"| {x.get('change_cos', float('nan')):.3f} "
                f"| {x.get('val_loss_posterior', float('nan')):.4f} "
                f"| {x.get('sample_spread', float('nan')):.4f} |"
            )
    return "\n".join(rows)


def plot(runs: dict[str, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for name, lines in runs.items():
        steps = [x["step"] for x in lines]
        (line,) = axes[0].plot(steps, [x["val_loss"] for x in lines], marker="o", label=name)
        if any("val_loss_posterior" in x for x in lines):
            post = [x.get("val_loss_posterior", float("nan")) for x in lines]
            axes[0].plot(steps, post, ls=":", c=line.get_color())
        axes[3].plot(steps, [x.get("sample_spread", float("nan")) for x in lines], marker="o")
        axes[1].plot(steps, [x.get("norm_ratio", float("nan")) for x in lines], marker="o")
        gaps = [x.get("val_loss_other", float("nan")) - x["val_loss"] for x in lines]
        axes[2].plot(steps, gaps, marker="o")
        if lines and "val_loss_merge" in lines[0]:
            axes[0].axhline(lines[0]["val_loss_merge"], ls="--", c="grey", lw=1)
    axes[0].set(title="validation loss (dashed: merge; dotted: posterior)", xlabel="step")
    axes[1].set(title="‖ΔW generated‖ / ‖ΔW merge‖", xlabel="step", yscale="log")
    axes[2].set(title="other-description loss − own", xlabel="step")
    axes[3].set(title="‖ΔW₁ − ΔW₂‖ / ‖ΔW‖ of two samples", xlabel="step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.scripts.e2e_curves", description=__doc__)
    p.add_argument("states", nargs="+", type=Path, help="end-to-end state folders")
    p.add_argument("--out", type=Path, help="PNG to write (default: print the table only)")
    args = p.parse_args(argv)
    runs = {}
    for state in args.states:
        lines = validated(state)
        if not lines:
            print(
                f"{state}: no validated steps (is it an end-to-end state folder?)", file=sys.stderr
            )
            return 2
        runs[state.parent.name if state.name == "state" else state.name] = lines
    print(table(runs))
    if args.out is not None:
        plot(runs, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
