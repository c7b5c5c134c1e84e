"""The adapters the benchmark compares hypergen against, and the one base model they share.

- :class:`AdapterSlot`: one loaded base model; adapters are attached, swapped in place
  (:func:`hypergen.apply.swap_adapter`) or removed again (``unload``), never merged, so the base
  weights stay bit-for-bit the same across methods and the base is never reloaded.
- :func:`expert_adapter` (``nearest``) and :func:`merge_topk` (``topk-merge``): zoo experts as they
  are, and the similarity-weighted merge of the top-k in ΔW space written as an exact LoRA.
- :class:`ExpertCache`: ``multitask`` and ``oracle`` adapters trained with the zoo's recipe
  (:func:`expert_zoo.train.train_expert`), cached under the results folder so reruns reuse them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from expert_zoo.tasks import Task, TaskError
from expert_zoo.train import ExpertTrainConfig, base_in_dtype, train_expert
from hypergen._fs import path_lock
from hypergen.adapter_io import LoraAdapter
from hypergen.apply import apply_adapter, is_merged, swap_adapter
from hypergen.bank import ExpertBank
from hypergen.base_model import BaseModel
from hypergen.errors import HypergenError
from hypergen.layout import LoraLayout
from hypergen.zoo_format import zoo_records as read_zoo_records

logger = logging.getLogger(__name__)


class BaselineError(HypergenError, ValueError):
    """A baseline cannot be built (unknown task source, no recipe, bad merge weights, ...)."""


class AdapterSlot:
    """The base model of a run with at most one adapter attached (unmerged).

    :meth:`use` swaps in place when the new adapter has the same rank, alpha and modules as the
    attached one, and otherwise unloads the LoRA layers and attaches it afresh; the base weights
    are never touched or reloaded.
    """

    def __init__(self, base: BaseModel):
        self.base = base
        self._peft = None
        self._key: tuple | None = None

    def use(self, adapter: LoraAdapter | None):
        """The model to score: the plain base (``None``) or the base carrying ``adapter``."""
        if adapter is None:
            return self.release().eval()
        key = (adapter.layout.rank, adapter.layout.alpha, adapter.layout.modules)
        if self._peft is not None and key == self._key:
            swap_adapter(self._peft, adapter)
        else:
            self.release()
            self._peft, self._key = apply_adapter(self.base.model, adapter), key
        return self._peft.eval()

    def release(self):
        """Remove any attached adapter; returns the plain base model (as it was loaded)."""
        if self._peft is not None:
            if is_merged(self._peft):
                self._peft.unmerge_adapter()
            self._peft.unload()  # base.model is restored in place
            self._peft, self._key = None, None
        return self.base.model


# --- zoo experts and their merge --------------------------------------------------------------
def expert_adapter(bank: ExpertBank, index: int) -> LoraAdapter:
    """Zoo expert ``index`` of ``bank`` as an adapter (its canonical weights)."""
    weights = {k: v[index].clone() for k, v in bank.weights.items()}
    meta = {"expert_id": bank.expert_ids[index]}
    return LoraAdapter(bank.layout, weights, bank.base_model, meta)


def similarity_weights(sims: np.ndarray, tau: float) -> np.ndarray:
    """``softmax(sims / tau)``: the weights the generator gives its ``k`` neighbours."""
    if tau <= 0:
        raise BaselineError(f"tau must be positive, got {tau}")
    z = np.asarray(sims, dtype=np.float64) / tau
    w = np.exp(z - z.max())
    return w / w.sum()


def merge_topk(adapters: Sequence[LoraAdapter], weights: Sequence[float]) -> LoraAdapter:
    """The weighted sum of the adapters' updates, written exactly as one LoRA of rank ``k·r``.

    ``ΔW = Σ_j w_j (α/r) B_j A_j = (α'/r') B A`` with ``B = [√w_j B_j]`` ``(out, k·r)``,
    ``A = [√w_j A_j]`` ``(k·r, in)``, rank ``r' = k·r`` and ``α' = k·α`` (so ``α'/r' = α/r``).

    Args:
        adapters: ``k`` adapters of one layout.
        weights: ``k`` non-negative weights (e.g. :func:`similarity_weights`).
    """
    if not adapters or len(adapters) != len(weights):
        raise BaselineError(f"need k >= 1 adapters and as many weights: {len(adapters)}, {weights}")
    if any(w < 0 for w in weights):
        raise BaselineError(f"merge weights must be non-negative, got {list(weights)}")
    layout = adapters[0].layout
    for a in adapters[1:]:
        layout.check_matches(a.layout, what="merged expert")
    roots = [float(w) ** 0.5 for w in weights]
    pairs = list(zip(roots, adapters, strict=True))
    merged = {}
    for m in layout.modules:
        merged[f"{m}.A"] = torch.cat([s * a.weights[f"{m}.A"] for s, a in pairs], dim=1)
        merged[f"{m}.B"] = torch.cat([s * a.weights[f"{m}.B"] for s, a in pairs], dim=2)
    k = len(adapters)
    wide = LoraLayout.from_dict(
        {**layout.to_dict(), "rank": k * layout.rank, "alpha": k * layout.alpha}
    )
    meta = {"merged": [a.metadata.get("expert_id", "") for a in adapters], "weights": list(weights)}
    return LoraAdapter(wide, merged, adapters[0].base_model, meta)


# --- the zoo's records, recipe and tasks ------------------------------------------------------
def zoo_records(path: str | Path) -> list[dict]:
    """The expert records of a zoo folder or export file (no weights are read)."""
    try:
        return read_zoo_records(path)
    except HypergenError as exc:  # a damaged manifest (ZooError) or export file (BankError)
        raise BaselineError(f"cannot read the expert records of zoo {path}: {exc}") from exc


def zoo_recipe(records: Sequence[dict]) -> ExpertTrainConfig:
    """The training recipe the zoo's experts recorded (the most common one when they differ)."""
    known = {f.name for f in fields(ExpertTrainConfig)}
    seen = [
        json.dumps({k: v for k, v in r["metrics"]["recipe"].items() if k in known}, sort_keys=True)
        for r in records
        if isinstance(r.get("metrics"), dict) and "recipe" in r["metrics"]
    ]
    if not seen:
        raise BaselineError(
            "no zoo expert records its training recipe (metrics.recipe): cannot train the "
            "multitask and oracle baselines with the zoo's recipe"
        )
    counts = Counter(seen)
    if len(counts) > 1:
        logger.warning("zoo experts used %d recipes; using the most common one", len(counts))
    recipe = json.loads(counts.most_common(1)[0][0])
    recipe["target_modules"] = tuple(recipe.get("target_modules", ()))
    return ExpertTrainConfig(**recipe)


