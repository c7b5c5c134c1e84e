"""Expert training: one LoRA per task on the base model, with peft and Lightning.

The recipe (fixed seeds, chat-template prompts, loss on answer tokens only, a step and time
budget) is the same for every expert of the zoo, so experts are comparable. Each expert is scored
on its task's own eval split before and after training; an expert that does not beat the base
model is flagged in its metrics, not hidden.

With ``val_examples > 0`` the budget is picked per task by validation (early stopping): the last
``val_examples`` training examples are kept out of training, scored every ``val_every`` steps
(the choice loss on multiple-choice tasks, the answer loss otherwise), and the LoRA weights of the
best check are the expert; training stops after ``patience`` checks without improvement. The
eval split is never used for that choice, so the reported gain stays unbiased.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import lightning as L
import torch
import torch.nn.functional as F
from peft import get_peft_model
from torch.utils.data import DataLoader, Dataset

from expert_zoo.scoring import _decoder_and_head, answer_loss, mc_scores, score_examples
from expert_zoo.tasks import Example, Task
from hypergen.adapter_io import LoraAdapter
from hypergen.base_model import BaseModel, warn_if_bf16_is_emulated
from hypergen.layout import DEFAULT_TARGET_MODULES, LoraLayout
from hypergen.prompting import IGNORE_INDEX, make_batch

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
    val_examples: int = 0
    """Training examples held out for early stopping (0: no validation, train ``steps``)."""
    val_every: int = 16
    """Steps between validation checks."""
    patience: int = 2
    """Checks without a new best validation score before training stops."""
    base_dtype: str = "float32"
    """Precision of the frozen base model (``bfloat16``: faster on CPUs with AVX-512 BF16); the
    LoRA weights train in float32 either way. The base model must be loaded in it."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.eval_examples < 1:
            raise ValueError(f"steps, batch_size, lr and eval_examples must be positive: {self}")
        if self.val_examples < 0 or self.val_every < 1 or self.patience < 1:
            raise ValueError(f"val_examples >= 0, val_every >= 1, patience >= 1: {self}")
        if self.base_dtype not in BASE_DTYPES:
            raise ValueError(f"base_dtype must be one of {sorted(BASE_DTYPES)}: {self}")

    def record(self) -> dict:
        """The recipe as kept in an expert's metrics and in cache keys: every field, less those
        added later while at the value every earlier recipe had (so the records and keys
        written before them still match); JSON values (lists, not tuples), so it equals a
        recipe read back from disk."""
        data = json.loads(json.dumps(asdict(self)))
        for name, old in _ADDED_FIELDS.items():
            if data[name] == old:
                del data[name]
        return data


BASE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_ADDED_FIELDS = {"base_dtype": "float32"}


@contextmanager
def base_in_dtype(base: BaseModel, dtype_name: str) -> Iterator[BaseModel]:
    """``base`` with its model in ``dtype_name`` (a recipe's ``base_dtype``) for the block, then
    back exactly as it was: dtype, device, eval mode, and its original weights (a cast to a
    narrower dtype and back would round them, so they are kept aside first)."""
    model = base.model
    param = next(model.parameters())
    dtype, device, want = param.dtype, param.device, BASE_DTYPES[dtype_name]
    warn_if_bf16_is_emulated(want, device)
    kept = None
    if want != dtype:
        kept = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.to(want)
    try:
        yield base
    finally:
        model.to(device=device, dtype=dtype).eval()  # Lightning may have moved it
        if kept is not None:
            model.load_state_dict(kept)


class _Pairs(Dataset):
    def __init__(self, examples: Sequence[Example]):
        self.pairs = [(e.input, e.output) for e in examples]

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
        loss = answer_token_loss(self.model, batch)
        self.losses.append(loss.item())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)


def answer_token_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The causal LM loss (mean cross-entropy of the answer tokens), with the output layer run
    only at the positions that predict answer tokens: on a 49k-token vocabulary the full
    logits are about a fifth of a step's work."""
    decoder, head = _decoder_and_head(model)
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    return F.cross_entropy(head(hidden[rows, cols]).float(), labels[rows, cols])


