"""The public generator: a task description in, a PEFT LoRA adapter out, no training.

:class:`HyperGen` ties together the task encoder, the expert bank (the zoo: retrieval plus the
neighbours' weights) and the conditional VAE (:mod:`hypergen.cvae`), and applies what it makes to
the base model, swapping adapters in place without reloading the base.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from hypergen.adapter_io import LoraAdapter
from hypergen.apply import apply_adapter, swap_adapter
from hypergen.bank import ExpertBank
from hypergen.base_model import BaseModel, load_base_model
from hypergen.conditioning import mixture_inputs
from hypergen.confidence import Confidence, load_threshold
from hypergen.cvae import CheckpointError, LoraCVAE
from hypergen.encoder import TaskEncoder, check_description
from hypergen.errors import DescriptionError

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = Path(__file__).resolve().parent / "assets" / "generator"
"""The shipped generator checkpoint (config.json + model.safetensors)."""
DEFAULT_ZOO = Path(__file__).resolve().parents[1] / "expert_zoo" / "zoo"
"""The shipped zoo the default generator retrieves from."""
MAX_BATCH = 256
"""Descriptions per ``generate_batch`` call."""


@dataclass
class GeneratedAdapter:
    """An adapter made from a description, with the zoo experts it was conditioned on."""

    adapter: LoraAdapter
    description: str
    neighbors: list[tuple[str, str, float]] = field(default_factory=list)
    """``(expert id, its nearest description, cosine similarity)``, best first."""
    sample: int = 0
    """Which of the ``num_samples`` draws this is (0 for the prior mean)."""
    confidence: Confidence | None = None
    """How close the zoo's experts are and how much they (and the samples) agree; its
    ``warning`` says when no expert is close enough for the adapter to be trusted."""

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write a PEFT adapter folder (loadable by ``PeftModel.from_pretrained``)."""
        return self.adapter.save_pretrained(folder, overwrite=overwrite)


