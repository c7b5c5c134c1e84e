"""Checks on files that come from elsewhere, made before their content is read into memory.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw bytes. :func:`read_safetensors_header` reads and checks
only the header (its claimed size first, so a 10 GB header is refused unread), which lets a
caller refuse unknown keys, wrong shapes or dtypes and oversized tensors before any tensor is
loaded; :func:`load_safetensors` does that, reads the file and refuses non-finite values.
:func:`extract_zip` unpacks an archive after checking every member's name (no absolute
path, no ``..``, no link) and size (member count, bytes actually written, compression ratio), so
neither a path-traversal archive nor a zip bomb gets out. :func:`refuse_pickle` names the way out
for pickle weight files, which hypergen never loads.
"""

from __future__ import annotations

import json
import math
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import load_file

from hypergen.errors import HypergenError

MAX_HEADER_BYTES = 64 * 1024 * 1024
"""Largest safetensors header read (safetensors itself stops at 100 MB; ours carry JSON records:
a zoo export of a few thousand experts needs a few MB)."""
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
FLOAT_DTYPES = frozenset({"F32", "F16", "BF16"})
"""Dtypes hypergen accepts for weights and embeddings."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_ZIP_MEMBERS = 64
MAX_ZIP_BYTES = 2 * 1024**3
MAX_ZIP_RATIO = 200
"""Largest uncompressed / compressed size of one member (safetensors of weights: ~1.1)."""


class UntrustedFileError(HypergenError, ValueError):
    """A file from elsewhere is malformed, too large, unsafe to unpack, or a pickle."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def refuse_pickle(path: Path, error: type[Exception] = UntrustedFileError) -> None:
    """Raise ``error`` when ``path`` is a pickle weight file (``.bin``, ``.pt``, ``.ckpt`` ...)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise error(
            f"{path} is a pickle file, which hypergen never loads (unpickling runs code): "
            "convert it to safetensors where you trust it, e.g. with "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'x.safetensors')` "
            "or `PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)`"
        )


def read_safetensors_header(
    path: Path,
    error: type[Exception] = UntrustedFileError,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, reading nothing but its header.

    Checks the header's size before reading it, that it is a JSON object of well-formed entries
    whose byte ranges tile the data exactly (``prod(shape) * itemsize`` each), and that the
    metadata maps strings to strings. Raises ``error`` naming the file and the problem.
    """
    path = Path(path)
    refuse_pickle(path, error)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > max_header_bytes or 8 + length > size:
                raise error(
                    f"{path} is not a readable safetensors file: its header claims "
                    f"{length:,} bytes (file {size:,} bytes, at most {max_header_bytes:,} allowed)"
                )
            raw = f.read(length)
    except OSError as exc:
        raise error(f"{path} is unreadable: {exc}") from exc
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 is a ValueError too
        raise error(f"{path}: the safetensors header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise error(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise error(f"{path}: the safetensors metadata must map strings to strings")
    return _check_entries(path, header, size - 8 - length, error), metadata


def _check_entries(
    path: Path, header: dict, data_bytes: int, error: type[Exception]
) -> dict[str, TensorEntry]:
    tensors, spans = {}, []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = dtype in DTYPE_BYTES and all(type(n) is int and n >= 0 for n in [*shape, begin])
            ok = ok and type(end) is int and begin <= end <= data_bytes
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise error(f"{path}: malformed safetensors entry for tensor {name!r}: {entry!r}")
        tensors[name] = TensorEntry(dtype, tuple(shape))
        if end - begin != tensors[name].numel * DTYPE_BYTES[dtype]:
            raise error(
                f"{path}: tensor {name} is {dtype} {tuple(shape)} but spans {end - begin:,} bytes"
            )
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise error(f"{path}: tensor data overlaps or leaves gaps (corrupt or crafted file)")
        covered = end
    if covered != data_bytes:
        raise error(f"{path}: {data_bytes - covered:,} bytes after the last tensor (truncated?)")
    return tensors


def check_tensors(
    path: Path,
    tensors: dict[str, TensorEntry],
    expected: dict[str, tuple[int, ...]],
    error: type[Exception] = UntrustedFileError,
    dtypes: frozenset[str] = FLOAT_DTYPES,
) -> None:
    """Raise ``error`` unless ``tensors`` has exactly the ``expected`` keys, shapes and dtypes."""
    unknown = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if unknown or missing:
        raise error(
            f"{path}: unexpected tensors {unknown[:3]} ({len(unknown)} in all), missing "
            f"{missing[:3]} ({len(missing)} in all)"
        )
    for name, shape in expected.items():
        found = tensors[name]
        if found.shape != tuple(shape):
            raise error(
                f"{path}: tensor {name}: expected shape {tuple(shape)}, found {found.shape}"
            )
        if found.dtype not in dtypes:
            raise error(
                f"{path}: tensor {name}: expected one of {sorted(dtypes)}, found {found.dtype}"
            )


def load_safetensors(
    path: Path,
    expected: dict[str, tuple[int, ...]],
    error: type[Exception] = UntrustedFileError,
    dtypes: frozenset[str] = FLOAT_DTYPES,
) -> dict[str, torch.Tensor]:
    """Read ``path`` if its header has exactly the ``expected`` keys, shapes and ``dtypes``,
    then refuse non-finite values; everything wrong raises ``error`` naming the tensor."""
    tensors, _ = read_safetensors_header(path, error)
    check_tensors(path, tensors, expected, error, dtypes)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise error(f"{path} is not a readable safetensors file: {exc}") from exc
    for key, value in state.items():
        bad = int((~torch.isfinite(value)).sum()) if value.is_floating_point() else 0
        if bad:
            raise error(f"{path}: tensor {key} has {bad} non-finite values (NaN or inf)")
    return state


# --- zip archives -------------------------------------------------------------------------------
def extract_zip(
    archive: Path,
    dest: Path,
    max_members: int = MAX_ZIP_MEMBERS,
    max_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_ZIP_RATIO,
) -> list[Path]:
    """Unpack ``archive`` into the empty folder ``dest``; return the files written.

    Refused with :class:`UntrustedFileError` before anything is written: more than
    ``max_members`` entries, a name that is absolute or climbs out (``..``), a link, a duplicate
    name, declared sizes over ``max_bytes`` or a compression ratio over ``max_ratio``. While
    writing, the bytes really produced are counted too (declared sizes can lie).
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = _check_members(archive, zf.infolist(), max_members, max_bytes, max_ratio)
            return [_extract_one(archive, zf, info, dest) for info in members]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise UntrustedFileError(f"{archive} is not a readable zip archive: {exc}") from exc


def _check_members(archive, infos, max_members, max_bytes, max_ratio) -> list[zipfile.ZipInfo]:
    if len(infos) > max_members:
        raise UntrustedFileError(f"{archive} has {len(infos)} entries, at most {max_members}")
    names, total, files = set(), 0, []
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts or name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
            raise UntrustedFileError(f"{archive}: entry {name!r} would land outside the folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UntrustedFileError(f"{archive}: entry {name!r} is a link")
        if name in names:
            raise UntrustedFileError(f"{archive}: entry {name!r} appears twice")
        names.add(name)
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if total > max_bytes or ratio > max_ratio:
            raise UntrustedFileError(
                f"{archive}: entry {name!r} unpacks to {info.file_size:,} bytes ({ratio:.0f}x "
                f"compressed; limits: {max_bytes:,} bytes in all, {max_ratio:.0f}x): a zip bomb?"
            )
        if not info.is_dir():
            files.append(info)
    return files


def _extract_one(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> Path:
    target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise UntrustedFileError(f"{archive}: entry {info.filename!r} escapes {dest}")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > info.file_size:
                raise UntrustedFileError(
                    f"{archive}: entry {info.filename!r} unpacks past its declared size"
                )
            out.write(chunk)
    return target
