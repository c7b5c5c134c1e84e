"""The LightningModule that trains a :class:`hypergen.cvae.LoraCVAE` on a zoo.

Loss: reconstruction MSE of the target expert's normalised canonical chunks + ``beta · KL(q||p)``
(beta warmed up linearly from 0 over ``kl_warmup_steps``) + ``dw_weight ·`` the relative ΔW
error. Validation logs ``val_recon`` (decoding the posterior mean), ``val_recon_prior`` and
``val_dw_prior`` (decoding the prior mean: what ``generate(temperature=0)`` gives for a task not
in the zoo), their weighted sum ``val_objective_prior`` (the score that picks the weights kept),
and baselines on the same rows: ``val_recon_mean_baseline`` (predicting the zoo mean, i.e. zeros
in normalised space) and ``val_recon_neighbour_baseline`` / ``val_dw_neighbour_baseline``
(predicting the neighbours' merge, which is what a fresh decoder outputs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from hypergen.bank import ExpertBank
from hypergen.cvae import CVAEConfig, LoraCVAE, expert_embeddings, neighbour_inputs, to_chunks

logger = logging.getLogger(__name__)


def new_model(bank: ExpertBank, train_experts: np.ndarray, **sizes) -> LoraCVAE:
    """A fresh model for ``bank``'s layout and encoder, normalised on ``train_experts``.

    ``sizes`` are :class:`CVAEConfig` fields (``k``, ``latent_dim``, ``hidden_dim``, ``beta``, ...).
    """
    config = CVAEConfig(
        layout=bank.layout.to_dict(),
        embed_dim=bank.dim,
        encoder=bank.encoder,
        base_model=bank.base_model,
        zoo=bank.name,
        **sizes,
    )
    model = LoraCVAE(config)
    index = torch.as_tensor(train_experts, dtype=torch.int64)
    model.set_normalisation({k: v[index] for k, v in bank.weights.items()})
    return model


def keep_best(module: L.LightningModule, metric: str) -> None:
    """After a validation epoch, copy ``module.model``'s weights to ``module.best_state`` (and
    the score to ``module.best_score``) when ``metric`` is the lowest seen so far."""
    score = module.trainer.callback_metrics.get(metric)
    if score is None or module.trainer.sanity_checking or float(score) >= module.best_score:
        return
    module.best_score = float(score)
    state = module.model.state_dict()
    module.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}


class RowConditions:
    """Condition inputs of batches of description rows, on one device.

    Holds the bank's weights and expert embeddings on that device (not as module buffers, so DDP
    does not broadcast them and checkpoints do not hold them), and computes each row's
    neighbours' merge once: a row's neighbours never change during training, and the merge's
    small batched QR/SVD calls cost more than the rest of a training step on a CPU.
    """

    def __init__(
        self, bank: ExpertBank, layout, tau: float, summary: bool = False, rows: int | None = None
    ):
        self.bank, self.layout, self.tau, self.summary = bank, layout, tau, summary
        self.num_rows = len(bank.row_expert) if rows is None else rows
        """Rows the merge cache holds (``bank``'s description rows, or more with rows of tasks
        without an expert)."""
        self.device: torch.device | None = None
        self.weights: dict[str, Tensor] = {}
        self.embeddings = torch.empty(0)
        self._merges: dict[str, Tensor] = {}
        self._known = torch.zeros(0, dtype=torch.bool)

    def _move(self, device: torch.device) -> None:
        if self.device == device:
            return
        self.device = device
        self.weights = {k: v.to(device) for k, v in self.bank.weights.items()}
        self.embeddings = expert_embeddings(self.bank).to(device)
        self._merges = {}
        self._known = torch.zeros(self.num_rows, dtype=torch.bool)

    def __call__(self, batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        """:func:`hypergen.cvae.neighbour_inputs` of ``batch`` (rows from
        :class:`training.data.RowDataset`)."""
        with torch.inference_mode(False), torch.no_grad():  # a cache filled in validation
            self._fill(batch, device)  # must stay usable in training
        rows = batch["row"].cpu()
        merges = {k: v[rows.to(device)] for k, v in self._merges.items()}
        return neighbour_inputs(
            self.layout,
            self.weights,
            self.embeddings,
            batch["embedding"],
            batch["neighbours"],
            batch["sims"],
            self.tau,
            merges=merges,
            summary=self.summary,
        )

    def _fill(self, batch: dict[str, Tensor], device: torch.device) -> None:
        self._move(device)
        rows = batch["row"].cpu()
        new = ~self._known[rows]
        if new.any():
            fresh = neighbour_inputs(
                self.layout,
                self.weights,
                self.embeddings,
                batch["embedding"][new.to(device)].clone(),
                batch["neighbours"][new.to(device)].clone(),
                batch["sims"][new.to(device)].clone(),
                self.tau,
                summary=False,
            )
            for m in self.layout.modules:
                key = f"merge.{m}"
                if key not in self._merges:
                    shape = (len(self._known), *fresh[key].shape[1:])
                    self._merges[key] = torch.zeros(shape, device=device)
                self._merges[key][rows[new].to(device)] = fresh[key]
            self._known[rows[new]] = True


class GeneratorModule(L.LightningModule):
    """Trains ``model`` on the experts of ``bank`` (batches from :class:`GeneratorDataModule`).

    Args:
        model: the generator (its normalisation already set, see :func:`new_model`).
        bank: the zoo the data module reads (weights are moved to the training device once).
        lr: AdamW learning rate; ``weight_decay``: AdamW weight decay.
        kl_warmup_steps: steps over which beta grows linearly from 0 to ``model.config.beta``.
    """

    def __init__(
        self,
        model: LoraCVAE,
        bank: ExpertBank,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        kl_warmup_steps: int = 500,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["model", "bank"])
        self.model, self.bank = model, bank
        self.conditions = RowConditions(
            bank, model.layout, model.config.tau, model.config.summary_in_decoder
        )
        self.best_score = float("inf")
        self.best_state: dict[str, Tensor] | None = None
        self.initial_metrics: dict[str, float] = {}
        self.handoff: Path | None = None
        """Where the first process leaves the best weights and the epoch and step counts when
        training ends (safetensors + JSON): with ``ddp_spawn`` the training ran in other
        processes, whose attributes never come back to the caller's module."""
        self.ended: dict | None = None

    def on_train_end(self) -> None:
        if self.handoff is None or not self.trainer.is_global_zero:
            return
        state = self.best_state or {k: v.detach() for k, v in self.model.state_dict().items()}
        self.handoff.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(self.handoff / "weights.safetensors"))
        ended = {
            "epochs": self.trainer.current_epoch,
            "steps": self.trainer.global_step,
            "best_score": None if self.best_state is None else self.best_score,
        }
        (self.handoff / "ended.json").write_text(json.dumps(ended))

    def take_handoff(self) -> None:
        """After ``fit``: read what :meth:`on_train_end` left (the best weights into
        ``best_state``, the counts into ``ended``)."""
        if self.handoff is None or not (self.handoff / "ended.json").is_file():
            return
        self.ended = json.loads((self.handoff / "ended.json").read_text())
        if self.ended["best_score"] is not None:
            self.best_state = load_file(str(self.handoff / "weights.safetensors"))
            self.best_score = self.ended["best_score"]

    def beta(self) -> float:
        """KL weight at the current step (linear warm-up)."""
        warmup = self.hparams.kl_warmup_steps
        ramp = 1.0 if warmup <= 0 else min(1.0, self.global_step / warmup)
        return self.model.config.beta * ramp

    def _inputs(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(targets, condition inputs)`` of a batch of description rows."""
        cond = self.conditions(batch, self.device)
        targets = {k: v[batch["expert"]] for k, v in self.conditions.weights.items()}
        return targets, cond

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        targets, cond = self._inputs(batch)
        beta = self.beta()
        out = self.model(targets, cond, beta=beta)
        n = len(batch["row"])
        self.log("train_loss", out["loss"], prog_bar=True, batch_size=n)
        self.log_dict(
            {"train_recon": out["recon"], "train_kl": out["kl"], "beta": beta},
            batch_size=n,
        )
        if self.model.config.dw_weight > 0:
            self.log("train_dw", out["dw"], batch_size=n)
        return out["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        targets, cond = self._inputs(batch)
        out = self.model(targets, cond)
        m = self.model
        x = {k: m.normalise(k, to_chunks(targets, k)) for k in m.layout.modules}
        prior, _, _ = m.decode_prior(cond)
        nbr = {k: m.normalise(k, cond[f"merge.{k}"]) for k in m.layout.modules}
        zeros = {k: torch.zeros_like(v) for k, v in x.items()}
        recon_prior, dw_prior = m.recon_error(prior, x), m.dw_error(prior, targets)
        objective = m.config.recon_weight * recon_prior + m.config.dw_weight * dw_prior
        n = len(batch["row"])
        self.log("val_objective_prior", objective, prog_bar=True, batch_size=n, sync_dist=True)
        metrics = {
            "val_recon_prior": recon_prior,
            "val_recon": out["recon"],
            "val_kl": out["kl"],
            "val_recon_mean_baseline": m.recon_error(zeros, x),
            "val_recon_neighbour_baseline": m.recon_error(nbr, x),
            "val_dw_prior": dw_prior,
            "val_dw_neighbour_baseline": m.dw_error(nbr, targets),
        }
        self.log_dict(metrics, batch_size=n, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        keep_best(self, "val_objective_prior")

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.model.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
