"""End-to-end stage: fine-tune the generator through the frozen base model on the zoo's own tasks.

Text-to-LoRA (Charakorn et al., "Text-to-LoRA: Instant Transformer Adaption", ICML 2025,
arXiv:2506.06105) trains its hypernetwork either to reconstruct expert LoRAs or by supervised
fine-tuning through the base model on the tasks' data, and reports that the SFT-trained one
generalises better to unseen tasks: reconstruction asks for one particular expert's weights,
while many adapters solve a task equally well. Here the reconstruction stage
(:mod:`training.module`) comes first and this stage continues from it.

One step: a batch of (expert, description) rows with their leave-one-out neighbours (the same
rows as the reconstruction stage, :class:`training.data.GeneratorDataModule`); the generator
decodes the prior mean of each row's adapter (what ``generate(temperature=0)`` returns); the
base model runs ``examples_per_row`` training examples of each row's task, each sequence with
its own row's adapter (:class:`BatchedLora`); the loss is the cross-entropy of the answer tokens.
The base model never changes. Validation scores the validation experts' tasks (never trained
on, and never retrieved) with the generated adapters, with the neighbours' merge (what the
generator started from) and with no adapter.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from functools import partial

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from expert_zoo.tasks import Example, Task
from expert_zoo.train import ExpertTrainConfig
from hypergen.bank import ExpertBank
from hypergen.base_model import BaseModel
from hypergen.cvae import LoraCVAE
from hypergen.layout import LoraLayout, Weights
from hypergen.prompting import make_batch
from training.baselines import load_zoo_tasks, zoo_recipe, zoo_records
from training.data import GeneratorDataModule, RowDataset
from training.module import RowConditions, keep_best

logger = logging.getLogger(__name__)


class BatchedLora:
    """Adds a different LoRA update to every sequence of a batch, through forward hooks on the
    target linears of a frozen model: ``y += scaling · (x Aᵀ) Bᵀ`` with ``A, B`` of the
    sequence's adapter (PEFT's LoRA forward without dropout, but differentiable in ``A, B``).

    Use as a context manager; between :meth:`set` and :meth:`clear` every forward of the model
    uses the adapters set.
    """

    def __init__(self, model: torch.nn.Module, layout: LoraLayout):
        self.layout = layout
        self.weights: Weights | None = None
        self.rows: Tensor | None = None
        self._handles = [
            model.get_submodule(layout.paths[m].format(layer=layer)).register_forward_hook(
                partial(self._hook, m, layer)
            )
            for m in layout.modules
            for layer in range(layout.num_layers)
        ]

    def set(self, weights: Weights, rows: Tensor) -> None:
        """``weights``: stacked ``{"m.A": (n, L, r, in), "m.B": (n, L, out, r)}``; ``rows``:
        ``(S,)`` the adapter (0..n-1) of each of the S sequences of the next forwards."""
        self.weights, self.rows = weights, rows

    def clear(self) -> None:
        self.weights = self.rows = None

    def _hook(self, module: str, layer: int, _mod, args, output: Tensor) -> Tensor:
        if self.weights is None:
            return output
        a = self.weights[f"{module}.A"][:, layer][self.rows]  # (S, r, in)
        b = self.weights[f"{module}.B"][:, layer][self.rows]  # (S, out, r)
        low = torch.einsum("sti,sri->str", args[0].to(a.dtype), a)
        update = torch.einsum("str,sor->sto", low, b) * self.layout.scaling
        return output + update.to(output.dtype)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> BatchedLora:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


TRAINABLE = ("all", "gates", "layer-scales")


def check_trainable(model: LoraCVAE, trainable: str) -> None:
    """Raise ``ValueError`` unless the end-to-end stage can train ``trainable`` of ``model``."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    if trainable == "layer-scales" and not model.config.layer_scales:
        raise ValueError(
            "this generator has no layer scales to train: build one with hypergen-train "
            "--layer-scales (a --warm-start keeps its own architecture)"
        )


def zoo_tasks(zoo, bank: ExpertBank) -> tuple[list[Task], ExpertTrainConfig]:
    """Each expert's task of ``bank`` (re-loaded by the ``task_id`` its record in ``zoo`` keeps),
    in expert order, and the zoo's training recipe."""
    records = {r["expert_id"]: r for r in zoo_records(zoo)}
    missing = [e for e in bank.expert_ids if "task_id" not in records.get(e, {})]
    if missing:
        raise ValueError(
            f"the end-to-end stage (--sft-steps) needs each expert's task_id; missing for {missing[:5]}"
        )
    tasks = load_zoo_tasks([records[e]["task_id"] for e in bank.expert_ids])
    return tasks, zoo_recipe(list(records.values()))


