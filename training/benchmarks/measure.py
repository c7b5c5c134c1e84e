"""How the benchmarks measure: timed repeats, p50/p95, resident memory, bytes on disk, and the
machine the figures were taken on."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm


def timings(fn, repeats: int, label: str = "", warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls ``fn(i)`` after ``warmup`` untimed ones."""
    for i in range(warmup):
        fn(i)
    out = []
    for i in tqdm(range(repeats), desc=label, leave=False, disable=repeats < 10):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def stats(seconds: list[float], scale: float = 1000.0) -> dict:
    """p50/p95 (in ms by default) of a list of seconds."""
    values = np.asarray(seconds) * scale
    return {
        "p50": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "n": len(values),
    }


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``); 0 where unavailable."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def folder_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "git": _git(),
    }


def _git() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
