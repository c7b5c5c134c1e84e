"""Validation of the end-to-end stage (:class:`training.e2e.EndToEnd` inherits it): the loss of
the generated adapters on the validation experts' own tasks, the merge's and the base model's
for reference, the other-description control, the adapters' geometry against the merge and,
with a latent, the spread of samples and the posterior's reach.

The validation tasks: the first description of each validation expert (never trained on,
never retrieved) and its task's first ``val_examples`` eval examples. With
``family_weighted_val`` each family weighs the same; with ``balance_sources`` each source, then
each family in it (:func:`_shares`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from expert_zoo.tasks import Example
from hypergen.layout import Weights
from training.lora_batch import geometry, sample_spread


class Validation:
    """The validation half of :class:`training.e2e.EndToEnd` (its attributes: ``bank``,
    ``tasks``, ``data``, ``config``, ``model``, ``device``; its methods ``batch``, ``adapters``,
    ``posterior_adapters``, ``merges``, ``lm_loss``)."""

    def val_rows(self) -> list[int]:
        experts, first = np.unique(self.bank.row_expert, return_index=True)
        keep = np.isin(experts, self.data.val_experts)
        keep &= np.array([self.tasks[int(e)] is not None for e in experts], dtype=bool)
        return first[keep].tolist()

    def _val_examples(self, rows: Sequence[int]) -> tuple[list[Example], list[int]]:
        examples, owner = [], []
        for i, r in enumerate(rows):
            picked = self.tasks[int(self.bank.row_expert[r])].eval[: self.config.val_examples]
            examples += picked
            owner += [i] * len(picked)
        return examples, owner

    def _val_shares(self, rows: Sequence[int]) -> list[float]:
        """Each validation task's share of the family-weighted validation loss: 1 / (number of
        families × its family's validation tasks), so that a family counts once however many
        subtasks of it were drawn; with ``balance_sources``, each source counts once first."""
        names = [self.bank.families[int(self.bank.row_expert[r])] for r in rows]
        return _shares(names, by_source=self.config.balance_sources)

    @torch.no_grad()
    def _val_loss(
        self, weights: Weights | None, examples, owner, task=None, chunk: int = 16
    ) -> float:
        """Mean answer loss of the validation ``examples``, each scored with adapter
        ``owner[i]``; ``task[i]`` (default ``owner``) is the example's own task. With
        ``family_weighted_val``, each family weighs the same (:meth:`_val_shares`)."""
        if self.config.family_weighted_val or self.config.balance_sources:
            task = list(owner if task is None else task)
            share = self._val_shares(self.val_rows())
            weight = torch.tensor([share[t] / task.count(t) for t in task])
            return float((self.example_losses(weights, examples, owner, chunk) * weight).sum())
        total = 0.0
        for part, sub, local in self._by_chunk(weights, examples, owner, chunk):
            total += float(self.lm_loss(sub, part, local)) * len(part)
        return total / len(examples)

    @staticmethod
    def _by_chunk(weights: Weights | None, examples, owner, chunk: int):
        """``(examples, their adapters, each one's adapter among them)`` per ``chunk`` examples."""
        for s in range(0, len(examples), chunk):
            part, rows = examples[s : s + chunk], owner[s : s + chunk]
            used = sorted(set(rows))
            sub = None if weights is None else {k: v[used] for k, v in weights.items()}
            yield part, sub, [used.index(r) for r in rows]

    @torch.no_grad()
    def example_losses(self, weights: Weights | None, examples, owner, chunk: int = 16) -> Tensor:
        """Each example's mean answer loss with adapter ``owner[i]`` (CPU, shape (n,))."""
        losses = [
            self.lm_loss(sub, part, local, per_example=True).cpu()
            for part, sub, local in self._by_chunk(weights, examples, owner, chunk)
        ]
        return torch.cat(losses)

    @torch.no_grad()
    def reference(self) -> dict:
        """The validation loss of the neighbours' merge and of no adapter (fixed during a run),
        and the validation experts in the order of the per-task metrics."""
        rows = self.val_rows()
        if not rows:
            return {}
        examples, owner = self._val_examples(rows)
        merge = self.merges(self.batch(rows))
        return {
            "val_loss_merge": self._val_loss(merge, examples, owner),
            "val_loss_base": self._val_loss(None, examples, owner),
            "val_experts": [self.bank.expert_ids[int(self.bank.row_expert[r])] for r in rows],
        }

    @torch.no_grad()
    def val_losses(self, weights: Weights, rows: Sequence[int]) -> dict:
        """``val_loss`` of the validation ``rows``' adapters ``weights`` on their own tasks and
        ``val_loss_other``: each task scored with the next row's adapter (with several rows)."""
        examples, owner = self._val_examples(rows)
        out = {"val_loss": self._val_loss(weights, examples, owner)}
        if len(rows) > 1:
            shifted = [(o + 1) % len(rows) for o in owner]
            out["val_loss_other"] = self._val_loss(weights, examples, shifted, owner)
        return out

    @torch.no_grad()
    def validate(self) -> dict:
        """``val_loss`` (generated), ``val_loss_other`` (each task with the adapter generated
        from the next validation task's description), ``norm_ratio``, ``cos_merge`` and, with
        a latent in training, ``sample_spread`` (‖ΔW₁ − ΔW₂‖ / ‖ΔW_mean‖ of two samples); with
        ``posterior_fraction``, ``val_loss_posterior``: each task's adapter decoded from the
        posterior's mean given the task's own expert (how much the latent can carry)."""
        rows = self.val_rows()
        if not rows:
            return {}
        self.model.eval()
        cond = self.batch(rows)
        weights, _ = self.adapters(cond)
        out = self.val_losses(weights, rows)
        out.update(geometry(weights, self.merges(cond), self.model.layout.modules))
        if self.config.posterior_fraction > 0:  # what the latent can hold: q's mean, own expert
            mask = np.ones(len(rows), dtype=bool)
            eps = torch.zeros(len(rows), self.model.config.latent_dim, device=self.device)
            own, _ = self.posterior_adapters(cond, rows, mask, eps)
            out["val_loss_posterior"] = self._val_loss(own, *self._val_examples(rows))
        if self.config.kl_weight > 0:
            torch.manual_seed(self.config.seed)
            one, _ = self.adapters(cond, sample=True)
            two, _ = self.adapters(cond, sample=True)
            out["sample_spread"] = sample_spread(one, two, weights, self.model.layout.modules)
        return out


def _shares(families: Sequence[str], by_source: bool = False) -> list[float]:
    """Each task's share when every family weighs the same, then every task within its family;
    with ``by_source``, every source (a family name's first ``_``-separated word) weighs the same
    first, then every family within it (:attr:`E2EConfig.balance_sources`). An empty family name
    is a family, and a source, of its own."""
    names = [f or f"\0{i}" for i, f in enumerate(families)]
    source = [n.split("_", 1)[0] if by_source else n for n in names]
    tasks_in = {n: names.count(n) for n in names}
    families_in = {
        s: len({n for n, t in zip(names, source, strict=True) if t == s}) for s in source
    }
    return [
        1.0 / (len(families_in) * families_in[s] * tasks_in[n])
        for n, s in zip(names, source, strict=True)
    ]
