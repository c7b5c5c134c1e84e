"""End-to-end training of the generator through the frozen base model, resumable.

Text-to-LoRA (Charakorn et al., "Text-to-LoRA: Instant Transformer Adaption", ICML 2025,
arXiv:2506.06105) trains its hypernetwork either to reconstruct expert LoRAs or by supervised
fine-tuning through the base model on the tasks' data, and reports that the SFT-trained one
generalises to unseen tasks where the reconstruction-trained one falls below a multitask LoRA:
reconstruction asks for one particular expert's weights, while many adapters solve a task
equally well. Its recipe: many tasks per step with one example each, label smoothing 0.1 and an
L2 penalty on the generated weights. This stage follows it, starting from the merge anchor
(a fresh or warm-started decoder outputs the neighbours' merge, so step 0 is that generator).

One step: ``tasks_per_step`` training experts, one of each one's descriptions (a row of the
bank, with its leave-one-out neighbours) and ``examples_per_task`` of its task's training
examples; the generator decodes each row's adapter; the base model runs every example with its
own row's adapter (:class:`BatchedLora`); the loss is the label-smoothed cross-entropy of the
answer tokens, plus ``anchor_weight`` times the mean square of the decoder's residual from the
merge (normalised space: Text-to-LoRA's L2 penalty, measured from the anchor).

The latent: with ``kl_weight > 0`` each row's adapter is decoded from ``z ~ p(z | c)``
(reparameterised), and the loss adds ``kl_weight · KL(p(z | c) ‖ N(0, I))``: the negative ELBO of
a latent-adapter model of the answers, whose amortised posterior is the generator's prior. The
KL keeps the prior's spread from collapsing, so samples at temperature > 0 are different
adapters that were each trained to answer well (what best-of-n chooses among). With 0 the
prior's mean is decoded, as ``generate(temperature=0)`` does. That latent carries nothing
about the task (it is noise that the decoder learns to ignore: results/generator-v22's samples
differ by 0.04%). With ``posterior_fraction > 0`` it is a conditional VAE's instead: that part
of a step's tasks decode from ``z ~ q(z | the task's expert, c)``, the posterior reading the
expert's weights, and the loss adds ``kl_weight · KL(q ‖ p(z | c))``; the other tasks decode
the prior's mean, so the adapter that ``generate(temperature=0)`` makes is still trained on
answers. The latent then holds what the description leaves open about the task and the prior
learns where such latents lie, so samples are different plausible adapters for best-of-n.

Resuming: every draw of a step (experts, rows, examples, dropout, latent noise) is a function
of ``(seed, step)``, so the state to keep is the generator, the AdamW moments, the step and the
best validation so far. :func:`save_state` writes them (safetensors + JSON, no pickle) every
``save_every_s`` seconds into ``<state>/checkpoint`` (one folder, renamed into place), and
:func:`train_e2e` continues from it exactly: a run stopped and resumed ends with the weights
of an unstopped one.

Validation (:mod:`training.e2e_validation`): the first description of each validation expert
(never trained on, never retrieved) and its task's first ``val_examples`` eval examples; the
loss of the generated adapter, of the neighbours' merge, of no adapter, and (control) of the
adapter generated from another validation task's description; and the generated ΔW's size and
direction against the merge (``norm_ratio``, ``cos_merge``: a learned part that only shrinks
the merge shows as a ratio below 1 at cosine 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import default_collate

from expert_zoo.scoring import _decoder_and_head
from expert_zoo.tasks import Example, Task
from hypergen.bank import ExpertBank
from hypergen.base_model import BaseModel, warn_if_bf16_is_emulated
from hypergen.cvae import LoraCVAE
from hypergen.layout import Weights
from hypergen.prompting import IGNORE_INDEX, make_batch
from training.data import GeneratorDataModule, RowDataset
from training.e2e_config import DTYPES, TRAINABLE, E2EConfig
from training.e2e_extra import ExtraTasks
from training.e2e_validation import Validation, _shares
from training.lora_batch import BatchedLora
from training.module import RowConditions

logger = logging.getLogger(__name__)


def check_trainable(model: LoraCVAE, trainable: str) -> None:
    """Raise ``ValueError`` unless the end-to-end stage can train ``trainable`` of ``model``."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    if trainable == "layer-scales" and not model.config.layer_scales:
        raise ValueError(
            "this generator has no layer scales to train: build one with hypergen-train "
            "--layer-scales (a --warm-start keeps its own architecture)"
        )


