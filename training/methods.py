"""The methods of the quality benchmark, each a function ``(harness, task, eval examples) ->
{"score", "metric", "n", ...}`` over one shared :class:`Harness` (one base model, the zoo, the
generator, budgets and seeds). See :mod:`training.evaluate` for what each method is.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from expert_zoo.scoring import score_examples
from expert_zoo.store import expert_id_for
from expert_zoo.tasks import Example, Task
from hypergen.bank import ExpertBank
from hypergen.base_model import BaseModel
from hypergen.encoder import TaskEncoder
from hypergen.generator import HyperGen
from training import report
from training.baselines import (
    AdapterSlot,
    BaselineError,
    ExpertCache,
    expert_adapter,
    load_zoo_tasks,
    merge_topk,
    similarity_weights,
    union_task,
    zoo_recipe,
)

logger = logging.getLogger(__name__)

METHOD_NOTES = {
    "base": "base model, zero-shot, inputs as they come",
    "base+description": "base model, the task description prepended to each input (user turn)",
    "nearest": "top-1 zoo expert retrieved by the description embedding",
    "topk-merge": "top-k zoo experts merged in ΔW space, weights softmax(sim / tau), exact rank-k·r LoRA",
    "multitask": "one LoRA trained with the zoo's recipe on the union of the zoo tasks' train data",
    "hypergen": "the generator's adapter from the description (prior mean, temperature 0)",
    report.BEST_OF_N: "best of n generator samples (temperature 1), chosen on the eval examples",
    "oracle": "expert trained with the zoo's recipe on the task's own train split (upper bound)",
}
METHODS = tuple(METHOD_NOTES)


class MethodError(RuntimeError):
    """A method could not produce a score for a task; the run stops rather than drop it."""


@dataclass
class Harness:
    """What every method needs: one base model, the zoo, the generator, budgets and seeds."""

    base: BaseModel
    slot: AdapterSlot
    bank: ExpertBank
    encoder: TaskEncoder
    generator: HyperGen | None
    cache: ExpertCache
    records: list[dict]
    """The zoo's expert records (task ids and the training recipe)."""
    k: int
    tau: float
    seed: int
    paraphrases: int
    best_of_n: int
    oracle_steps: int | None
    multitask_steps: int | None
    _multitask: tuple | None = None
    """The multitask adapter and its training record, trained (or read back) once per run."""

    def score(self, model, examples: list[Example]) -> dict:
        return score_examples(model, self.base.tokenizer, examples)

    def descriptions(self, task: Task) -> tuple[str, ...]:
        """The original description and ``paraphrases`` paraphrases."""
        wanted = 1 + self.paraphrases
        if len(task.descriptions) < wanted:
            raise BaselineError(
                f"task {task.task_id} has {len(task.descriptions)} descriptions, "
                f"{wanted} needed: lower --paraphrases"
            )
        return task.descriptions[:wanted]

    def require_generator(self) -> HyperGen:
        if self.generator is None:
            raise BaselineError("no generator loaded (pass --generator)")
        return self.generator


# --- methods: (harness, task, eval examples) -> {"score", "metric", "n", ...} --------------------
def _over_descriptions(h: Harness, task: Task, variant: Callable[[int, str], tuple]) -> dict:
    """Score ``variant(i, description) -> (model, examples, info)`` for every description."""
    runs = []
    for i, text in enumerate(h.descriptions(task)):
        model, examples, info = variant(i, text)
        runs.append({**h.score(model, examples), **info})
    out = {
        k: runs[0][k]
        for k in ("score", "metric", "n", "answer_loss", "choice_loss")
        if k in runs[0]
    }
    out["runs"] = runs
    if len(runs) > 1:
        out["by_description"] = [r["score"] for r in runs]
        out["spread"] = report.spread(out["by_description"])
    return out


def run_base(h: Harness, task: Task, examples: list[Example]) -> dict:
    return h.score(h.slot.use(None), examples)


def with_description(examples: list[Example], description: str) -> list[Example]:
    """The examples with ``description`` and a blank line before each input."""
    return [replace(e, input=f"{description}\n\n{e.input}") for e in examples]


