"""The end-to-end stage's resumable state on disk (:mod:`training.e2e`).

``<state>/checkpoint/`` (one folder, written beside its target and renamed into place):
``state.json`` (format, the run's settings and their sha256, the record: step, seconds, best
validation, the reference losses; AdamW's hyper-parameters), ``generator/`` (the generator,
float32) and ``optimizer.safetensors`` (AdamW's moments, ``<param index>.<name>``).
``<state>/best/`` holds the best validated generator so far and ``<state>/metrics.jsonl`` one
line per step (validation metrics on the validated steps). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from hypergen._fs import atomic_dir
from hypergen.cvae import LoraCVAE

STATE_FORMAT = 1
"""Version of the ``<state>/checkpoint`` layout; a resume refuses another one."""


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def save_state(state: Path, settings: dict, model: LoraCVAE, opt, record: dict) -> None:
    """``<state>/checkpoint``: ``state.json`` (step, record, settings, the optimiser's
    hyper-parameters), the generator (float32) and ``optimizer.safetensors`` (AdamW moments),
    renamed into place together."""
    packed, groups = _pack_optimizer(opt)
    with atomic_dir(state / "checkpoint", overwrite=True) as tmp:
        model.save_pretrained(tmp / "generator")
        save_file(packed, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
        meta = {
            "format": STATE_FORMAT,
            "settings": settings,
            "settings_sha256": settings_key(settings),
            "record": record,
            "param_groups": groups,
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, default=float))


def load_state(
    state: Path, settings: dict, model: LoraCVAE, opt, truncate: bool = True
) -> dict | None:
    """Load ``<state>/checkpoint`` into ``model`` and ``opt``; ``None`` when there is none.
    A checkpoint of another format or made with other settings raises ``ValueError``. With
    ``truncate`` (the one process that logs) metric lines past the checkpoint are dropped."""
    folder = state / "checkpoint"
    _recover(folder)
    if not (folder / "state.json").is_file():
        return None
    meta = json.loads((folder / "state.json").read_text())
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{folder} has state format {meta.get('format')}, not {STATE_FORMAT}")
    if meta["settings_sha256"] != settings_key(settings):
        changed = sorted(
            k
            for k in {*settings, *meta["settings"]}
            if json.dumps(settings.get(k), default=str)
            != json.dumps(meta["settings"].get(k), default=str)
        )
        raise ValueError(
            f"{state} holds a run started with other settings (differing: {', '.join(changed)}); "
            "resume it with the same ones, or pass another --state folder"
        )
    saved = LoraCVAE.from_pretrained(folder / "generator", model.layout, model.config.embed_dim)
    model.load_state_dict(saved.state_dict())
    opt.load_state_dict(_unpack_optimizer(load_file(str(folder / "optimizer.safetensors")), meta))
    if truncate:
        _truncate(state, meta["record"]["step"])
    return meta["record"]


def _recover(folder: Path) -> None:
    """Put back the previous checkpoint when a save was killed between moving it aside and
    renaming the new one in (:func:`hypergen._fs.atomic_dir` leaves it in
    ``.checkpoint.old-*/x``); otherwise a resume would find no checkpoint and start over."""
    if folder.exists():
        return
    aside = sorted(folder.parent.glob(f".{folder.name}.old-*/x/state.json"))
    if aside:
        os.replace(aside[-1].parent, folder)


def _pack_optimizer(opt) -> tuple[dict[str, Tensor], list[dict]]:
    sd = opt.state_dict()
    packed = {
        f"{i}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
        for i, entry in sd["state"].items()
        for name, v in entry.items()
    }
    return packed, sd["param_groups"]


def _unpack_optimizer(packed: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in packed.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_best(state: Path, model: LoraCVAE, record: dict) -> None:
    model.save_pretrained(state / "best", overwrite=True)
    (state / "best" / "step.json").write_text(json.dumps(record["best"]))


def append_metrics(state: Path, line: dict, reset: bool = False) -> None:
    state.mkdir(parents=True, exist_ok=True)
    with (state / "metrics.jsonl").open("w" if reset else "a") as f:
        f.write(json.dumps(line) + "\n")


def _truncate(state: Path, step: int) -> None:
    """Drop metric lines of steps after the checkpoint (they will be run again)."""
    path = state / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for text in path.read_text().splitlines():
        try:
            if json.loads(text)["step"] <= step:
                kept.append(text)
        except (json.JSONDecodeError, KeyError):
            break
    path.write_text("".join(t + "\n" for t in kept))


def read_metrics(state: Path) -> list[dict]:
    path = state / "metrics.jsonl"
    return [json.loads(t) for t in path.read_text().splitlines()] if path.exists() else []
