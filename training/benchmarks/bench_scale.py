"""The scale part of ``hypergen-bench`` (:mod:`training.benchmarks.bench`): synthetic expert zoos in the real
formats, and what is measured on them.

Experts are random *canonical* adapters: a small pool of random adapters brought to canonical
form (:meth:`LoraAdapter.canonical`), expert ``e`` being pool adapter ``e % pool`` scaled by a
positive factor (which keeps the form canonical). Description embeddings are random unit rows.

- :func:`write_export` streams an ``expert-zoo export`` file (fp16 weights) to disk without holding
  the zoo in memory (10,000 experts of SmolLM2-135M's layout are ~9 GB).
- :func:`write_zoo_folder` writes a zoo folder (``manifest.json``, index, ``experts/<id>/``) with
  one commit; the experts' adapter files are hard links to one pool file, so 10,000 experts take
  seconds and little disk. Every folder is a valid expert (its content hash matches its files).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from expert_zoo import _folder, _index
from expert_zoo.store import ExpertRecord, ExpertZoo
from hypergen.adapter_io import CONFIG_NAME, WEIGHTS_NAME, LoraAdapter
from hypergen.bank import EXPORT_FORMAT, ExpertBank
from hypergen.generator import HyperGen
from hypergen.layout import LoraLayout
from training.benchmarks.config import BenchConfig
from training.benchmarks.measure import rss_bytes, stats, timings

POOL = 8
"""Distinct random adapters behind a synthetic zoo."""
DESCRIPTIONS = 4
"""Descriptions (embedding rows) per expert, as in the shipped zoo."""


def pool_adapters(layout: LoraLayout, base_model: str, seed: int = 0) -> list[LoraAdapter]:
    """``POOL`` random canonical adapters (fp16), ``‖ΔW‖`` of the order of trained experts'."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in range(POOL):
        weights = {
            k: 0.05 * torch.randn(s, generator=gen) for k, s in layout.expected_shapes().items()
        }
        adapter = LoraAdapter(layout, weights, base_model, {"pool": p})
        out.append(adapter.canonical().to(torch.float16))
    return out


