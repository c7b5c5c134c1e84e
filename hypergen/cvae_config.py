"""The generator's architecture and provenance record (``config.json`` of a checkpoint), the
checks a checkpoint's files pass before they are read, and the saving and loading that the model
(:mod:`hypergen.cvae`) inherits; apart from the training recipes (:mod:`training.e2e_config`,
``hypergen-train``'s options)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from hypergen._fs import atomic_dir
from hypergen._untrusted import UntrustedFileError, load_safetensors, refuse_pickle
from hypergen.errors import HypergenError, LayoutError
from hypergen.layout import LoraLayout

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_PARAMETERS = 1_000_000_000
"""Largest generator a checkpoint may describe (the default has a few million); checked on the
meta device, before anything is allocated or read."""


class CheckpointError(HypergenError, ValueError):
    """A generator checkpoint is missing, malformed, or made for another layout or encoder."""


@dataclass
class CVAEConfig:
    """Shape and training record of a :class:`LoraCVAE` (saved as ``config.json``)."""

    layout: dict
    """``LoraLayout.to_dict()`` of the adapters it generates."""
    embed_dim: int = 384
    """Dimension of the task-description embeddings (all-MiniLM-L6-v2: 384)."""
    k: int = 4
    """Neighbours retrieved from the zoo per description."""
    latent_dim: int = 32
    """Size of the latent z."""
    hidden_dim: int = 256
    """Width of the hidden layers and of the per-chunk projections."""
    cond_dim: int = 128
    """Size of the condition vector c."""
    pos_dim: int = 32
    """Size of the learned layer and module embeddings."""
    head_rank: int = 32
    """Bottleneck of the per-module chunk projections and output heads (their size is
    ``head_rank · chunk_m``, which dominates the generator's size)."""
    summary_in_decoder: bool = False
    """Also feed the projected neighbour mean/spread chunks to the decoder MLP (off by default:
    on small zoos that high-dimensional input lets it memorise experts; see tests/hypergen)."""
    dropout: float = 0.1
    """Dropout in the condition network and the decoder MLP."""
    layer_scales: bool = False
    """Learn one factor ``exp(s[l, m])`` per layer and module on the generated ΔW (zero-init:
    factor 1), trained only by the end-to-end stage (``--sft-train layer-scales``): layer-wise
    merging coefficients as in AdaMerging (Yang et al., ICLR 2024, arXiv:2310.02575), shared by
    all tasks and learned on the zoo's labelled tasks instead of a test task's unlabelled data."""
    norm_to_merge: bool = False
    """Rescale each layer's and module's generated ΔW to the Frobenius norm of the neighbours'
    merge, so the learned part can turn the adapter away from the merge but not shrink or grow
    it: every end-to-end run before it first learned one shrink shared by all tasks, and the
    runs that trained the heads then grew their adapters without bound, and both phases hurt
    unseen families (generators v6-v14, ``results/``). Off: the decoder's output as it is."""
    max_deviation: float = 0.0
    """Trust radius around the merge: the decoder's change to each row's and layer's factors
    (A and B, as the zoo stores them) is bounded smoothly below ``max_deviation`` times the
    merge's own norm, ``d · r / sqrt(|d|² + r²)`` (``r = max_deviation · |merge|``; about ``d``
    while ``|d|`` is well under ``r``). The end-to-end runs v15-v19 scored best at cosine 0.99 to
    the merge and then turned away from it within 25 steps, their gradient norm growing 100-fold
    (``results/generator-v19``); the bound keeps the learned part in the region where it helped.
    Applied before ``norm_to_merge``. 0: off."""
    beta: float = 0.01
    """KL weight (relative to the per-coordinate reconstruction MSE), reached after warm-up."""
    tau: float = 0.1
    """Temperature of the softmax over neighbour cosine similarities."""
    mix_noise: float = 0.0
    """Samples at ``temperature > 0`` also draw their own neighbour mixture: the merge weights
    become ``softmax(sims / tau + temperature · mix_noise · g)``, ``g ~ N(0, I_k)`` per sample
    (0: every sample merges with the same weights). A fixed logistic-normal prior over the
    neighbours' mixtures, not trained; it makes best-of-n a few-shot choice among mixtures."""
    dw_weight: float = 0.0
    """Weight of the auxiliary ΔW-space loss (relative to the zoo's mean ‖ΔW‖²); 0: off."""
    recon_weight: float = 1.0
    """Weight of the per-coordinate reconstruction MSE of the canonical factors."""
    encoder: str = ""
    """Name of the task encoder it was trained with."""
    base_model: str = ""
    """Name of the base model its adapters are for."""
    zoo: str = ""
    """Name of the zoo it was trained on."""
    extra: dict = field(default_factory=dict)
    """Free-form JSON record (training metrics, steps, ...)."""

    def __post_init__(self) -> None:
        self.layout = LoraLayout.from_dict(self.layout).to_dict()  # validates; JSON-ready below
        sizes = ("embed_dim", "k", "latent_dim", "hidden_dim", "cond_dim", "pos_dim", "head_rank")
        bad = [f"{n}={getattr(self, n)}" for n in sizes if getattr(self, n) < 1]
        if bad:
            raise ValueError(f"CVAEConfig sizes must be positive, got {', '.join(bad)}")
        weights = (self.beta, self.dw_weight, self.recon_weight)
        bad_rates = self.tau <= 0 or not 0 <= self.dropout < 1 or self.mix_noise < 0
        if min(weights) < 0 or bad_rates or self.max_deviation < 0:
            raise ValueError(
                "need beta, dw_weight, recon_weight, mix_noise, max_deviation >= 0, tau > 0, "
                "0 <= dropout < 1: "
                f"{self}"
            )
        if self.recon_weight == 0 and self.dw_weight == 0:
            raise ValueError("recon_weight and dw_weight are both 0: nothing to learn from")

    @property
    def lora_layout(self) -> LoraLayout:
        return LoraLayout.from_dict(self.layout)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> CVAEConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise CheckpointError(f"unknown generator config fields {unknown}")
        return cls(**data)


def read_config(folder: Path) -> CVAEConfig:
    path = folder / CONFIG_NAME
    if not (folder / WEIGHTS_NAME).is_file():
        for other in sorted(folder.glob("*")):
            refuse_pickle(other, CheckpointError)
    if not path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"{folder} is not a generator checkpoint ({CONFIG_NAME} + {WEIGHTS_NAME})"
        )
    try:
        return CVAEConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError, LayoutError too
        raise CheckpointError(f"{path} is not a valid generator config: {exc}") from exc


