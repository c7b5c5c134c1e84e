"""One expert's folder in a zoo: ``<root>/experts/<id>/``.

It holds a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``, canonical form,
fp16), ``embeddings.safetensors`` (float32 ``(n_descriptions, dim)``, one unit row per
description) and ``expert.json`` (the :class:`~expert_zoo.store.ExpertRecord`). The record's
``content_hash`` is the sha256 of the weights file bytes followed by the embeddings file bytes, so
a flipped byte in either is found by :func:`check_folder`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from expert_zoo._index import ZooError, record_problem
from hypergen._untrusted import read_safetensors_header
from hypergen.adapter_io import CONFIG_NAME, WEIGHTS_NAME, LoraAdapter

NORM_TOLERANCE = 1e-3
"""How far from 1 an embedding row's L2 norm may be (TaskEncoder returns unit rows)."""
RECORD_NAME = "expert.json"
EMBEDDINGS_NAME = "embeddings.safetensors"
_EMBEDDINGS_KEY = "embeddings"
MAX_EMBEDDING_NUMBERS = 1 << 24
"""Most numbers one expert's embeddings file may hold (e.g. 4096 descriptions of 4096-d)."""


def content_hash(folder: Path) -> str:
    """sha256 over the adapter weights file bytes, then the embeddings file bytes."""
    digest = hashlib.sha256()
    for name in (WEIGHTS_NAME, EMBEDDINGS_NAME):
        with open(folder / name, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def check_embeddings(embeddings: np.ndarray, n: int, expert_id: str) -> np.ndarray:
    """``embeddings`` as contiguous float32 ``(n, dim)`` unit rows, else :class:`ZooError`."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != n or not np.issubdtype(emb.dtype, np.floating):
        raise ZooError(
            f"expert {expert_id}: expected float embeddings of shape ({n}, dim), one row per "
            f"description, got {emb.dtype} {emb.shape}"
        )
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1)
    if not np.all(np.abs(norms - 1) <= NORM_TOLERANCE):
        raise ZooError(
            f"expert {expert_id}: embedding rows must have unit norm (TaskEncoder.encode returns "
            f"them), found norms {np.round(norms, 4).tolist()}"
        )
    return emb


def save_embeddings(embeddings: np.ndarray, path: Path) -> None:
    save_file({_EMBEDDINGS_KEY: np.ascontiguousarray(embeddings, dtype=np.float32)}, str(path))


def read_embeddings(folder: Path) -> np.ndarray:
    """The stored description embeddings, float32 ``(n_descriptions, dim)``, finite.

    The file's header is checked before it is read (one float32 matrix of at most
    :data:`MAX_EMBEDDING_NUMBERS`); anything else raises :class:`ZooError`.
    """
    path = folder / EMBEDDINGS_NAME
    tensors, _ = read_safetensors_header(path, ZooError)
    entry = tensors.get(_EMBEDDINGS_KEY)
    if set(tensors) != {_EMBEDDINGS_KEY} or entry.dtype != "F32" or len(entry.shape) != 2:
        raise ZooError(f"{path}: expected one float32 matrix {_EMBEDDINGS_KEY!r}, found {tensors}")
    if entry.numel > MAX_EMBEDDING_NUMBERS:
        raise ZooError(f"{path}: {entry.shape} embeddings, more than {MAX_EMBEDDING_NUMBERS:,}")
    emb = load_file(str(path))[_EMBEDDINGS_KEY]
    if not np.isfinite(emb).all():
        raise ZooError(f"{path}: embeddings hold NaN or inf")
    return emb


def write_record(folder: Path, record: dict) -> None:
    """Write ``expert.json`` (temp file + rename, so it is never half-written)."""
    tmp = folder / f".{RECORD_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / RECORD_NAME)


def read_record(folder: Path) -> dict:
    """``expert.json`` as a dict; raises ``OSError`` or ``ValueError`` if missing or malformed."""
    data = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    return data


def write_expert(folder: Path, record: dict, adapter: LoraAdapter, embeddings: np.ndarray) -> dict:
    """Fill an empty (temporary) folder; return ``record`` with its ``content_hash`` set."""
    adapter.save_pretrained(folder, overwrite=True)
    save_embeddings(embeddings, folder / EMBEDDINGS_NAME)
    record = {**record, "content_hash": content_hash(folder)}
    write_record(folder, record)
    return record


def check_folder(folder: Path, dim: int | None, fallback: dict | None = None) -> tuple[dict, str]:
    """Check an expert folder; return ``(record, "")`` if sound, else ``({}, problem)``.

    Args:
        folder: ``<root>/experts/<id>``.
        dim: the zoo's embedding dimension (``None``: not checked).
        fallback: the manifest's record for this id, used when ``expert.json`` is missing or
            unreadable (its ``content_hash`` must then match the files).
    """
    try:
        record = read_record(folder)
    except (OSError, ValueError) as exc:
        if fallback is None:
            return {}, f"{RECORD_NAME} is missing or unreadable ({_short(exc)})"
        record = fallback
    if record.get("expert_id") != folder.name:
        return {}, f"{RECORD_NAME} names expert {record.get('expert_id')!r}, not {folder.name!r}"
    problem = record_problem(record)
    if problem:
        return {}, f"{RECORD_NAME}: {problem}"
    problem = _check_files(folder, record, dim)
    return ({}, problem) if problem else (record, "")


def _check_files(folder: Path, record: dict, dim: int | None) -> str:
    names = (CONFIG_NAME, WEIGHTS_NAME, EMBEDDINGS_NAME)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    if content_hash(folder) != record.get("content_hash"):
        return "content hash mismatch: the adapter or embeddings file was changed or damaged"
    try:
        json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        with safe_open(str(folder / WEIGHTS_NAME), framework="numpy") as f:
            f.keys()
        emb = read_embeddings(folder)
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        return f"unreadable adapter or embeddings ({_short(exc)})"
    want = (len(record.get("descriptions", ())), dim if dim is not None else emb.shape[-1])
    if emb.shape != want or emb.dtype != np.float32:
        return f"embeddings are {emb.dtype} {emb.shape}, expected float32 {want}"
    return ""


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