PARAPHRASE_SPREAD = 0.33
"""Noise norm around an expert's centre for its description rows: cos(row, centre) ~0.95, as the
shipped zoo's paraphrases have with their own expert's mean (measured: mean 0.952)."""
QUERY_SPREAD = 1.0
"""Noise norm of a benchmark query around a random expert's centre: cos ~0.7, like a new task's
description against its nearest zoo expert (shipped zoo: nearest other expert, mean 0.706)."""


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def near_rows(centres: np.ndarray, per: int, spread: float, seed: int) -> np.ndarray:
    """``per`` unit rows around each unit centre, ``spread`` the norm of the added noise."""
    noise = unit_rows(len(centres) * per, centres.shape[1], seed) * spread
    rows = np.repeat(centres, per, axis=0) + noise
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def description_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` experts' ``DESCRIPTIONS`` embeddings each, clustered as paraphrases are."""
    return near_rows(unit_rows(n, dim, seed), DESCRIPTIONS, PARAPHRASE_SPREAD, seed + 1)


def record(i: int, header: dict) -> dict:
    """The record of synthetic expert ``i``, shaped like a real one."""
    return {
        "expert_id": f"synthetic__e{i:05d}",
        "task_id": f"synthetic:e{i:05d}",
        "family": f"fam{i % 97}",
        "descriptions": [f"Synthetic task number {i}, phrasing {j}." for j in range(DESCRIPTIONS)],
        "encoder": header["encoder"],
        "base_model": header["base_model"],
        "layout": header["layout"],
        "metrics": {"gain": 0.0},
        "flagged": False,
        "content_hash": "",
        "created": "",
    }


def header_for(layout: LoraLayout, encoder: str, base_model: str, dim: int) -> dict:
    return {"encoder": encoder, "base_model": base_model, "dim": dim, "layout": layout.to_dict()}


def write_export(path: Path, n: int, header: dict, seed: int = 0, chunk: int = 64) -> Path:
    """Stream a synthetic ``n``-expert export file to ``path`` (safetensors, written by hand so
    that only ``chunk`` experts are in memory at a time)."""
    layout = LoraLayout.from_dict(header["layout"])
    pool = pool_adapters(layout, header["base_model"], seed)
    scale = torch.from_numpy(np.random.default_rng(seed).uniform(0.5, 2.0, n).astype(np.float32))
    emb = description_rows(n, header["dim"], seed)
    small = {
        "embeddings": emb,
        "row_expert": np.repeat(np.arange(n, dtype=np.int64), DESCRIPTIONS),
        "row_description": np.tile(np.arange(DESCRIPTIONS, dtype=np.int64), n),
    }
    keys = sorted(pool[0].weights)
    specs = {f"weights.{k}": ("F16", [n, *pool[0].weights[k].shape]) for k in keys}
    specs |= {
        k: ("F32" if v.dtype == np.float32 else "I64", list(v.shape)) for k, v in small.items()
    }
    zoo = {"header": header, "experts": [record(i, header) for i in range(n)]}
    meta = {"format": EXPORT_FORMAT, "zoo": json.dumps(zoo)}
    with open(path, "wb") as f:
        for name in _write_header(f, specs, meta):  # data in the header's order
            if name in small:
                f.write(np.ascontiguousarray(small[name]).tobytes())
                continue
            stack = torch.stack([a.weights[name.removeprefix("weights.")] for a in pool]).float()
            for start in tqdm(range(0, n, chunk), desc=name, leave=False):
                ids = torch.arange(start, min(n, start + chunk))
                root = scale[ids].sqrt().reshape(-1, *[1] * (stack.dim() - 1))
                f.write((root * stack[ids % POOL]).half().numpy().tobytes())
    return path


def _write_header(f, specs: dict[str, tuple[str, list[int]]], meta: dict) -> list[str]:
    """Write the safetensors header; return the tensor names in the order of their data."""
    size = {"F16": 2, "F32": 4, "I64": 8}
    header, offset = {"__metadata__": meta}, 0
    for name in sorted(specs):
        dtype, shape = specs[name]
        end = offset + size[dtype] * int(np.prod(shape))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    f.write(struct.pack("<Q", len(blob)) + blob)
    return sorted(specs)


def write_zoo_folder(root: Path, n: int, header: dict, seed: int = 0) -> Path:
    """A synthetic ``n``-expert zoo folder, committed once (see the module docstring)."""
    layout = LoraLayout.from_dict(header["layout"])
    pool = pool_adapters(layout, header["base_model"], seed)
    templates = root / "pool"
    for p, adapter in enumerate(pool):
        adapter.save_pretrained(templates / str(p), overwrite=True)
    emb = description_rows(n, header["dim"], seed)
    records = []
    for i in tqdm(range(n), desc=f"zoo folder, {n} experts", leave=False):
        rec = record(i, header)
        folder = root / "experts" / rec["expert_id"]
        folder.mkdir(parents=True)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            os.link(templates / str(i % POOL) / name, folder / name)
        _folder.save_embeddings(
            emb[i * DESCRIPTIONS : (i + 1) * DESCRIPTIONS], folder / _folder.EMBEDDINGS_NAME
        )
        rec["content_hash"] = _folder.content_hash(folder)
        (folder / _folder.RECORD_NAME).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        records.append(rec)
    index = _index.new_index(header["dim"])
    index.add(emb)
    _index.commit(root, index, header, records)
    return root


def new_expert(i: int, header: dict, seed: int = 1):
    """``(ExpertRecord, adapter, embeddings)`` of a fresh expert to add to a synthetic zoo."""
    layout = LoraLayout.from_dict(header["layout"])
    gen = torch.Generator().manual_seed(seed + i)
    weights = {k: 0.05 * torch.randn(s, generator=gen) for k, s in layout.expected_shapes().items()}
    rec = {k: v for k, v in record(i, header).items() if k not in ("content_hash", "created")}
    rec["expert_id"], rec["task_id"] = f"added__e{i:05d}", f"added:e{i:05d}"
    adapter = LoraAdapter(layout, weights, header["base_model"])
    return ExpertRecord(**rec), adapter, description_rows(1, header["dim"], seed + i)


# --- the measurements -------------------------------------------------------------------------
def bench_scale(gen: HyperGen, cfg: BenchConfig, workdir: Path, texts: Sequence[str]) -> dict:
    """Per zoo size: an export file served by a bank (open, index, search, generate, memory),
    then a zoo folder that experts are added to. Each zoo is deleted after it is measured."""
    cvae = gen.cvae.config
    header = header_for(cvae.lora_layout, gen.encoder.name, gen.bank.base_model, gen.encoder.dim)
    out = {}
    for n in tqdm(cfg.sizes, desc="scale"):
        out[str(n)] = scale_one(gen, cfg, header, n, workdir / f"zoo-{n}", texts)
        out[str(n)].update(scale_add(cfg, header, n, workdir / f"zoo-{n}" / "folder"))
        shutil.rmtree(workdir / f"zoo-{n}", ignore_errors=True)
    return out


def scale_one(
    gen: HyperGen, cfg: BenchConfig, header: dict, n: int, folder: Path, texts: Sequence[str]
) -> dict:
    folder.mkdir(parents=True)
    path, fig = folder / "zoo.safetensors", {"experts": n}
    start = time.perf_counter()
    write_export(path, n, header)
    fig["write_export_s"], fig["export_bytes"] = time.perf_counter() - start, path.stat().st_size
    gc.collect()
    before, start = rss_bytes(), time.perf_counter()
    bank = ExpertBank.from_export(path)
    fig["open_bank_s"], fig["rows"] = time.perf_counter() - start, len(bank.embeddings)
    fig["rss_open_delta_bytes"] = rss_bytes() - before

    def build(_: int) -> None:
        faiss.IndexFlatIP(bank.dim).add(bank.embeddings)

    fig["index_build_ms"] = stats(timings(build, max(3, cfg.repeats // 5)))
    k, nq = gen.cvae.config.k, 10 * cfg.repeats + 1
    targets = np.random.default_rng(7).integers(0, n, nq)
    queries = near_rows(bank.expert_embeddings.numpy()[targets], 1, QUERY_SPREAD, seed=7)
    fig["search_mode"] = "two-stage" if n > bank.approximate_above else "exact"
    fig["search_ms"] = stats(timings(lambda i: bank.search(queries[i : i + 1], k), nq - 1))
    fig["search_exact_ms"] = stats(
        timings(lambda i: bank.search_exact(queries[i : i + 1], k), nq - 1)
    )
    found, exact = bank.search(queries, k)[0], bank.search_exact(queries, k)[0]
    fig["search_recall"] = float(
        np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact, strict=True)])
    )
    scaled = HyperGen(gen.cvae, bank, gen.encoder)
    fig["generate_ms"] = stats(
        timings(lambda i: scaled.generate(texts[i % len(texts)]), cfg.repeats)
    )
    fig["rss_bytes"] = rss_bytes()
    fig["rss_generate_delta_bytes"] = fig["rss_bytes"] - before
    fig["resident_index_bytes"] = int(bank.embeddings.nbytes * 2 + bank.expert_embeddings.nbytes)
    fig["weights_in_memory"] = bank._weights is not None
    fig["weights_fp32_bytes"] = 4 * n * bank.layout.num_params  # what reading them all would hold
    return fig


def scale_add(cfg: BenchConfig, header: dict, n: int, root: Path) -> dict:
    """Build an ``n``-expert zoo folder, then time ``ExpertZoo.add`` of single experts."""
    start = time.perf_counter()
    write_zoo_folder(root, n, header)
    built = time.perf_counter() - start
    zoo = ExpertZoo(root)
    adds = timings(lambda i: zoo.add(*new_expert(i, header)), cfg.adds, warmup=0)
    if len(zoo) != n + cfg.adds:
        raise RuntimeError(f"zoo holds {len(zoo)} experts after {cfg.adds} adds to {n}")
    return {"build_folder_s": built, "add_ms": stats(adds)}
