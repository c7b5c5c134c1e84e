"""``hypergen-train``: train the generator (a conditional VAE over LoRA weights) on an expert zoo.

Examples::

    hypergen-train --zoo expert_zoo/zoo --out generators/default
    hypergen-train --zoo grown-zoo.safetensors --out generators/v2 --warm-start generators/default
    hypergen-train --zoo zoo.safetensors --out gen --accelerator gpu --devices 4 --strategy ddp
    hypergen-train --zoo expert_zoo/zoo --out gen-e2e --warm-start gen --epochs 0 --sft-steps 200
    hypergen-train --zoo expert_zoo/zoo --out gen-ls --epochs 0 --k 8 --layer-scales \
        --sft-train layer-scales --sft-steps 60 --sft-rows 8 --sft-lr 2e-2   # the shipped kind

The generator is written with ``LoraCVAE.save_pretrained`` (``config.json`` + ``model.safetensors``)
holding the weights with the best validation ``val_objective_prior`` (the last ones when there is no
validation split). Logs (CSV, and TensorBoard when installed) and Lightning's resumable
checkpoints go to ``--logs`` (default ``<out>-logs``); those ``.ckpt`` files are Lightning's own
(pickle) format, for resuming only; hypergen never loads them.
"""

from __future__ import annotations

import argparse
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
from training.data import GeneratorDataModule, load_bank
from training.module import GeneratorModule, new_model
from training.sft import (
    TRAINABLE,
    SFTModule,
    check_trainable,
    first_description_loader,
    zoo_tasks,
)

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
    add("--zoo", required=True, help="zoo folder or zoo export file (.safetensors)")
    add("--out", required=True, type=Path, help="folder to write the generator to")
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
        "through the frozen base model on the zoo's own tasks, as in Text-to-LoRA's SFT)"
    ).add_argument
    sft("--sft-steps", type=int, default=0, help="steps of the stage; 0: skip it (default)")
    sft("--sft-rows", type=int, default=4, help="description rows per step (default: %(default)s)")
    sft(
        "--sft-examples",
        type=int,
        default=4,
        help="task examples run with each row's adapter (default: %(default)s)",
    )
    sft("--sft-lr", type=float, default=1e-4, help="AdamW learning rate (default: %(default)s)")
    sft(
        "--sft-train",
        choices=TRAINABLE,
        default="all",
        help="what the stage trains: all the generator's parameters; only the gates that "
        "rescale the neighbours' merge per layer and module as the condition says; or only the "
        "per-layer ΔW factors of --layer-scales, the same for every task (default: %(default)s)",
    )
    sft(
        "--sft-val-every",
        type=int,
        default=50,
        help="steps between validations on the validation experts' tasks (default: %(default)s)",
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    start, record, lines = time.perf_counter(), {}, []
    if args.epochs > 0:
        module, trainer = _reconstruction_stage(args, bank, data, model, logs)
        if not trainer.is_global_zero:
            return 0
        record = _record(module, trainer, data, args, time.perf_counter() - start)
        lines.append(_recon_summary(module, record))
    if args.sft_steps > 0:
        sft_data = GeneratorDataModule(
            bank, k, args.sft_rows, args.val_fraction, args.seed, args.exclude_same_family
        )
        stage_start = time.perf_counter()
        sft, trainer = _sft_stage(args, bank, sft_data, model, logs)
        if not trainer.is_global_zero:
            return 0
        record["sft"] = _sft_record(sft, trainer, args, time.perf_counter() - stage_start)
        lines.append(_sft_summary(sft, record["sft"]))
    config = model.config
    config.zoo, config.encoder, config.base_model = bank.name, bank.encoder, bank.base_model
    if warm is not None:  # keep the history: what the starting generator had recorded
        record["warm_start"] = str(args.warm_start)
        record["warm_start_record"] = config.extra  # replaced just below
    config.extra = {**record, "seconds_total": round(time.perf_counter() - start, 1)}
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


def _sft_stage(args, bank, data: GeneratorDataModule, model: LoraCVAE, logs: Path):
    """Fine-tune ``model`` through the base model (:mod:`training.sft`); it ends holding the
    weights with the best ``val_sft_loss`` (the stage's starting point included)."""
    tasks, recipe = zoo_tasks(args.zoo, bank)
    base = load_base_model(args.base_model)
    module = SFTModule(
        model,
        bank,
        base,
        tasks,
        examples_per_row=args.sft_examples,
        max_length=recipe.max_length,
        lr=args.sft_lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        trainable=args.sft_train,
    )
    val = first_description_loader(data, args.sft_rows)
    trainer = L.Trainer(
        max_steps=args.sft_steps,
        **_hardware(args),
        logger=CSVLogger(str(logs), name="csv-sft"),
        enable_checkpointing=False,
        gradient_clip_val=1.0,
        log_every_n_steps=1,
        check_val_every_n_epoch=None,
        val_check_interval=min(args.sft_val_every, args.sft_steps),
        limit_val_batches=None if val else 0,
        num_sanity_val_steps=0,
        enable_progress_bar=not args.quiet,
        enable_model_summary=False,
    )
    if val:  # the starting point is a candidate too
        module.initial_metrics = trainer.validate(module, dataloaders=val, verbose=False)[0]
        module.best_score = module.initial_metrics["val_sft_loss"]
    try:
        trainer.fit(module, train_dataloaders=data.train_dataloader(), val_dataloaders=val or None)
    except Exception:
        _rescue(module, model, logs / SFT_RESCUE)
        raise
    if module.best_state is not None:
        model.load_state_dict(module.best_state)
    return module, trainer


SFT_RESCUE = "sft-best-before-error"
"""Folder under ``--logs`` where a failed end-to-end stage leaves its best generator so far."""


def _rescue(module: SFTModule, model: LoraCVAE, folder: Path) -> None:
    """Save the best validated weights of a stage that is failing (a logger or hardware error
    after hours of steps) before the error propagates; nothing is saved when no step beat the
    starting point, which the caller still has."""
    if module.best_state is None:
        return
    model.load_state_dict(module.best_state)
    model.config.extra = {**model.config.extra, "sft_failed": True}
    model.config.extra["best_val_sft_loss"] = module.best_score
    model.save_pretrained(folder, overwrite=True)
    logger.error(
        "the end-to-end stage failed; its best generator (val_sft_loss %.4f) is in %s",
        module.best_score,
        folder,
    )


def _sft_record(module: SFTModule, trainer: L.Trainer, args, seconds: float) -> dict:
    metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items()}
    initial = module.initial_metrics
    return {
        "steps": trainer.global_step,
        "seconds": round(seconds, 1),
        "rows_per_step": args.sft_rows,
        "examples_per_row": args.sft_examples,
        "lr": args.sft_lr,
        "trained": args.sft_train,
        "initial_metrics": {k: round(float(v), 6) for k, v in initial.items()},
        "best_val_sft_loss": None if not initial else round(module.best_score, 6),
        "improved": module.best_state is not None,
        "last_metrics": metrics,
    }


def _sft_summary(module: SFTModule, record: dict) -> str:
    start = record["initial_metrics"]
    if not start:
        return f"end-to-end stage: {record['steps']} steps (no validation experts)"
    return (
        f"end-to-end stage: val_sft_loss {start['val_sft_loss']:.4f} -> "
        f"{module.best_score:.4f} (neighbours' merge {start['val_sft_loss_merge']:.4f}, "
        f"no adapter {start['val_sft_loss_base']:.4f})"
    )


if __name__ == "__main__":
    sys.exit(main())