def load_zoo_tasks(task_ids: Sequence[str]) -> list[Task]:
    """Re-load the zoo's tasks (as the zoo build loaded them) by their ids.

    See :func:`expert_zoo.tasks.by_id.load_tasks`; a task that cannot be re-loaded (a user's
    task) raises :class:`BaselineError`.
    """
    from expert_zoo.tasks.by_id import load_tasks

    try:
        return load_tasks(task_ids)
    except TaskError as exc:
        raise BaselineError(
            f"{exc} (the multitask baseline and the end-to-end stage need them)"
        ) from exc


def union_task(tasks: Sequence[Task]) -> Task:
    """One task holding every train example of ``tasks`` (eval: the first eval example of each)."""
    if not tasks:
        raise BaselineError("no zoo tasks to train the multitask baseline on")
    train = tuple(e for t in tasks for e in t.train)
    eval_ = tuple(t.eval[0] for t in tasks if t.eval)
    return Task("multitask:zoo", "multitask", ("All zoo tasks.",), train, eval_)


# --- trained baselines, cached ----------------------------------------------------------------
class ExpertCache:
    """Adapters trained with the zoo's recipe, kept in ``<root>/<name>/`` with their metrics.

    A cached adapter is reused when its key (task, recipe, base model, and whatever the caller
    adds) matches; otherwise it is trained again and replaces the old one.
    """

    def __init__(self, root: Path, base: BaseModel, slot: AdapterSlot, progress: bool = False):
        self.root, self.base, self.slot, self.progress = Path(root), base, slot, progress

    def get(
        self, name: str, task: Task | Callable[[], Task], config: ExpertTrainConfig, extra: dict
    ) -> tuple[LoraAdapter, dict]:
        """The adapter for ``name`` and ``{"cached", "seconds", ...train metrics}``."""
        folder = self.root / name
        key = {"recipe": config.record(), "base_model": self.base.name, **extra}
        key = json.loads(json.dumps(key))  # tuples -> lists, as read back from disk
        cached = self._read(folder, key)
        if cached is not None:
            logger.info("reusing the cached %s adapter in %s", name, folder)
            return cached
        with path_lock(folder):  # two runs sharing one cache train each adapter once
            cached = self._read(folder, key)
            if cached is not None:
                logger.info("reusing the %s adapter another run trained in %s", name, folder)
                return cached
            return self._train(folder, key, task, config)

    def _train(self, folder: Path, key: dict, task, config: ExpertTrainConfig):
        task = task() if callable(task) else task
        self.slot.release()
        # the harness scores the adapter itself: keep train_expert's own before/after scoring tiny
        with base_in_dtype(self.base, config.base_dtype):  # the recipe's, whatever scores them
            adapter, metrics = train_expert(
                self.base, task, replace(config, eval_examples=1), self.progress
            )
        metrics = {"cached": False, **metrics}
        (folder / "key.json").unlink(missing_ok=True)  # the key is written last: after the adapter
        adapter.save_pretrained(folder / "adapter", overwrite=True)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (folder / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
        return adapter, metrics

    @staticmethod
    def _read(folder: Path, key: dict) -> tuple[LoraAdapter, dict] | None:
        try:
            if json.loads((folder / "key.json").read_text()) != key:
                return None
            metrics = json.loads((folder / "metrics.json").read_text())
            return LoraAdapter.from_pretrained(folder / "adapter"), {**metrics, "cached": True}
        except (OSError, json.JSONDecodeError, HypergenError):
            return None