def validation_loss(model, tokenizer, examples: Sequence[Example]) -> float:
    """The early-stopping criterion: choice loss on multiple-choice examples, else answer loss."""
    was_training = model.training
    model.eval()
    try:
        if all(e.options is not None for e in examples):
            return float(mc_scores(model, tokenizer, examples)["choice_loss"])
        return float(answer_loss(model, tokenizer, examples))
    finally:
        model.train(was_training)


class _EarlyStop(L.Callback):
    """Scores the validation examples every ``val_every`` steps; keeps the best LoRA weights."""

    def __init__(self, tokenizer, examples: Sequence[Example], config: ExpertTrainConfig):
        self.tokenizer, self.examples, self.config = tokenizer, examples, config
        self.curve: list[tuple[int, float]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def check(self, module: LoraExpertModule, step: int) -> bool:
        """Score at ``step``; True when training should stop."""
        loss = validation_loss(module.model, self.tokenizer, self.examples)
        self.curve.append((step, round(loss, 5)))
        if step > 0 and (self.best is None or loss < self.best[0]):
            trainable = {n: p.detach().clone() for n, p in _trainable(module.model)}
            self.best = (loss, step, trainable)
        since_best = sum(1 for s, _ in self.curve if s > (self.best[1] if self.best else 0))
        return self.best is not None and since_best >= self.config.patience

    def on_train_start(self, trainer, module) -> None:
        self.check(module, 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.config.val_every == 0 and self.check(module, step):
            trainer.should_stop = True

    def restore_best(self, module: LoraExpertModule, last_step: int) -> int:
        """Put the best check's weights back (scoring the last step first if it was not
        checked); returns the step whose weights the expert keeps."""
        if not self.curve or self.curve[-1][0] != last_step:
            self.check(module, last_step)
        if self.best is None:
            return last_step
        params = dict(_trainable(module.model))
        with torch.no_grad():
            for name, value in self.best[2].items():
                params[name].copy_(value)
        return self.best[1]


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def split_validation(
    task: Task, config: ExpertTrainConfig
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """``(train, validation)``: the last ``val_examples`` training examples validate, when the
    task keeps at least as many for training; otherwise no validation."""
    n = config.val_examples
    if n == 0 or len(task.train) < 2 * n:
        if n:
            logger.warning("%s: too few training examples for %d validation ones", task.task_id, n)
        return task.train, ()
    return task.train[:-n], task.train[-n:]


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
    dtype = next(base.model.parameters()).dtype
    if dtype != BASE_DTYPES[config.base_dtype]:
        raise ValueError(
            f"the recipe trains on a {config.base_dtype} base model, this one is {dtype}: load "
            f"it with load_base_model(..., dtype=torch.{config.base_dtype})"
        )
    L.seed_everything(config.seed, verbose=False)
    eval_set = task.eval[: config.eval_examples]
    before = score_examples(base.model, base.tokenizer, eval_set)

    train_set, val_set = split_validation(task, config)
    peft_model = _wrap(base, config)
    module = LoraExpertModule(peft_model, config.lr)
    stopper = _EarlyStop(base.tokenizer, val_set, config) if val_set else None
    start = time.perf_counter()
    _fit(module, _loader(base, train_set, config), config, progress, stopper)
    kept_step = stopper.restore_best(module, len(module.losses)) if stopper else None
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
        "recipe": config.record(),
    }
    if stopper is not None:
        metrics.update(val_curve=stopper.curve, best_step=kept_step, n_val=len(val_set))
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


def _loader(base: BaseModel, examples: Sequence[Example], config: ExpertTrainConfig) -> DataLoader:
    def collate(pairs):
        return make_batch(base.tokenizer, pairs, max_length=config.max_length)

    gen = torch.Generator().manual_seed(config.seed)
    pairs = _Pairs(examples)
    sampler = torch.utils.data.RandomSampler(
        pairs, replacement=True, num_samples=config.steps * config.batch_size, generator=gen
    )
    return DataLoader(pairs, batch_size=config.batch_size, sampler=sampler, collate_fn=collate)


def _fit(
    module: LoraExpertModule,
    loader: DataLoader,
    config: ExpertTrainConfig,
    progress: bool,
    stopper: _EarlyStop | None = None,
):
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
        callbacks=[stopper] if stopper else [],
    )
    random.seed(config.seed)
    trainer.fit(module, train_dataloaders=loader)
