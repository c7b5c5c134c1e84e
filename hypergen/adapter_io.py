"""LoRA adapters as values and as PEFT folders.

A :class:`LoraAdapter` is a layout plus its stacked weights (see :mod:`hypergen.layout`). On disk it
is a standard PEFT folder, ``adapter_config.json`` + ``adapter_model.safetensors``, written with
peft's ``LoraConfig.save_pretrained`` and read with ``PeftConfig.from_pretrained`` and
``load_peft_weights``, so ``PeftModel.from_pretrained`` and LoRA-serving engines load it as is.
hypergen's own record (layout, base model name, free-form metadata) rides in the safetensors
header, so a folder made elsewhere still loads (its layout is then inferred from its keys).

A folder from elsewhere is checked before its weights are read (see :mod:`hypergen._untrusted`):
the header's size, then known keys only, each with the layout's shape and a float dtype; then
the values (finite). Pickle files (``adapter_model.bin``, ``.pt``, ``.ckpt``) are refused. The
zip the app offers for download loads as is: it is unpacked with path-traversal and zip-bomb
checks into a temporary folder.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig
from peft.utils import get_peft_model_state_dict, load_peft_weights
from safetensors.torch import save_file

from hypergen._fs import atomic_dir
from hypergen._untrusted import (
    TensorEntry,
    check_tensors,
    extract_zip,
    read_safetensors_header,
    refuse_pickle,
)
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
        """Read and validate a PEFT LoRA folder (or a zip of one, as the app downloads).

        Args:
            folder: a folder holding ``adapter_config.json`` and ``adapter_model.safetensors``,
                or a ``.zip`` holding one such folder.
            layout: the layout the adapter must match (e.g. the base model's); ``None`` accepts
                the layout the folder records or implies.
        """
        folder = Path(folder)
        if folder.suffix.lower() == ".zip" and folder.is_file():
            return cls._from_zip(folder, layout)
        refuse_pickle(folder, AdapterError)
        config = _read_config(folder)
        tensors, meta = read_safetensors_header(folder / WEIGHTS_NAME, AdapterError)
        record = _parse_record(folder, meta)
        found = (
            LoraLayout.from_dict(record["layout"])
            if "layout" in record
            else _infer_layout(folder, tensors, config)
        )
        if layout is not None:
            layout.check_matches(found, what=f"adapter {folder}")
        expected = _peft_shapes(folder, found, tensors)
        check_tensors(folder / WEIGHTS_NAME, tensors, expected, AdapterError)
        try:
            sd = load_peft_weights(str(folder), device="cpu")
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise AdapterError(
                f"{folder / WEIGHTS_NAME} is not a readable safetensors file: {exc}"
            ) from exc
        weights = found.from_peft_state_dict(sd)
        base = record.get("base_model") or config.base_model_name_or_path or "unknown"
        return cls(found, weights, str(base), record.get("metadata", {}))

    @classmethod
    def _from_zip(cls, archive: Path, layout: LoraLayout | None) -> LoraAdapter:
        with tempfile.TemporaryDirectory(prefix="hypergen-adapter-") as tmp:
            try:
                files = extract_zip(archive, Path(tmp))
            except ValueError as exc:
                raise AdapterError(str(exc)) from exc
            folders = sorted({p.parent for p in files if p.name == CONFIG_NAME})
            if len(folders) != 1:
                raise AdapterError(
                    f"{archive} holds {len(folders)} adapter folders ({CONFIG_NAME}); expected one"
                )
            return cls.from_pretrained(folders[0], layout)


def _infer_layout(folder: Path, tensors: dict[str, TensorEntry], config: LoraConfig) -> LoraLayout:
    """The layout a folder without hypergen's record implies, from header shapes only."""
    bad = [k for k, t in tensors.items() if len(t.shape) != 2]
    if bad:
        raise AdapterError(f"{folder / WEIGHTS_NAME}: tensor {bad[0]} is not a 2-D LoRA matrix")
    shapes = {k: torch.empty(t.shape, device="meta") for k, t in tensors.items()}
    return LoraLayout.from_peft_state_dict_keys(shapes, config.r, config.lora_alpha)


def _peft_shapes(
    folder: Path, layout: LoraLayout, tensors: dict[str, TensorEntry]
) -> dict[str, tuple[int, ...]]:
    """PEFT key -> shape that ``layout`` expects (after a cheap count check on the header)."""
    count = 2 * layout.num_layers * len(layout.modules)
    if count != len(tensors):
        raise AdapterError(
            f"{folder / WEIGHTS_NAME} holds {len(tensors)} tensors; its layout needs {count}"
        )
    stacked = layout.expected_shapes()
    try:
        return {
            layout.peft_key(m, layer, ab): stacked[f"{m}.{ab}"][1:]
            for m in layout.modules
            for layer in range(layout.num_layers)
            for ab in "AB"
        }
    except (KeyError, IndexError, ValueError) as exc:  # a path template other than "...{layer}..."
        raise AdapterError(f"{folder / WEIGHTS_NAME}: malformed layout paths ({exc!r})") from exc


def _read_config(folder: Path) -> LoraConfig:
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist")
    if not (folder / CONFIG_NAME).is_file():
        raise AdapterError(f"{folder} has no {CONFIG_NAME}: not a PEFT adapter folder")
    if not (folder / WEIGHTS_NAME).is_file():
        for pickled in sorted(folder.glob("adapter_model.*")):
            refuse_pickle(pickled, AdapterError)
        raise AdapterError(f"{folder} has no {WEIGHTS_NAME}")
    try:
        config = PeftConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise AdapterError(f"{folder / CONFIG_NAME} is not a valid PEFT config: {exc}") from exc
    if not isinstance(config, LoraConfig):
        raise AdapterError(f"{folder} is a {config.peft_type} adapter; hypergen handles LoRA only")
    return config


def _parse_record(folder: Path, meta: dict[str, str]) -> dict:
    try:
        record = json.loads(meta[_META_KEY]) if _META_KEY in meta else {}
    except (ValueError, RecursionError) as exc:
        raise AdapterError(f"{folder / WEIGHTS_NAME}: corrupt hypergen metadata: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("metadata", {}), dict):
        raise AdapterError(f"{folder / WEIGHTS_NAME}: hypergen metadata is not a JSON record")
    return record
