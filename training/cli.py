"""``hypergen-train``: train the generator (a conditional VAE over LoRA weights) on an expert zoo.

Examples::

    hypergen-train --zoo expert_zoo/zoo --out generators/default
    hypergen-train --zoo grown-zoo.safetensors --out generators/v2 --warm-start generators/default
    hypergen-train --zoo zoo.safetensors --out gen --accelerator gpu --devices 4 --strategy ddp
    hypergen-train --zoo expert_zoo/zoo --out gen-e2e --warm-start gen --epochs 0 --sft-steps 200
    hypergen-train --zoo expert_zoo/zoo --out gen-ls --epochs 0 --k 8 --layer-scales \
        --sft-train layer-scales --sft-steps 60 --sft-rows 8 --sft-lr 2e-2   # the shipped kind
    hypergen-train --config training/recipes/generator-v2.toml   # a recipe file; rerun: resumes

The generator is written with ``LoraCVAE.save_pretrained`` (``config.json`` + ``model.safetensors``)
holding the weights with the best validation loss (``val_objective_prior`` of the reconstruction
epochs, then the end-to-end stage's ``val_loss``; the last ones when there is no validation split).
The reconstruction epochs log to ``--logs`` (default ``<out>-logs``: CSV, TensorBoard when
installed, and Lightning's own pickle ``.ckpt`` files, which hypergen never loads). The end-to-end
stage (:mod:`training.e2e`) keeps its state in ``--state`` (default ``<logs>/e2e-state``:
safetensors and JSON, no pickle) and continues from it when the same command runs again, or with
``--resume DIR``; a larger ``--sft-steps`` extends a finished run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from hypergen.base_model import load_base_model
from hypergen.cvae import CheckpointError, CVAEConfig, LoraCVAE
from hypergen.errors import HypergenError
from training import e2e, e2e_distributed, provenance
from training.data import GeneratorDataModule, load_bank
from training.e2e import TRAINABLE, E2EConfig, EndToEnd, check_trainable, zoo_tasks
from training.module import GeneratorModule, new_model

logger = logging.getLogger("hypergen.train")
_ARCH_HELP = {
    "latent_dim": "size of the latent z",
    "hidden_dim": "width of hidden layers and chunk projections",
    "cond_dim": "size of the condition vector",
    "pos_dim": "size of the layer/module embeddings",
    "head_rank": "bottleneck of the chunk projections and output heads (sets most of the size)",
    "k": "neighbours retrieved per description",
    "tau": "softmax temperature over neighbour similarities",
    "dropout": "dropout in the condition network and decoder",
}
_ARCH = (*_ARCH_HELP, "summary_in_decoder", "layer_scales")
_DEFAULTS = SimpleNamespace(**{f.name: f.default for f in fields(CVAEConfig)})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hypergen-train",
        description="Train the hypergen generator (a conditional VAE over LoRA weights) on a zoo.",
        epilog=__doc__.split("\n", 2)[2],
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
        choices=sorted(e2e.DTYPES),
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


def _hardware(args) -> dict:
    """The ``lightning.Trainer`` arguments of the hardware group."""
    names = ("accelerator", "devices", "strategy", "num_nodes", "precision")
    return {name: getattr(args, name) for name in names}


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _losses(args) -> dict:
    given = {"beta": args.beta, "dw_weight": args.dw_weight, "recon_weight": args.recon_weight}
    return {k: v for k, v in given.items() if v is not None}


def _warm_start(args, bank) -> LoraCVAE:
    """The generator at ``--warm-start``, checked against the zoo, with the new loss settings."""
    model = LoraCVAE.from_pretrained(args.warm_start, bank.layout, bank.dim)
    for name in ("encoder", "base_model"):
        mine, theirs = getattr(model.config, name), getattr(bank, name)
        if mine and theirs and mine != theirs:
            raise CheckpointError(
                f"--warm-start {args.warm_start} was trained with {name} {mine!r}, "
                f"but the zoo uses {theirs!r}"
            )
    for name, value in _losses(args).items():
        setattr(model.config, name, value)
    logger.info("warm start from %s (keeps its architecture and normalisation)", args.warm_start)
    return model.train()


def _trainer(args, logs: Path, has_val: bool, steps_per_epoch: int) -> L.Trainer:
    """A Trainer with CSV (+ TensorBoard) logs and checkpoints; ``steps_per_epoch`` on one
    device sets the logging interval."""
    world = args.num_nodes * (args.devices if isinstance(args.devices, int) else 1)
    loggers = [CSVLogger(str(logs), name="csv")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(str(logs), name="tensorboard"))
    checkpoint = ModelCheckpoint(
        dirpath=str(logs / "checkpoints"),
        monitor="val_objective_prior" if has_val else None,
        mode="min",
        save_last=True,
    )
    return L.Trainer(
        max_epochs=args.epochs,
        **_hardware(args),
        logger=loggers,
        callbacks=[checkpoint],
        gradient_clip_val=1.0,
        log_every_n_steps=max(1, min(50, steps_per_epoch // world)),
        limit_val_batches=None if has_val else 0,
        enable_progress_bar=not args.quiet,
        enable_model_summary=not args.quiet,
    )


def _record(
    module: GeneratorModule, trainer: L.Trainer, data: GeneratorDataModule, args, seconds: float
) -> dict:
    metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items()}
    return {
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seconds": round(seconds, 1),
        "train_experts": len(data.train_experts),
        "val_experts": len(data.val_experts),
        "best_val_objective_prior": (
            None if module.best_state is None else round(module.best_score, 6)
        ),
        "initial_metrics": {k: round(float(v), 6) for k, v in module.initial_metrics.items()},
        "last_metrics": metrics,
        "warm_start": None if args.warm_start is None else str(args.warm_start),
        "seed": args.seed,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line over the ``--config`` recipe's values (see :func:`read_recipe`)."""
    parser = build_parser()
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