def read_checked_config(
    folder: Path,
    expected_layout: LoraLayout | None = None,
    expected_embed_dim: int | None = None,
) -> CVAEConfig:
    """The config of the checkpoint in ``folder``, refusing pickle files and a checkpoint made
    for another layout or encoder dimension (a :class:`CheckpointError` naming what was
    expected and found)."""
    refuse_pickle(folder, CheckpointError)
    config = read_config(folder)
    if expected_layout is not None:
        try:
            expected_layout.check_matches(config.lora_layout, what=f"generator {folder}")
        except LayoutError as exc:
            raise CheckpointError(
                f"{exc}; it was trained for base model {config.base_model!r}"
            ) from exc
    if expected_embed_dim is not None and expected_embed_dim != config.embed_dim:
        raise CheckpointError(
            f"generator {folder} expects {config.embed_dim}-d description embeddings "
            f"(encoder {config.encoder!r}), found {expected_embed_dim}-d ones"
        )
    return config


def read_checked_weights(folder: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """The state dict in ``folder``'s weights file, checked before it is read against
    ``shapes`` (exactly these keys and shapes, float dtypes, at most :data:`MAX_PARAMETERS`
    numbers), then for finite values."""
    total = sum(math.prod(s) for s in shapes.values())
    if total > MAX_PARAMETERS:
        raise CheckpointError(
            f"{folder / CONFIG_NAME} describes a generator of {total:,} numbers, more than "
            f"the {MAX_PARAMETERS:,} allowed: refusing to build it"
        )
    try:
        return load_safetensors(folder / WEIGHTS_NAME, shapes)
    except UntrustedFileError as exc:
        raise CheckpointError(f"{folder} does not fit its config: {exc}") from exc


class Checkpoint:
    """Saving and loading of a generator (:class:`hypergen.cvae.LoraCVAE` inherits it): its
    ``config`` as ``config.json`` and its state as ``model.safetensors``, checked on the way in."""

    # --- checkpoints ----------------------------------------------------------------------------
    def save_pretrained(
        self, folder: str | Path, overwrite: bool = False, dtype: torch.dtype = torch.float32
    ) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically.

        ``dtype=torch.float16`` halves the file; :meth:`from_pretrained` loads it back as fp32.
        """
        folder = Path(folder)
        state = {
            k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in self.state_dict().items()
        }
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2))
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        return folder

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        expected_layout: LoraLayout | None = None,
        expected_embed_dim: int | None = None,
    ) -> Checkpoint:
        """Load a checkpoint (in eval mode); refuse one made for another layout or encoder
        dimension with a :class:`CheckpointError` naming what was expected and found.

        The weights file is checked before it is read: header size, exactly the keys, shapes
        and float dtypes its config implies (at most :data:`MAX_PARAMETERS`); then the values
        must be finite. Pickle checkpoints (Lightning's ``.ckpt``, ``.bin``, ``.pt``) are refused.
        """
        folder = Path(folder)
        config = read_checked_config(folder, expected_layout, expected_embed_dim)
        with torch.device("meta"):  # a config describing a huge model allocates nothing
            shapes = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        state = read_checked_weights(folder, shapes)
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model.eval()