class AdapterGenerator(Protocol):
    """What the app and the benchmark need of a generator; :class:`HyperGen` is one."""

    bank: ExpertBank
    encoder: TaskEncoder

    @property
    def samples_differ(self) -> bool: ...

    @property
    def base(self) -> BaseModel: ...

    def generate(
        self, description: str, temperature: float = 0.0, seed: int = 0
    ) -> GeneratedAdapter: ...

    def sample(
        self, description: str, num_samples: int, temperature: float = 1.0, seed: int = 0
    ) -> list[GeneratedAdapter]: ...

    def generate_batch(
        self,
        descriptions: Sequence[str],
        num_samples: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[list[GeneratedAdapter]]: ...

    def apply(self, adapter: GeneratedAdapter | LoraAdapter): ...

    def info(self) -> dict: ...


class HyperGen:
    """Generate LoRA adapters from task descriptions.

    Example:
        >>> gen = HyperGen.from_pretrained()
        >>> adapter = gen.generate("Classify the sentiment of a hotel review")
        >>> model = gen.apply(adapter)
    """

    def __init__(
        self,
        cvae: LoraCVAE,
        bank: ExpertBank,
        encoder: TaskEncoder,
        base_model: str | Path | None = None,
    ):
        config = cvae.config
        if encoder.dim != config.embed_dim or (config.encoder and encoder.name != config.encoder):
            raise CheckpointError(
                f"generator expects encoder {config.encoder!r} ({config.embed_dim}-d), "
                f"got {encoder.name!r} ({encoder.dim}-d)"
            )
        cvae_layout = config.lora_layout
        cvae_layout.check_matches(bank.layout, what=f"zoo {bank.name}")
        self.cvae, self.bank, self.encoder = cvae.eval(), bank, encoder
        self.base_model_source = base_model
        self.threshold = load_threshold()
        """Nearest similarity below which adapters carry a warning (None: not calibrated)."""
        self.zoo_paths: list[Path] = []
        """The zoo folders or files the bank was read from (set by :meth:`from_pretrained`)."""
        self._base: BaseModel | None = None
        self._slot = None  # the PeftModel adapters are swapped into

    @classmethod
    def from_pretrained(
        cls,
        generator: str | Path | None = None,
        zoo: str | Path | list[str | Path] | None = None,
        encoder: str | Path | None = None,
        base_model: str | Path | None = None,
    ) -> HyperGen:
        """Load a generator, the zoo it retrieves from, and the task encoder.

        Args:
            generator: checkpoint folder (default: the shipped generator).
            zoo: zoo folder or export file (default: the shipped zoo), or a list of them served
                as one bank (e.g. ``[DEFAULT_ZOO, "my-zoo"]``: the shipped experts and yours;
                they must share layout, encoder and base model, and ids must be unique).
                A generator trained on one zoo conditions on the others' experts through
                retrieval, with no retraining.
            encoder: sentence-transformers folder (default: all-MiniLM-L6-v2).
            base_model: what :meth:`apply` loads (default: SmolLM2-135M-Instruct).
        """
        folder = Path(generator) if generator is not None else DEFAULT_GENERATOR
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f"no generator checkpoint in {folder}: train one with "
                "`hypergen-train --zoo PATH --out DIR` and pass its folder"
            )
        encoder_ = TaskEncoder(encoder)
        paths = zoo if isinstance(zoo, (list, tuple)) else [zoo if zoo is not None else DEFAULT_ZOO]
        bank = ExpertBank.load(list(paths))
        cvae = LoraCVAE.from_pretrained(
            folder, expected_layout=bank.layout, expected_embed_dim=encoder_.dim
        )
        made = cls(cvae, bank, encoder_, base_model)
        made.zoo_paths = [Path(p) for p in paths]
        return made

    def use_zoos(self, paths: list[str | Path]) -> None:
        """Retrieve from these zoos from now on (e.g. after an expert was added to one: the
        next :meth:`generate` sees it). The new bank must fit the generator's layout."""
        bank = ExpertBank.load([Path(p) for p in paths])
        self.cvae.config.lora_layout.check_matches(bank.layout, what=f"zoo {bank.name}")
        self.bank, self.zoo_paths = bank, [Path(p) for p in paths]

    @property
    def samples_differ(self) -> bool:
        """Whether samples at ``temperature > 0`` can differ: a trained decoder reads its
        latent (:attr:`LoraCVAE.ignores_latent`), or each sample draws its own neighbour
        mixture (``config.mix_noise > 0``)."""
        return not self.cvae.ignores_latent or self.cvae.config.mix_noise > 0

    def generate(
        self, description: str, temperature: float = 0.0, seed: int = 0
    ) -> GeneratedAdapter:
        """The adapter for one description: the prior's mean (``temperature=0``, the
        deterministic default) or one draw with the prior's spread scaled by ``temperature``
        (``seed``: same seed, same adapter). Many descriptions: :meth:`generate_batch`; several
        draws of one: :meth:`sample`."""
        self._require_str(description, "generate_batch")
        return self._make([description], 1, temperature, seed, single=True)[0][0]

    def sample(
        self, description: str, num_samples: int, temperature: float = 1.0, seed: int = 0
    ) -> list[GeneratedAdapter]:
        """``num_samples`` adapters for one description, latents drawn from the prior with its
        spread scaled by ``temperature`` (e.g. to choose among them on a few examples)."""
        self._require_str(description, "generate_batch(..., num_samples=n)")
        return self._make([description], num_samples, temperature, seed, single=True)[0]

    def generate_batch(
        self,
        descriptions: Sequence[str],
        num_samples: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[list[GeneratedAdapter]]:
        """Adapters for up to :data:`MAX_BATCH` descriptions at once: per description, its
        ``num_samples`` adapters (one list each, also for ``num_samples=1``)."""
        if isinstance(descriptions, str) or not isinstance(descriptions, (list, tuple)):
            raise DescriptionError(
                "generate_batch takes a list of descriptions, got "
                f"{type(descriptions).__name__}: use generate() for one"
            )
        return self._make(list(descriptions), num_samples, temperature, seed, single=False)

    @staticmethod
    def _require_str(description: object, instead: str) -> None:
        if isinstance(description, (list, tuple)):
            raise DescriptionError(f"generate takes one description (a str): use {instead}")

    @torch.no_grad()
    def _make(
        self, texts: list[str], num_samples: int, temperature: float, seed: int, single: bool
    ) -> list[list[GeneratedAdapter]]:
        """Per text, its ``num_samples`` adapters."""
        if not texts or len(texts) > MAX_BATCH:
            raise ValueError(f"give 1 to {MAX_BATCH} descriptions, got {len(texts)}")
        for i, text in enumerate(texts):  # here, whatever encoder the generator was given
            check_description(text, where=None if single else f"description {i}")
        if num_samples < 1 or temperature < 0:
            raise ValueError(
                f"need num_samples >= 1 and temperature >= 0, got {num_samples}, {temperature}"
            )
        if num_samples > 1 and not self.samples_differ:
            warnings.warn(
                "this generator's decoder ignores its latent (its gates and output heads are "
                f"untrained): all {num_samples} samples are the same adapter",
                stacklevel=3,
            )
        emb = self.encoder.encode(texts).reshape(len(texts), -1)
        bank = self.bank  # one bank for the whole call, even if use_zoos swaps it meanwhile
        cond = self.cvae.condition_inputs(bank, emb)
        gen = torch.Generator().manual_seed(seed)
        noise = temperature * self.cvae.config.mix_noise
        if noise > 0:  # each sample its own neighbour mixture, then the decoder as usual
            mixed = mixture_inputs(bank, cond, num_samples, self.cvae.config.tau, noise, gen)
            mixed.pop("mixture")
            flat = self.cvae.generate(mixed, 1, temperature, generator=gen)
            n = len(texts)
            weights = {k: v.reshape(n, num_samples, *v.shape[2:]) for k, v in flat.items()}
        else:
            weights = self.cvae.generate(cond, num_samples, temperature, generator=gen)
        confidences = [self._confidence(bank, cond, weights, i) for i in range(len(texts))]
        out = [
            [
                self._wrap(bank, texts[i], weights, cond, i, s, temperature, confidences[i])
                for s in range(num_samples)
            ]
            for i in range(len(texts))
        ]
        if single and confidences[0].warning:
            logger.warning("%s", confidences[0].warning)
        return out

    def _confidence(self, bank, cond, weights, i: int) -> Confidence:
        sims = cond["sims"][i].float()
        w = torch.softmax(sims / self.cvae.config.tau, dim=-1)
        samples = {k: v[i] for k, v in weights.items()}
        return Confidence(
            nearest=float(sims.max()),
            weighted=float((w * sims).sum()),
            threshold=self.threshold,
            layout=bank.layout,
            bank=bank,
            neighbours=cond["neighbours"][i],
            samples=samples
            if self.samples_differ and samples[next(iter(samples))].shape[0] > 1
            else None,
        )

    def _wrap(
        self, bank, text, weights, cond, i: int, s: int, temperature: float, confidence=None
    ) -> GeneratedAdapter:
        neighbors = []
        for e, sim in zip(cond["neighbours"][i].tolist(), cond["sims"][i].tolist(), strict=True):
            neighbors.append((bank.expert_ids[e], bank.descriptions[e][0], float(sim)))
        tensors = {k: v[i, s].contiguous() for k, v in weights.items()}
        meta = {
            "description": text,
            "neighbors": neighbors,
            "sample": s,
            "temperature": temperature,
            "generator": self.cvae.config.zoo,
        }
        if confidence is not None:  # the cheap part; the agreement is computed when read
            meta["confidence"] = {
                "nearest": confidence.nearest,
                "weighted": confidence.weighted,
                "threshold": confidence.threshold,
                "low": confidence.low,
            }
        adapter = LoraAdapter(self.cvae.config.lora_layout, tensors, bank.base_model, meta)
        return GeneratedAdapter(adapter, text, neighbors, s, confidence)

    @property
    def base(self) -> BaseModel:
        """The base model, loaded on first use."""
        if self._base is None:
            self._base = load_base_model(self.base_model_source)
        return self._base

    def apply(self, adapter: GeneratedAdapter | LoraAdapter):
        """The base model with ``adapter`` merged in, ready to generate.

        The base is loaded once; later calls swap the new adapter's weights in place.
        """
        lora = adapter.adapter if isinstance(adapter, GeneratedAdapter) else adapter
        if self._slot is None:
            self._slot = apply_adapter(self.base.model, lora)
            self._slot.merge_adapter()
        else:
            swap_adapter(self._slot, lora)
        return self._slot

    def info(self) -> dict:
        """What is loaded: base model, zoo, encoder and generator sizes."""
        return {
            "base_model": self.bank.base_model,
            "encoder": self.encoder.name,
            "zoo": self.bank.name,
            "zoo_experts": len(self.bank),
            "generator_parameters": self.cvae.num_parameters(),
            "lora_parameters": self.cvae.config.lora_layout.num_params,
        }
