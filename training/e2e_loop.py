"""The end-to-end stage's resumable training loop (:func:`train_e2e`) over an
:class:`training.e2e.EndToEnd`: learning-rate warm-up, gradient clipping, validation every
``val_every`` steps keeping the best weights (and with ``patience``, early stopping once that many
validations in a row did not improve on it), state saves every ``save_every_s`` seconds, and
with several processes (:mod:`training.e2e_distributed`) the gradients summed over them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from hypergen.cvae import LoraCVAE
from training.e2e_config import E2EConfig
from training.e2e_state import append_metrics, load_state, save_best, save_state

if TYPE_CHECKING:
    from training.e2e import EndToEnd

logger = logging.getLogger(__name__)


def trained_parameters(model: LoraCVAE, trainable: str) -> list[torch.nn.Parameter]:
    if trainable == "gates":
        return list(model.gates.parameters())
    if trainable == "layer-scales":
        return list(model.layer_scales.parameters())
    return list(model.parameters())


# --- the resumable loop --------------------------------------------------------------------------
def learning_rate(config: E2EConfig, step: int) -> float:
    return config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))


def train_e2e(
    stage: EndToEnd,
    state: Path,
    settings: dict,
    progress: bool = True,
    on_save: Callable[[int], None] | None = None,
) -> dict:
    """Train ``stage.model`` for ``stage.config.steps`` steps (in total, over every resume),
    saving the state under ``state`` and resuming from it when it holds a checkpoint made with
    the same ``settings`` (what the numbers depend on: zoo, starting generator, recipe less
    its step count). Ends with ``stage.model`` holding the best validated weights (the start
    included); returns the run's record."""
    c, model = stage.config, stage.model
    params = trained_parameters(model, c.trainable)
    wanted = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    main = stage.rank == 0  # with several processes the first validates, saves and logs
    record = load_state(state, settings, model, opt, truncate=main)
    if record is None:
        record = {"step": 0, "seconds": 0.0, "best": None, "initial": {}, "reference": {}}
        if main:
            _start(stage, state, settings, opt, record)
    else:
        logger.info("resuming the end-to-end stage at step %d from %s", record["step"], state)
    if stage.world > 1:
        dist.barrier()
    start, last_save = time.perf_counter() - record["seconds"], time.perf_counter()
    bar = tqdm(
        total=c.steps, initial=record["step"], desc="end-to-end", disable=not (progress and main)
    )
    finished = _agree(stage, main and record["step"] > 0 and _stopped_early(c, record))
    for step in range(record["step"], 0 if finished else c.steps):
        began = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = learning_rate(c, step)
        opt.zero_grad(set_to_none=True)
        parts = stage.step_loss(step)
        parts["loss"].backward()
        if stage.world > 1:
            _all_reduce_grads(params)
            parts = _summed(parts)
        norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        opt.step()
        record["step"] = step + 1
        validating = record["step"] % c.val_every == 0 or record["step"] == c.steps
        if not main:
            if validating and c.patience and _agree(stage, False):
                break
            continue
        line = {"step": step + 1, **{k: round(float(v.detach()), 6) for k, v in parts.items()}}
        line["grad_norm"] = round(float(norm), 6)
        line["step_s"] = round(time.perf_counter() - began, 2)  # the step alone, no validation
        stop = False
        if validating:
            metrics = stage.validate()
            line.update({k: v if isinstance(v, list) else round(v, 6) for k, v in metrics.items()})
            if metrics and metrics["val_loss"] < record["best"]["val_loss"]:
                record["best"] = {"step": record["step"], "val_loss": metrics["val_loss"]}
                save_best(state, model, record)
            stop = _stopped_early(c, record)
            if c.patience:
                stop = _agree(stage, stop)
        append_metrics(state, line)
        bar.update()
        bar.set_postfix(loss=f"{line['lm']:.3f}", best=_best_text(record))
        record["seconds"] = time.perf_counter() - start
        if time.perf_counter() - last_save >= c.save_every_s or record["step"] == c.steps or stop:
            save_state(state, settings, model, opt, record)
            last_save = time.perf_counter()
            if on_save is not None:
                on_save(record["step"])
        if stop:
            break
    bar.close()
    if main and record["best"] is not None:  # the best validated weights, the start included
        best = LoraCVAE.from_pretrained(state / "best")
        model.load_state_dict(best.state_dict())
    return record


def _agree(stage: EndToEnd, stop: bool) -> bool:
    """The first process's ``stop`` on every process (the others' argument is ignored)."""
    if stage.world == 1:
        return stop
    flag = torch.tensor([int(stop)])
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _stopped_early(config: E2EConfig, record: dict) -> bool:
    """Whether ``config.patience`` validations in a row have passed without a new best (with
    several processes only the first validates; the others follow its step count)."""
    if config.patience < 1 or record["best"] is None:
        return False
    since = record["step"] - record["best"]["step"]
    if since >= config.patience * config.val_every:
        record["stopped_early"] = record["step"]
        logger.info(
            "stopping early at step %d: no better validation loss than %.4f (step %d) in %d "
            "validations",
            record["step"],
            record["best"]["val_loss"],
            record["best"]["step"],
            config.patience,
        )
        return True
    return False


def _start(stage: EndToEnd, state: Path, settings: dict, opt, record: dict) -> None:
    """A new run's step 0: the reference losses, the starting point's validation (the first
    candidate for the best weights), the first metric line and checkpoint."""
    record["reference"] = stage.reference()
    if record["reference"]:
        record["initial"] = stage.validate()
        record["best"] = {"step": 0, "val_loss": record["initial"]["val_loss"]}
        save_best(state, stage.model, record)
    append_metrics(state, {"step": 0, **record["reference"], **record["initial"]}, reset=True)
    save_state(state, settings, stage.model, opt, record)


def _all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum the processes' gradients (each process's loss is its share of the step's mean, so
    the sum is the gradient of the whole step), in one flat buffer."""
    reached = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    dist.all_reduce(reached)  # a part only some processes' tasks reach (the posterior) counts
    used = [p for p, n in zip(params, reached.tolist(), strict=True) if n]
    flat = torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in used]
    )
    dist.all_reduce(flat)
    offset = 0
    for p in used:  # a parameter no loss reached keeps no gradient, so AdamW leaves it alone
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _summed(parts: dict[str, Tensor]) -> dict[str, Tensor]:
    """The step's logged losses over every process (each holds its share)."""
    keys = sorted(parts)
    values = torch.stack([parts[k].detach().double() for k in keys])
    dist.all_reduce(values)
    return dict(zip(keys, values, strict=True))


def _best_text(record: dict) -> str:
    best = record["best"]
    return "-" if best is None else f"{best['val_loss']:.3f}@{best['step']}"


def summary(record: dict) -> str:
    ref, start = record.get("reference") or {}, record.get("initial") or {}
    if not ref:
        return f"end-to-end stage: {record['step']} steps (no validation experts)"
    best = record["best"]
    early = f" (stopped early at {record['stopped_early']})" if "stopped_early" in record else ""
    return (
        f"end-to-end stage: {record['step']} steps{early}; val_loss {start['val_loss']:.4f} -> "
        f"{best['val_loss']:.4f} (best at step {best['step']}; neighbours' merge "
        f"{ref['val_loss_merge']:.4f}, no adapter {ref['val_loss_base']:.4f})"
    )
