"""LoRA adapters as values and as PEFT folders.

A :class:`LoraAdapter` is a layout plus its stacked weights (see :mod:`hypergen.layout`). On disk it
is a standard PEFT folder, ``adapter_config.json`` + ``adapter_model.safetensors``, written with
peft's ``LoraConfig.save_pretrained`` and read with ``PeftConfig.from_pretrained`` and
``load_peft_weights``, so ``PeftModel.from_pretrained`` and LoRA-serving engines load it as is.
hypergen's own record (layout, base model name, free-form metadata) rides in the safetensors
header, so a folder made elsewhere still loads (its layout is then inferred from its keys).
Pickle files (``adapter_model.bin``) are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig
from peft.utils import get_peft_model_state_dict, load_peft_weights
from safetensors import safe_open
from safetensors.torch import save_file

from hypergen._fs import atomic_dir
from hypergen.canonical import canonicalize
from hypergen.errors import AdapterError
from hypergen.layout import LoraLayout, Weights

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_META_KEY = "hypergen"


@dataclass
class LoraAdapter:
    """A LoRA adapter in stacked form, tied to the base model it was made for."""

    layout: LoraLayout
    weights: Weights
    """Stacked tensors, ``{"q_proj.A": (L, r, in), "q_proj.B": (L, out, r), ...}``."""
    base_model: str
    """Name of the base model (``BaseModel.name``), e.g. ``smollm2-135m-instruct``."""
    metadata: dict = field(default_factory=dict)
    """JSON-serialisable extras saved with the adapter (description, source, metrics, ...)."""

    def __post_init__(self) -> None:
        self.layout.validate(self.weights)

    def peft_config(self) -> LoraConfig:
        """The ``LoraConfig`` that places these weights in the base model."""
        return LoraConfig(
            r=self.layout.rank,
            lora_alpha=self.layout.alpha,
            target_modules=list(self.layout.modules),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=self.base_model,
        )

    def to_peft_state_dict(self) -> dict[str, torch.Tensor]:
        return self.layout.to_peft_state_dict(self.weights)

    def canonical(self) -> LoraAdapter:
        """The same update in canonical form (see :mod:`hypergen.canonical`)."""
        return LoraAdapter(
            self.layout,
            canonicalize(self.layout, self.weights),
            self.base_model,
            dict(self.metadata),
        )

    def to(self, dtype: torch.dtype) -> LoraAdapter:
        weights = {k: v.to(dtype) for k, v in self.weights.items()}
        return LoraAdapter(self.layout, weights, self.base_model, dict(self.metadata))

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write a PEFT adapter folder atomically (a crash leaves no half-written folder)."""
        folder = Path(folder)
        record = {
            "layout": self.layout.to_dict(),
            "base_model": self.base_model,
            "metadata": self.metadata,
        }
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            self.peft_config().save_pretrained(str(tmp))
            save_file(
                self.to_peft_state_dict(),
                str(tmp / WEIGHTS_NAME),
                metadata={"format": "pt", _META_KEY: json.dumps(record)},
            )
        return folder

    @classmethod
    def from_peft_model(
        cls,
        peft_model,
        base_model: str,
        adapter_name: str = "default",
        metadata: dict | None = None,
    ) -> LoraAdapter:
        """Copy the LoRA weights of ``adapter_name`` out of a live ``PeftModel``."""
        config = peft_model.peft_config[adapter_name]
        sd = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
        sd = {k: v.detach().cpu().clone() for k, v in sd.items()}
        layout = LoraLayout.from_peft_state_dict_keys(sd, config.r, config.lora_alpha)
        return cls(layout, layout.from_peft_state_dict(sd), base_model, dict(metadata or {}))

    @classmethod
    def from_pretrained(cls, folder: str | Path, layout: LoraLayout | None = None) -> LoraAdapter:
        """Read and validate a PEFT LoRA folder.

        Args:
            folder: a folder holding ``adapter_config.json`` and ``adapter_model.safetensors``.
            layout: the layout the adapter must match (e.g. the base model's); ``None`` accepts
                the layout the folder records or implies.
        """
        folder = Path(folder)
        config, record = _read_config(folder), _read_record(folder)
        try:
            sd = load_peft_weights(str(folder), device="cpu")
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise AdapterError(
                f"{folder / WEIGHTS_NAME} is not a readable safetensors file: {exc}"
            ) from exc
        found = (
            LoraLayout.from_dict(record["layout"])
            if "layout" in record
            else LoraLayout.from_peft_state_dict_keys(sd, config.r, config.lora_alpha)
        )
        if layout is not None:
            layout.check_matches(found, what=f"adapter {folder}")
        weights = found.from_peft_state_dict(sd)
        base = record.get("base_model") or config.base_model_name_or_path or "unknown"
        return cls(found, weights, base, record.get("metadata", {}))


def _read_config(folder: Path) -> LoraConfig:
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist")
    if not (folder / CONFIG_NAME).is_file():
        raise AdapterError(f"{folder} has no {CONFIG_NAME}: not a PEFT adapter folder")
    if not (folder / WEIGHTS_NAME).is_file():
        if (folder / "adapter_model.bin").is_file():
            raise AdapterError(
                f"{folder} holds a pickle adapter_model.bin, which hypergen never loads: convert it "
                "with `PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)`"
            )
        raise AdapterError(f"{folder} has no {WEIGHTS_NAME}")
    try:
        config = PeftConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise AdapterError(f"{folder / CONFIG_NAME} is not a valid PEFT config: {exc}") from exc
    if not isinstance(config, LoraConfig):
        raise AdapterError(f"{folder} is a {config.peft_type} adapter; hypergen handles LoRA only")
    return config


def _read_record(folder: Path) -> dict:
    try:
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise AdapterError(
            f"{folder / WEIGHTS_NAME} is not a readable safetensors file: {exc}"
        ) from exc
    try:
        return json.loads(meta[_META_KEY]) if _META_KEY in meta else {}
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{folder / WEIGHTS_NAME}: corrupt hypergen metadata: {exc}") from exc