def read_recipe(path: Path, parser: argparse.ArgumentParser) -> dict:
    """``{option dest: value}`` of a TOML recipe (top-level keys, ``-`` or ``_``); an unknown
    key or a value of the wrong type is an error naming it."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"--config {path}: {exc}")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    values = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            parser.error(f"--config {path}: unknown option {key!r}")
        if action.type is not None and not isinstance(value, bool):
            try:
                value = action.type(value)
            except (TypeError, ValueError) as exc:
                parser.error(f"--config {path}: {key} = {value!r}: {exc}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"--config {path}: {key} must be one of {list(action.choices)}")
        values[dest] = value
    return values


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out.exists() and not args.overwrite:
        raise SystemExit(
            f"hypergen-train: {args.out} already exists: pass --overwrite to replace it"
        )
    try:
        return train(args)
    except (HypergenError, ValueError) as exc:  # bad zoo, checkpoint or option: one clear line
        print(f"hypergen-train: error: {exc}", file=sys.stderr)
        return 2


def train(args: argparse.Namespace) -> int:
    """Train (or fine-tune) a generator as ``args`` say and write it to ``args.out``."""
    logs = args.logs or args.out.with_name(f"{args.out.name}-logs")
    L.seed_everything(args.seed, verbose=False)
    bank = load_bank(args.zoo)
    warm = _warm_start(args, bank) if args.warm_start else None
    k = warm.config.k if warm else args.k
    data = GeneratorDataModule(
        bank,
        k,
        args.batch_size,
        args.val_fraction,
        args.seed,
        args.exclude_same_family,
        args.num_workers,
    )
    sizes = {name: getattr(args, name) for name in _ARCH}
    model = warm or new_model(bank, data.train_experts, **sizes, **_losses(args))
    if args.sft_steps > 0:  # before any reconstruction epochs, not after them
        check_trainable(model, args.sft_train)
    start, new, lines = time.perf_counter(), [], []
    origin = {"zoo": bank.name, "warm_start": None if warm is None else str(args.warm_start)}
    if args.epochs > 0:
        module, trainer = _reconstruction_stage(args, bank, data, model, logs)
        if not trainer.is_global_zero:
            return 0
        record = _record(module, trainer, data, args, time.perf_counter() - start)
        new.append({"stage": "reconstruction", **origin, **record})
        lines.append(_recon_summary(module, record))
        origin["warm_start"] = None  # the next stage starts from this one's output
    if args.sft_steps > 0:
        sft_data = GeneratorDataModule(
            bank, k, args.sft_rows, args.val_fraction, args.seed, args.exclude_same_family
        )
        record = _sft_stage(args, bank, sft_data, model, logs)
        new.append({"stage": "end-to-end", **origin, **record})
        lines.append(e2e.summary(record))
    config = model.config
    config.zoo, config.encoder, config.base_model = bank.name, bank.encoder, bank.base_model
    base = config.extra if warm is not None else {}  # a warm start keeps its history
    config.extra = provenance.extend(base, new, time.perf_counter() - start)
    dtype = {"float16": torch.float16, "float32": torch.float32}[args.save_dtype]
    model.cpu().eval().save_pretrained(args.out, overwrite=args.overwrite, dtype=dtype)
    print(f"wrote {args.out}: {model.num_parameters():,} parameters (logs in {logs})")
    print("\n".join(line for line in lines if line))
    return 0


def _reconstruction_stage(args, bank, data: GeneratorDataModule, model: LoraCVAE, logs: Path):
    """Fit ``model`` to the zoo's weights; it ends holding the best validated weights."""
    module = GeneratorModule(
        model, bank, lr=args.lr, weight_decay=args.weight_decay, kl_warmup_steps=args.kl_warmup
    )
    has_val = len(data.val_experts) > 0
    steps = -(-int(np.isin(bank.row_expert, data.train_experts).sum()) // args.batch_size)
    trainer = _trainer(args, logs, has_val, steps)
    if has_val:  # the starting point (neighbours' merge, or the warm start) is a candidate too
        module.initial_metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    trainer.fit(module, datamodule=data)
    if module.best_state is not None:
        model.load_state_dict(module.best_state)
    return module, trainer


def _recon_summary(module: GeneratorModule, record: dict) -> str:
    if module.best_state is None:
        return ""
    last = record["last_metrics"]
    return (
        f"best val_objective_prior {module.best_score:.4f}; last val_recon_prior "
        f"{last.get('val_recon_prior', float('nan')):.4f} (zoo mean "
        f"{last.get('val_recon_mean_baseline', float('nan')):.4f}, neighbours' merge "
        f"{last.get('val_recon_neighbour_baseline', float('nan')):.4f}), val_dw_prior "
        f"{last.get('val_dw_prior', float('nan')):.4f} (merge "
        f"{last.get('val_dw_neighbour_baseline', float('nan')):.4f})"
    )


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
        trainable=args.sft_train,
        val_every=args.sft_val_every,
        val_examples=args.sft_val_examples,
        save_every_s=args.save_every,
        base_dtype=args.base_dtype,
        seed=args.seed,
    )


