"""``hypergen-train``: train the generator (a conditional VAE over LoRA weights) on an expert zoo.

Examples::

    hypergen-train --zoo expert_zoo/zoo --out generators/default
    hypergen-train --zoo grown-zoo.safetensors --out generators/v2 --warm-start generators/default
    hypergen-train --zoo zoo.safetensors --out gen --accelerator gpu --devices 4 --strategy ddp

The generator is written with ``LoraCVAE.save_pretrained`` (``config.json`` + ``model.safetensors``)
holding the weights with the best validation ``val_recon_prior`` (the last ones when there is no
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

from hypergen.cvae import CheckpointError, CVAEConfig, LoraCVAE
from hypergen.errors import HypergenError
from training.data import GeneratorDataModule, load_bank
from training.module import GeneratorModule, new_model

logger = logging.getLogger("hypergen.train")
_ARCH_HELP = {
    "latent_dim": "size of the latent z",
    "hidden_dim": "width of hidden layers and chunk projections",
    "cond_dim": "size of the condition vector",
    "pos_dim": "size of the layer/module embeddings",
    "k": "neighbours retrieved per description",
    "tau": "softmax temperature over neighbour similarities",
    "dropout": "dropout in the condition network and decoder",
}
_ARCH = (*_ARCH_HELP, "summary_in_decoder")
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


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _losses(args) -> dict:
    given = {"beta": args.beta, "dw_weight": args.dw_weight}
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
        monitor="val_recon_prior" if has_val else None,
        mode="min",
        save_last=True,
    )
    return L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
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
        "best_val_recon_prior": None if module.best_state is None else round(module.best_score, 6),
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
    data = GeneratorDataModule(
        bank,
        warm.config.k if warm else args.k,
        args.batch_size,
        args.val_fraction,
        args.seed,
        args.exclude_same_family,
        args.num_workers,
    )
    sizes = {name: getattr(args, name) for name in _ARCH}
    model = warm or new_model(bank, data.train_experts, **sizes, **_losses(args))
    module = GeneratorModule(
        model, bank, lr=args.lr, weight_decay=args.weight_decay, kl_warmup_steps=args.kl_warmup
    )
    has_val = len(data.val_experts) > 0
    steps = -(-int(np.isin(bank.row_expert, data.train_experts).sum()) // args.batch_size)
    trainer = _trainer(args, logs, has_val, steps)
    start = time.perf_counter()
    if has_val:  # the starting point (neighbours' mean, or the warm start) is a candidate too
        module.initial_metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    trainer.fit(module, datamodule=data)
    if not trainer.is_global_zero:
        return 0
    if module.best_state is not None:
        model.load_state_dict(module.best_state)
    config = model.config
    config.zoo, config.encoder, config.base_model = bank.name, bank.encoder, bank.base_model
    config.extra = _record(module, trainer, data, args, time.perf_counter() - start)
    dtype = {"float16": torch.float16, "float32": torch.float32}[args.save_dtype]
    model.cpu().eval().save_pretrained(args.out, overwrite=args.overwrite, dtype=dtype)
    print(f"wrote {args.out}: {model.num_parameters():,} parameters (logs in {logs})")
    if has_val:
        baseline = config.extra["last_metrics"].get("val_recon_mean_baseline", float("nan"))
        print(f"best val_recon_prior {module.best_score:.4f}, zoo-mean baseline {baseline:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