class EndToEnd(Validation):
    """The pieces of the end-to-end stage: per-row conditions, the generated adapters, the
    training draw of a step and the base model's answer loss with every row's adapter.

    Args:
        model: the generator (trained in place).
        bank: the zoo the rows come from.
        base: the base model (frozen; its parameters never get a gradient).
        tasks: per expert of ``bank``, its task (``task.train`` for training, ``task.eval``
            for validation), or ``None``: an expert that only serves as a neighbour (the
            recipe's ``only``), neither trained nor validated on.
        data: the split and leave-one-out neighbours (:class:`GeneratorDataModule` over ``bank``
            with the generator's ``k``).
        config: the recipe.
        extra: training tasks without an expert (:class:`ExtraTasks`, from ``config.extra``),
            trained on beside the zoo's; ``None``: none.
    """

    def __init__(
        self,
        model: LoraCVAE,
        bank: ExpertBank,
        base: BaseModel,
        tasks: Sequence[Task],
        data: GeneratorDataModule,
        config: E2EConfig,
        extra: ExtraTasks | None = None,
    ):
        check_trainable(model, config.trainable)
        if len(tasks) != len(bank):
            raise ValueError(f"need one task per expert: {len(tasks)} tasks, {len(bank)} experts")
        empty = [t.task_id for t in tasks if t is not None and (not t.train or not t.eval)]
        if empty:
            raise ValueError(f"tasks without train or eval examples: {empty[:5]}")
        data.setup()
        trained = [int(e) for e in data.train_experts.tolist() if tasks[int(e)] is not None]
        row_expert, embeddings = bank.row_expert, bank.embeddings
        idx, sims = data.idx, data.sims
        if extra is not None and extra.tasks:  # experts len(bank) + j, rows after the bank's
            tasks = [*tasks, *extra.tasks]
            trained += [len(bank) + j for j in range(len(extra.tasks))]
            row_expert = np.concatenate([row_expert, len(bank) + extra.row_task])
            embeddings = np.concatenate([embeddings, extra.embeddings])
            idx, sims = np.concatenate([idx, extra.idx]), np.concatenate([sims, extra.sims])
        if not trained:
            raise ValueError("no training experts (with a task to train on)")
        self.model, self.bank, self.base, self.tasks, self.config = model, bank, base, tasks, config
        for p in base.model.parameters():
            p.requires_grad_(False)
        base.model.to(dtype=DTYPES[config.base_dtype]).eval()
        self.device = next(base.model.parameters()).device
        warn_if_bf16_is_emulated(DTYPES[config.base_dtype], self.device)
        model.to(self.device)
        self.data = data
        self.rows = RowDataset(np.arange(len(row_expert)), bank, idx, sims, row_expert, embeddings)
        self.row_expert = row_expert
        self.rows_of = {e: np.flatnonzero(row_expert == e) for e in trained}
        self.draw_p = None  # the experts' draw probabilities, in sorted order (balance_sources)
        if config.balance_sources:
            p = np.array(_shares([tasks[e].family for e in sorted(self.rows_of)], by_source=True))
            self.draw_p = p / p.sum()
        self.conditions = RowConditions(
            bank, model.layout, model.config.tau, model.config.summary_in_decoder, len(row_expert)
        )
        self.lora = BatchedLora(base.model, model.layout)
        self.decoder, self.head = _decoder_and_head(base.model)
        self.rank, self.world = (
            (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        )
        if config.radius_weight > 0 and model.config.max_deviation <= 0:
            raise ValueError(
                "radius_weight penalises the change past the trust radius: this generator has "
                "none (build it with --max-deviation)"
            )
        if config.tasks_per_step < self.world:
            raise ValueError(
                f"{config.tasks_per_step} tasks per step cannot be shared by {self.world} processes"
            )
        if config.contrast_weight > 0 and (
            config.tasks_per_step % 2
            or config.tasks_per_step < 2 * self.world
            or len(trained) < config.tasks_per_step
        ):
            raise ValueError(
                "the contrast term pairs a step's tasks: it needs an even number of tasks per "
                f"step, at least 2 per process and as many training experts ({config.tasks_per_step} "
                f"tasks, {self.world} processes, {len(trained)} training experts)"
            )

    def close(self) -> None:
        self.lora.remove()

    # --- pieces ---------------------------------------------------------------------------------
    def batch(self, rows: Sequence[int]) -> dict[str, Tensor]:
        """The condition inputs of description ``rows`` (neighbours' merges cached per row)."""
        items = default_collate([self.rows[int(r)] for r in rows])
        return self.conditions(items, self.device)

    def adapters(
        self, cond: dict[str, Tensor], sample: bool = False, eps: Tensor | None = None
    ) -> tuple[Weights, Tensor]:
        """The rows' adapters (differentiable in the generator) and the KL of p(z|c) to N(0, I)
        per row: from the prior's mean, or with ``sample`` from ``z ~ p(z|c)``."""
        self._chunks, mu, logvar = self.model.decode_prior(cond, 1.0 if sample else 0.0, eps)
        kl = 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)
        return self.model.to_weights(self._chunks), kl

    def posterior_adapters(
        self,
        cond: dict[str, Tensor],
        rows: Sequence[int],
        mask: np.ndarray,
        eps: Tensor | None = None,
    ) -> tuple[Weights, Tensor]:
        """The rows' adapters and KL term per row (the KL itself in ``self._kl``): rows
        ``mask`` (:meth:`posterior_mask`) decoded from ``z ~ q(z | the row's expert, c)``, the
        others from the prior's mean (:meth:`LoraCVAE.decode_posterior`, with the recipe's
        ``free_bits``); ``eps`` ``(len(rows), latent)``."""
        targets = self.bank.gather(torch.as_tensor(self.row_expert[np.asarray(rows)][mask]))
        targets = {k: v.to(self.device) for k, v in targets.items()}
        mask_t = torch.as_tensor(mask, device=self.device)
        self._chunks, self._kl, term = self.model.decode_posterior(
            cond, targets, mask_t, None if eps is None else eps[mask_t], self.config.free_bits
        )
        return self.model.to_weights(self._chunks), term

    def posterior_mask(self, rows: Sequence[int]) -> np.ndarray:
        """Which of a draw's ``rows`` decode from the posterior: of those whose expert is in the
        zoo (not an ``extra`` task), the first ``ceil(posterior_fraction · len(rows))``."""
        has = self.row_expert[np.asarray(rows, dtype=np.int64)] < len(self.bank)
        quota = int(np.ceil(self.config.posterior_fraction * len(rows) - 1e-9))
        return has & (np.cumsum(has) <= quota)

    def residual(self, cond: dict[str, Tensor]) -> Tensor:
        """Mean square of the last decoded chunks' distance from the normalised merge."""
        m, total, count = self.model, 0.0, 0
        for name, chunks in self._chunks.items():
            total = total + ((chunks - m.normalise(name, cond[f"merge.{name}"])) ** 2).sum()
            count += chunks.numel()
        return total / count

    def merges(self, cond: dict[str, Tensor]) -> Weights:
        """The neighbours' merge of each row (what a fresh decoder outputs)."""
        m = self.model
        merge = {k: m.normalise(k, cond[f"merge.{k}"]) for k in m.layout.modules}
        return m.to_weights(merge, scale=False)

    def draw(self, step: int) -> tuple[list[int], list[Example], list[int]]:
        """Step ``step``'s rows, examples and the row (0..) of each example: a function of
        ``(seed, step)`` only, so a resumed run draws what an unstopped one would."""
        c = self.config
        rng = np.random.default_rng([c.seed, step])
        experts = np.array(sorted(self.rows_of))
        size = min(c.tasks_per_step, len(experts))
        chosen = rng.choice(experts, size=size, replace=False, p=self.draw_p)
        rows, examples, owner = [], [], []
        for i, e in enumerate(chosen.tolist()):
            options = self.rows_of[e]
            rows.append(int(options[rng.integers(len(options))]))
            pool = self.tasks[e].train
            examples += [pool[j] for j in rng.integers(len(pool), size=c.examples_per_task)]
            owner += [i] * c.examples_per_task
        return rows, examples, owner

    def lm_loss(
        self,
        weights: Weights | None,
        examples: Sequence[Example],
        owner: Sequence[int],
        smoothing: float = 0.0,
        total: bool = False,
        per_example: bool = False,
    ) -> Tensor | tuple[Tensor, int]:
        """Mean answer-token cross-entropy of ``examples``, each with its row's adapter (the
        output layer runs only at the answer positions); with ``total`` the sum over the answer
        tokens and their number instead; with ``per_example`` each example's mean, shape (n,)."""
        pairs = [(ex.input, ex.output) for ex in examples]
        batch = make_batch(self.base.tokenizer, pairs, max_length=self.config.max_length)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if weights is not None:
            self.lora.set(weights, torch.tensor(list(owner), device=self.device))
        try:
            hidden = self.decoder(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        finally:
            self.lora.clear()
        labels = batch["labels"][:, 1:]
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        logits = self.head(hidden[rows, cols]).float()
        if per_example:
            tokens = F.cross_entropy(
                logits, labels[rows, cols], label_smoothing=smoothing, reduction="none"
            )
            n = len(examples)
            sums = torch.zeros(n, device=tokens.device).index_add_(0, rows, tokens)
            counts = torch.bincount(rows, minlength=n).clamp_min(1)
            return sums / counts
        if total:
            summed = F.cross_entropy(
                logits, labels[rows, cols], label_smoothing=smoothing, reduction="sum"
            )
            return summed, len(rows)
        return F.cross_entropy(logits, labels[rows, cols], label_smoothing=smoothing)

    # --- one step, one validation ----------------------------------------------------------------
    def step_loss(self, step: int) -> dict[str, Tensor]:
        c = self.config
        torch.manual_seed(c.seed * 1_000_003 + step)  # dropout and latent noise of this step
        self.model.train()
        rows, examples, owner = self.draw(step)
        eps, post = None, None
        if c.posterior_fraction > 0:  # decided on the whole draw: a process's share keeps it
            eps = torch.randn(len(rows), self.model.config.latent_dim)
            post = self.posterior_mask(rows)
        if self.world > 1:
            mine = self.mine(len(rows))
            if c.kl_weight > 0:  # one draw for the whole step, each process its tasks' rows
                eps = torch.randn(len(rows), self.model.config.latent_dim) if eps is None else eps
                eps = eps[mine]
                post = None if post is None else post[mine]
            rows, examples, owner = self.share(rows, examples, owner)
        cond = self.batch(rows)
        eps = None if eps is None else eps.to(self.device)
        if post is not None:
            weights, kl = self.posterior_adapters(cond, rows, post, eps)
        else:
            weights, kl = self.adapters(cond, sample=c.kl_weight > 0, eps=eps)
        per_row = {"kl": kl}  # the step's means of these are taken over its rows
        if post is not None and c.free_bits > 0:  # kl is then the free-bits term; log the KL too
            per_row["kl_q"] = self._kl.detach()
        if c.radius_weight > 0:  # the change's reach past the trust radius
            per_row["radius"] = torch.stack(list(self.model.radius_excess.values())).mean(0)
        if self.world == 1:
            lm = self.lm_loss(weights, examples, owner, c.label_smoothing)
            anchor, means = self.residual(cond), {k: v.mean() for k, v in per_row.items()}
            tokens_all = None
        else:  # this process's share of the step's means: the processes' losses add up to them
            summed, tokens = self.lm_loss(weights, examples, owner, c.label_smoothing, total=True)
            counts = torch.tensor([float(tokens), float(len(rows))], dtype=torch.float64)
            dist.all_reduce(counts)
            tokens_all, rows_all = counts[0].item(), counts[1].item()
            lm = summed / tokens_all
            anchor = self.residual(cond) * (len(rows) / rows_all)
            means = {k: v.sum() / rows_all for k, v in per_row.items()}
        loss = lm + c.anchor_weight * anchor + c.kl_weight * means["kl"]
        if "radius" in means:
            loss = loss + c.radius_weight * means["radius"]
        parts = {"loss": loss, "lm": lm, "anchor": anchor, **means}
        if c.contrast_weight > 0:
            parts.update(self.contrast(weights, examples, owner, lm, tokens_all))
            parts["loss"] = loss + c.contrast_weight * parts["contrast"]
        return parts

    def contrast(
        self, weights: Weights, examples, owner, lm: Tensor, tokens_all: float | None
    ) -> dict[str, Tensor]:
        """The contrast term of a step: each example also scored with the adapter of its task's
        partner (tasks 2j and 2j + 1 of the step; ``lm_other``), and
        ``max(0, margin − (lm_other − lm))``. With several processes the pairs are dealt whole
        (:meth:`share`); whether the hinge is active is decided on the whole step's means, so
        the processes' shares add up to its gradient."""
        c = self.config
        shifted = [o ^ 1 for o in owner]  # tasks 2j and 2j + 1 of the step swap adapters
        if self.world == 1:
            other = self.lm_loss(weights, examples, shifted, c.label_smoothing)
            hinge = torch.relu(c.contrast_margin - (other - lm))
            return {"contrast": hinge, "lm_other": other}
        summed, _ = self.lm_loss(weights, examples, shifted, c.label_smoothing, total=True)
        other = summed / tokens_all
        both = torch.stack([lm.detach(), other.detach()]).double()
        dist.all_reduce(both)  # the step's own and other losses
        active = float(c.contrast_margin - (both[1] - both[0]) > 0)
        share = 1.0 / self.world  # the margin's share, so the logged sum is the step's hinge
        return {"contrast": active * (c.contrast_margin * share - (other - lm)), "lm_other": other}

    def mine(self, n_rows: int) -> list[int]:
        """This process's tasks (positions in a step's draw of ``n_rows``)."""
        if self.config.contrast_weight > 0:  # pairs stay together
            return [i for i in range(n_rows) if (i // 2) % self.world == self.rank]
        return [i for i in range(n_rows) if i % self.world == self.rank]

    def share(self, rows, examples, owner) -> tuple[list[int], list[Example], list[int]]:
        """This process's tasks of a step's draw: task ``i`` goes to process ``i mod world``
        (with the contrast term, pair ``i // 2`` goes whole to process ``(i // 2) mod world``)."""
        mine = self.mine(len(rows))
        position = {t: j for j, t in enumerate(mine)}
        kept = [(e, position[o]) for e, o in zip(examples, owner, strict=True) if o in position]
        return [rows[i] for i in mine], [e for e, _ in kept], [o for _, o in kept]


from training.e2e_loop import learning_rate, summary, train_e2e  # noqa: E402  (re-exported)

__all__ = [
    "BatchedLora",
    "E2EConfig",
    "EndToEnd",
    "learning_rate",
    "summary",
    "train_e2e",
]
