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
import shutil
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from hypergen.base_model import load_base_model
from hypergen.cvae import CheckpointError, LoraCVAE
from hypergen.errors import HypergenError
from training import e2e, e2e_distributed, options, provenance
from training.data import GeneratorDataModule, load_bank
from training.e2e import EndToEnd, check_trainable
from training.e2e_extra import ExtraTasks, extra_tasks
from training.e2e_tasks import matching, zoo_tasks
from training.module import GeneratorModule, new_model
from training.options import _ARCH, sft_config

logger = logging.getLogger("hypergen.train")


def _hardware(args) -> dict:
    """The ``lightning.Trainer`` arguments of the hardware group."""
    names = ("accelerator", "devices", "strategy", "num_nodes", "precision")
    return {name: getattr(args, name) for name in names}


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
    ended = module.ended or {"epochs": trainer.current_epoch, "steps": trainer.global_step}
    return {
        "epochs": ended["epochs"],
        "steps": ended["steps"],
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


def build_parser():
    """The ``hypergen-train`` parser, with this module's examples as its epilog."""
    return options.build_parser(__doc__.split("\n", 2)[2])


def main(argv: list[str] | None = None) -> int:
    args = options.parse_args(argv, build_parser())
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
        split_by_family=args.val_split == "family",
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
            bank,
            k,
            args.sft_rows,
            args.val_fraction,
            args.seed,
            args.exclude_same_family,
            split_by_family=args.val_split == "family",
            eligible=matching(args.zoo, bank, args.sft_only) if args.sft_only else None,
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
    module.handoff = logs / "reconstruction-end"
    shutil.rmtree(module.handoff, ignore_errors=True)
    trainer.fit(module, datamodule=data)
    module.take_handoff()
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


UNKEYED = ("steps", "val_every", "save_every_s", "patience")
"""Recipe fields a resumed run may change (extend the run, validate or save more often, stop
early or later)."""


def _sft_stage(args, bank, data: GeneratorDataModule, model: LoraCVAE, logs: Path) -> dict:
    """Train ``model`` end to end (:mod:`training.e2e`), resuming from ``--state`` when it holds
    this run; ``model`` ends holding the best validated weights. Returns the stage's record."""
    config = sft_config(args)
    tasks, recipe = zoo_tasks(args.zoo, bank, config.only)
    config.max_length = recipe.max_length
    extra = None
    if config.extra:
        extra = ExtraTasks.build(extra_tasks(args.zoo, bank, config.extra), bank, data)
        logger.info(
            "%d extra training tasks without an expert (%d descriptions); %d left out, their "
            "family is a validation family: %s",
            len(extra.tasks),
            len(extra.row_task),
            len(extra.dropped),
            extra.dropped,
        )
    state = args.state or logs / "e2e-state"
    start = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        start.update(name.encode() + value.detach().cpu().float().numpy().tobytes())
    recipe_key = config.key(UNKEYED)
    settings = {
        "recipe": recipe_key,
        "start_sha256": start.hexdigest(),
        "zoo_experts_sha256": hashlib.sha256("\n".join(bank.expert_ids).encode()).hexdigest(),
        "val_experts": data.val_experts.tolist(),
        "k": model.config.k,
        "exclude_same_family": args.exclude_same_family,
        "base_model": args.base_model or "default",
    }
    if extra is not None:  # the catalogue may grow under a pattern: the tasks themselves count
        settings["extra_tasks"] = [t.task_id for t in extra.tasks]
    if model.config.norm_to_merge:  # no weights of its own, so the start's hash misses it
        settings["norm_to_merge"] = True
    if model.config.max_deviation > 0:
        settings["max_deviation"] = model.config.max_deviation
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
            split_by_family=args.val_split == "family",
            progress=not args.quiet,
            extra=extra,
        )
        record = e2e_distributed.run(job, args.sft_processes)
        best = state / ("best" if record["best"] is not None else "checkpoint/generator")
        model.load_state_dict(LoraCVAE.from_pretrained(best).state_dict())
    else:
        base = load_base_model(args.base_model)
        if args.accelerator not in ("auto", "cpu") and torch.cuda.is_available():
            base.model.to("cuda")
        stage = EndToEnd(model, bank, base, tasks, data, config, extra)
        try:
            record = e2e.train_e2e(stage, state, settings, progress=not args.quiet)
        finally:
            stage.close()
    model.cpu()
    if extra is not None:
        record = {**record, "extra_tasks": settings["extra_tasks"], "extra_dropped": extra.dropped}
    return {
        **record,
        "recipe": vars(config),
        "state": str(state),
        "seconds_this_run": round(time.perf_counter() - begun, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
