"""hypergen: generate LoRA adapters for a language model from a plain-language task description.

Everything runs offline: models come from PyPI packages or local folders, never from a hub, so
``HF_HUB_OFFLINE`` is set (unless the caller set it) before transformers is imported.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hypergen.adapter_io import LoraAdapter  # noqa: E402
from hypergen.apply import apply_adapter, merge_into_base, swap_adapter  # noqa: E402
from hypergen.base_model import BaseModel, load_base_model  # noqa: E402
from hypergen.encoder import TaskEncoder  # noqa: E402
from hypergen.errors import (  # noqa: E402
    AdapterError,
    BaseModelError,
    DescriptionError,
    HypergenError,
    LayoutError,
)
from hypergen.generator import GeneratedAdapter, HyperGen  # noqa: E402
from hypergen.layout import LoraLayout  # noqa: E402

__all__ = [
    "AdapterError",
    "BaseModel",
    "BaseModelError",
    "DescriptionError",
    "GeneratedAdapter",
    "HyperGen",
    "HypergenError",
    "LayoutError",
    "LoraAdapter",
    "LoraLayout",
    "TaskEncoder",
    "apply_adapter",
    "load_base_model",
    "merge_into_base",
    "swap_adapter",
]
