"""Expert training: one LoRA per task on the base model, with peft and Lightning.

The recipe (fixed seeds, chat-template prompts, loss on answer tokens only, a step and time
budget) is the same for every expert of the zoo, so experts are comparable. Each expert is scored
on its task's own eval split before and after training; an expert that does not beat the base
model is flagged in its metrics, not hidden.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass

import lightning as L
import torch
from peft import get_peft_model
from torch.utils.data import DataLoader, Dataset

from expert_zoo.scoring import score_examples
from expert_zoo.tasks import Task
from hypergen.adapter_io import LoraAdapter
from hypergen.base_model import BaseModel
from hypergen.layout import DEFAULT_TARGET_MODULES, LoraLayout
from hypergen.prompting import make_batch

logger = logging.getLogger(__name__)


@dataclass
class ExpertTrainConfig:
    """How one expert is trained (every expert of a zoo uses the same recipe)."""

    steps: int = 40
    """Optimizer steps (batches); training stops at ``steps`` or ``max_seconds``, first reached."""
    batch_size: int = 8
    """Examples per step."""
    lr: float = 1e-3
    """AdamW learning rate of the LoRA parameters."""
    max_length: int = 160
    """Tokens per example (prompt cut from the left; the answer is kept)."""
    rank: int = 8
    """LoRA rank."""
    alpha: float = 16.0
    """LoRA alpha (update scale alpha / rank)."""
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    """Linear layers that carry LoRA."""
    max_seconds: float | None = None
    """Wall-clock budget for the optimisation (None: no limit)."""
    eval_examples: int = 50
    """Eval-split examples scored before and after training."""
    seed: int = 0
    """Seed of LoRA initialisation and batch order."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.eval_examples < 1:
            raise ValueError(f"steps, batch_size, lr and eval_examples must be positive: {self}")


class _Pairs(Dataset):
    def __init__(self, task: Task):
        self.pairs = [(e.input, e.output) for e in task.train]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[str, str]:
        return self.pairs[i]


class LoraExpertModule(L.LightningModule):
    """A PEFT-wrapped causal LM; only its LoRA parameters train."""

    def __init__(self, peft_model, lr: float):
        super().__init__()
        self.model, self.lr = peft_model, lr
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.losses.append(loss.item())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)


def train_expert(
    base: BaseModel, task: Task, config: ExpertTrainConfig | None = None, progress: bool = True
) -> tuple[LoraAdapter, dict]:
    """Train one LoRA expert on ``task``; return it with its metrics.

    ``base.model`` is wrapped for training and unwrapped again before returning, so one loaded
    base model serves many experts in turn.
    """
    config = config or ExpertTrainConfig()
    if not task.train or not task.eval:
        raise ValueError(f"task {task.task_id} needs train and eval examples")
    L.seed_everything(config.seed, verbose=False)
    eval_set = task.eval[: config.eval_examples]
    before = score_examples(base.model, base.tokenizer, eval_set)

    peft_model = _wrap(base, config)
    module = LoraExpertModule(peft_model, config.lr)
    start = time.perf_counter()
    _fit(module, _loader(base, task, config), config, progress)
    seconds = time.perf_counter() - start
    after = score_examples(peft_model, base.tokenizer, eval_set)
    adapter = LoraAdapter.from_peft_model(peft_model, base.name)
    peft_model.unload()  # restores base.model's plain linear layers
    tail = module.losses[-5:] or [float("nan")]
    metrics = {
        "metric": before["metric"],
        "before": before["score"],
        "after": after["score"],
        "gain": after["score"] - before["score"],
        "n_eval": before["n"],
        "train_loss_first": module.losses[0] if module.losses else None,
        "train_loss_last": sum(tail) / len(tail),
        "steps": len(module.losses),
        "seconds": round(seconds, 2),
        "recipe": asdict(config),
    }
    metrics["beats_base"] = metrics["gain"] > 0
    logger.info(
        "%s: %s %.3f -> %.3f in %.0f s",
        task.task_id,
        before["metric"],
        before["score"],
        after["score"],
        seconds,
    )
    return adapter, metrics


def _wrap(base: BaseModel, config: ExpertTrainConfig):
    layout = LoraLayout.for_model(base.model, config.target_modules, config.rank, config.alpha)
    zeros = {k: torch.zeros(s) for k, s in layout.expected_shapes().items()}
    peft_config = LoraAdapter(layout, zeros, base.model.name_or_path).peft_config()
    return get_peft_model(base.model, peft_config).train()  # fresh LoRA (A random, B zero)


def _loader(base: BaseModel, task: Task, config: ExpertTrainConfig) -> DataLoader:
    def collate(pairs):
        return make_batch(base.tokenizer, pairs, max_length=config.max_length)

    gen = torch.Generator().manual_seed(config.seed)
    sampler = torch.utils.data.RandomSampler(
        _Pairs(task), replacement=True, num_samples=config.steps * config.batch_size, generator=gen
    )
    return DataLoader(
        _Pairs(task), batch_size=config.batch_size, sampler=sampler, collate_fn=collate
    )


def _fit(module: LoraExpertModule, loader: DataLoader, config: ExpertTrainConfig, progress: bool):
    max_time = None
    if config.max_seconds is not None:
        max_time = {"seconds": config.max_seconds}
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        max_steps=config.steps,
        max_epochs=1,
        max_time=max_time,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    random.seed(config.seed)
    trainer.fit(module, train_dataloaders=loader)