UNKEYED = ("steps", "val_every", "save_every_s")
"""Recipe fields a resumed run may change (extend the run, validate or save more often)."""


def _sft_stage(args, bank, data: GeneratorDataModule, model: LoraCVAE, logs: Path) -> dict:
    """Train ``model`` end to end (:mod:`training.e2e`), resuming from ``--state`` when it holds
    this run; ``model`` ends holding the best validated weights. Returns the stage's record."""
    tasks, recipe = zoo_tasks(args.zoo, bank)
    config = sft_config(args)
    config.max_length = recipe.max_length
    state = args.state or logs / "e2e-state"
    start = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        start.update(name.encode() + value.detach().cpu().float().numpy().tobytes())
    recipe_key = {k: v for k, v in vars(config).items() if k not in UNKEYED}
    settings = {
        "recipe": recipe_key,
        "start_sha256": start.hexdigest(),
        "zoo_experts_sha256": hashlib.sha256("\n".join(bank.expert_ids).encode()).hexdigest(),
        "val_experts": data.val_experts.tolist(),
        "k": model.config.k,
        "exclude_same_family": args.exclude_same_family,
        "base_model": args.base_model or "default",
    }
    begun = time.perf_counter()
    if args.sft_processes > 1:
        job = e2e_distributed.Job(
            zoo=str(args.zoo),
            generator_config=model.config.to_dict(),
            generator_state={k: v.detach().cpu() for k, v in model.state_dict().items()},
            recipe=vars(config),
            state=str(state),
            settings=settings,
            base_model=args.base_model,
            val_fraction=args.val_fraction,
            seed=args.seed,
            exclude_same_family=args.exclude_same_family,
            progress=not args.quiet,
        )
        record = e2e_distributed.run(job, args.sft_processes)
        best = state / ("best" if record["best"] is not None else "checkpoint/generator")
        model.load_state_dict(LoraCVAE.from_pretrained(best).state_dict())
    else:
        base = load_base_model(args.base_model)
        if args.accelerator not in ("auto", "cpu") and torch.cuda.is_available():
            base.model.to("cuda")
        stage = EndToEnd(model, bank, base, tasks, data, config)
        try:
            record = e2e.train_e2e(stage, state, settings, progress=not args.quiet)
        finally:
            stage.close()
    model.cpu()
    return {
        **record,
        "recipe": vars(config),
        "state": str(state),
        "seconds_this_run": round(time.perf_counter() - begun, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