def run_base_description(h: Harness, task: Task, examples: list[Example]) -> dict:
    def variant(i, text):
        return h.slot.use(None), with_description(examples, text), {}

    return _over_descriptions(h, task, variant)


def run_nearest(h: Harness, task: Task, examples: list[Example]) -> dict:
    def variant(i, text):
        idx, sims = h.bank.search(h.encoder.encode([text], truncate=True), 1)
        info = {"expert": h.bank.expert_ids[idx[0, 0]], "similarity": float(sims[0, 0])}
        return h.slot.use(expert_adapter(h.bank, int(idx[0, 0]))), examples, info

    return _over_descriptions(h, task, variant)


def run_topk_merge(h: Harness, task: Task, examples: list[Example]) -> dict:
    idx, sims = h.bank.search(h.encoder.encode([task.description], truncate=True), h.k)
    weights = similarity_weights(sims[0], h.tau)
    adapter = merge_topk([expert_adapter(h.bank, int(i)) for i in idx[0]], weights.tolist())
    result = h.score(h.slot.use(adapter), examples)
    experts = [h.bank.expert_ids[i] for i in idx[0]]
    return {
        **result,
        "experts": experts,
        "similarities": sims[0].tolist(),
        "weights": weights.tolist(),
    }


def run_multitask(h: Harness, task: Task, examples: list[Example]) -> dict:
    if h._multitask is None:
        recipe, n = zoo_recipe(h.records), len(h.records)
        steps = (
            recipe.steps * n
            if h.multitask_steps is None
            else min(recipe.steps * n, h.multitask_steps)
        )
        seconds = None if recipe.max_seconds is None else recipe.max_seconds * n
        config = replace(recipe, steps=steps, max_seconds=seconds)
        ids = sorted(r["task_id"] for r in h.records)
        extra = {"zoo_task_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
        logger.info("multitask baseline: %d zoo tasks, %d steps", n, steps)
        h._multitask = h.cache.get(
            "multitask", lambda: union_task(load_zoo_tasks(ids)), config, extra
        )
    adapter, record = h._multitask
    return {**h.score(h.slot.use(adapter), examples), "training": record}


def run_hypergen(h: Harness, task: Task, examples: list[Example]) -> dict:
    made = h.require_generator().generate(list(h.descriptions(task)))

    def variant(i, text):
        info = {"neighbors": [n[0] for n in made[i].neighbors]}
        return h.slot.use(made[i].adapter), examples, info

    return _over_descriptions(h, task, variant)


def run_best_of_n(h: Harness, task: Task, examples: list[Example]) -> dict:
    made = h.require_generator().generate(
        [task.description], num_samples=h.best_of_n, temperature=1.0, seed=h.seed
    )
    runs = [h.score(h.slot.use(g.adapter), examples) for g in made]
    best = int(np.argmax([r["score"] for r in runs]))
    return {
        **runs[best],
        "sample_scores": [r["score"] for r in runs],
        "best_sample": best,
        "upper_bound": "oracle-selected: the best sample on the eval examples themselves",
    }


def run_oracle(h: Harness, task: Task, examples: list[Example]) -> dict:
    config = zoo_recipe(h.records)
    if h.oracle_steps is not None:
        config = replace(config, steps=h.oracle_steps)
    pairs = json.dumps([(e.input, e.output) for e in task.train])
    extra = {"task_id": task.task_id, "train_sha256": hashlib.sha256(pairs.encode()).hexdigest()}
    name = f"oracle/{expert_id_for(task.task_id)}"
    adapter, record = h.cache.get(name, task, config, extra)
    return {**h.score(h.slot.use(adapter), examples), "training": record}


RUNNERS: dict[str, Callable[[Harness, Task, list[Example]], dict]] = {
    "base": run_base,
    "base+description": run_base_description,
    "nearest": run_nearest,
    "topk-merge": run_topk_merge,
    "multitask": run_multitask,
    "hypergen": run_hypergen,
    report.BEST_OF_N: run_best_of_n,
    "oracle": run_oracle,
}