class SFTModule(L.LightningModule):
    """Fine-tunes ``model`` so its adapters lower the base model's loss on the zoo's tasks.

    Args:
        model: the generator (e.g. fresh from the reconstruction stage).
        bank: the zoo the rows come from.
        base: the base model (frozen here; its parameters get no gradient).
        tasks: per expert of ``bank``, its task (training examples are drawn from
            ``task.train``, validation uses ``task.eval``).
        examples_per_row: task examples run with each row's adapter per step.
        max_length: tokens per example (the zoo recipe's ``max_length``).
        lr, weight_decay: AdamW settings.
        seed: seeds the draw of training examples.
        trainable: ``"all"`` the generator's parameters, or ``"gates"`` only the per-module
            gates that scale the neighbours' merge (a few hundred numbers: the adapter stays
            the merge, rescaled per layer and module as the condition says), or
            ``"layer-scales"`` only the generator's per-(layer, module) ΔW factors (one number
            each, the same for every task; needs ``config.layer_scales``).
    """

    def __init__(
        self,
        model: LoraCVAE,
        bank: ExpertBank,
        base: BaseModel,
        tasks: Sequence[Task],
        examples_per_row: int = 4,
        max_length: int = 160,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        seed: int = 0,
        trainable: str = "all",
    ):
        super().__init__()
        check_trainable(model, trainable)
        if len(tasks) != len(bank):
            raise ValueError(f"need one task per expert: {len(tasks)} tasks, {len(bank)} experts")
        empty = [t.task_id for t in tasks if not t.train or not t.eval]
        if empty:
            raise ValueError(f"tasks without train or eval examples: {empty[:5]}")
        if examples_per_row < 1:
            raise ValueError(f"examples_per_row must be >= 1, got {examples_per_row}")
        self.save_hyperparameters(ignore=["model", "bank", "base", "tasks"])
        self.model, self.bank, self.tasks = model, bank, list(tasks)
        self.base = base
        for p in base.model.parameters():
            p.requires_grad_(False)
        base.model.eval()
        self.lora: BatchedLora | None = None
        self.rng = random.Random(seed)
        self.conditions = RowConditions(
            bank, model.layout, model.config.tau, model.config.summary_in_decoder
        )
        self.best_score = float("inf")
        self.best_state: dict[str, Tensor] | None = None
        self.initial_metrics: dict[str, float] = {}

    # --- pieces ---------------------------------------------------------------------------------
    def condition(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.conditions(batch, self.device)

    def adapters(self, cond: dict[str, Tensor]) -> Weights:
        """The prior-mean adapters of the rows (differentiable in the generator's weights)."""
        m = self.model
        c = m.condition(cond)
        return m.to_weights(m.decode(m.prior(c)[0], c, cond))

    def merges(self, cond: dict[str, Tensor]) -> Weights:
        """The neighbours' merge of each row (what a fresh decoder outputs)."""
        m = self.model
        merge = {k: m.normalise(k, cond[f"merge.{k}"]) for k in m.layout.modules}
        return m.to_weights(merge, scale=False)

    def examples(self, experts: Tensor, train: bool) -> tuple[list[Example], Tensor]:
        """``examples_per_row`` examples of each row's task and the row of each example:
        a random draw from ``task.train`` when training, the first of ``task.eval`` otherwise."""
        n, picked, rows = self.hparams.examples_per_row, [], []
        for row, expert in enumerate(experts.tolist()):
            task = self.tasks[expert]
            pool = task.train if train else task.eval
            chosen = self.rng.choices(pool, k=n) if train else (pool * n)[:n]
            picked += chosen
            rows += [row] * len(chosen)
        return picked, torch.tensor(rows, device=self.device)

    def lm_loss(self, weights: Weights | None, examples: list[Example], rows: Tensor) -> Tensor:
        """Mean answer-token cross-entropy of ``examples``, each with its row's adapter."""
        pairs = [(ex.input, ex.output) for ex in examples]
        batch = make_batch(self.base.tokenizer, pairs, max_length=self.hparams.max_length)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.lora is None:  # hooks come off in teardown (after each fit or validate)
            self.lora = BatchedLora(self.base.model, self.model.layout)
        if weights is not None:
            self.lora.set(weights, rows)
        try:
            return self.base.model(**batch).loss
        finally:
            self.lora.clear()

    # --- lightning ------------------------------------------------------------------------------
    def _base_to_device(self) -> None:
        """The base model is not a submodule (its weights are neither trained nor
        checkpointed), so Lightning does not move it: follow this module's device."""
        self.base.model.to(self.device)

    def on_fit_start(self) -> None:
        self._base_to_device()

    def on_validation_start(self) -> None:
        self._base_to_device()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        examples, rows = self.examples(batch["expert"], train=True)
        loss = self.lm_loss(self.adapters(self.condition(batch)), examples, rows)
        self.log("train_sft_loss", loss, prog_bar=True, batch_size=len(rows))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        examples, rows = self.examples(batch["expert"], train=False)
        cond = self.condition(batch)
        n = len(rows)
        self.log(
            "val_sft_loss",
            self.lm_loss(self.adapters(cond), examples, rows),
            prog_bar=True,
            batch_size=n,
        )
        self.log_dict(
            {
                "val_sft_loss_merge": self.lm_loss(self.merges(cond), examples, rows),
                "val_sft_loss_base": self.lm_loss(None, examples, rows),
            },
            batch_size=n,
        )

    def on_validation_epoch_end(self) -> None:
        keep_best(self, "val_sft_loss")

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        if self.hparams.trainable == "gates":
            return list(self.model.gates.parameters())
        if self.hparams.trainable == "layer-scales":
            return list(self.model.layer_scales.parameters())
        return list(self.model.parameters())

    def configure_optimizers(self):
        trained = {id(p) for p in self.trained_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trained)
        return torch.optim.AdamW(
            self.trained_parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def teardown(self, stage: str) -> None:
        if self.lora is not None:
            self.lora.remove()
            self.lora = None


def first_description_loader(data: GeneratorDataModule, batch_size: int) -> DataLoader | list:
    """Validation rows for the SFT stage: the first description of each validation expert
    (scoring every paraphrase through the base model costs more than it tells)."""
    data.setup()
    bank = data.bank
    experts, first = np.unique(bank.row_expert, return_index=True)
    rows = first[np.isin(experts, data.val_experts)]
    if not len(rows):
        return []
    dataset = RowDataset(rows, bank, data.idx, data.sims)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)
