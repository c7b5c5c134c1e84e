"""The methods of the quality benchmark, each a function ``(harness, task, eval examples) ->
{"score", "metric", "n", ...}`` over one shared :class:`Harness` (one base model, the zoo, the
generator, budgets and seeds). See :mod:`training.evaluation.evaluate` for what each method is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from expert_zoo.scoring import score_examples
from expert_zoo.store import expert_id_for
from expert_zoo.tasks import Example, Task
from expert_zoo.train import ExpertTrainConfig
from hypergen.bank import ExpertBank
from hypergen.base_model import BaseModel
from hypergen.encoder import TaskEncoder
from hypergen.generator import HyperGen
from hypergen.prompting import told_the_task
from hypergen.router import NeighbourRouter, record_gain
from training.evaluation import report
from training.evaluation.baselines import (
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
    "base+user-description": "base model, a user-written description prepended (examples dealt among them)",
    "in-context": "base model, the description and 3 training examples before each input",
    "nearest": "top-1 zoo expert retrieved by the description embedding",
    "topk-merge": "top-k zoo experts merged in ΔW space, weights softmax(sim / tau), exact rank-k·r LoRA",
    "router": "the retrieved experts mixed with a learned router's weights (--router; "
    "hypergen/router.py), exact rank-k·r LoRA",
    "router-other": "control: the router given another held-out task's description",
    "multitask": "one LoRA trained with the zoo's recipe (no early stopping) on the union of the "
    "zoo tasks' train data",
    "hypergen": "the generator's adapter from the description (prior mean, temperature 0), bare inputs",
    "hypergen+description": "hypergen's adapter, and the description prepended to each input",
    "hypergen-user": "the generator's adapter from a user-written description (examples dealt among them), bare inputs",
    "hypergen-user+description": "hypergen-user, each user description also prepended to the inputs",
    "hypergen-random": "control: the generator given a random string as long as the description",
    "hypergen-other": "control: the generator given another held-out task's description",
    report.BEST_OF_N: "best of n generator samples (temperature 1), chosen on 5 training examples",
    "oracle": "expert trained with the zoo's recipe on the task's own train split (upper bound)",
}
METHODS = tuple(METHOD_NOTES)
OPTIONAL = ("base+user-description", "hypergen-user+description", "router", "router-other")
"""Run only when asked for (--methods): the benchmark's
like-for-like comparisons are covered without them (hypergen-user against base, hypergen+description
against base+description)."""
DEFAULT_METHODS = tuple(m for m in METHODS if m not in OPTIONAL)


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
    train_dtype: str | None = None
    """The base model's precision while the multitask and oracle adapters train (None: the
    zoo recipe's ``base_dtype``)."""
    user_descriptions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Held-out task id -> descriptions written as users would type them (scoring only)."""
    other_description: dict[str, str] = field(default_factory=dict)
    """Held-out task id -> the description of another task (the hypergen-other control)."""
    generation: bool = True
    """Also score the greedy answers on multiple-choice tasks (:func:`generation_scores`)."""
    shots: int = 3
    select_examples: int = 5
    router: NeighbourRouter | None = None
    """The learned router of the ``router`` method (``--router``)."""
    router_sha256: str | None = None
    _multitask: tuple | None = None
    """The multitask adapter and its training record, trained (or read back) once per run."""

    def recipe(self) -> ExpertTrainConfig:
        """The zoo's recipe, in :attr:`train_dtype` where one is given (the trained baselines')."""
        config = zoo_recipe(self.records)
        return config if self.train_dtype is None else replace(config, base_dtype=self.train_dtype)

    def score(self, model, examples: list[Example], greedy: bool = True) -> dict:
        """:func:`score_examples`, and on multiple-choice tasks the greedy answers' scores when
        the run asks for them and ``greedy`` (controls and the nearest expert skip them)."""
        return score_examples(
            model, self.base.tokenizer, examples, greedy=greedy and self.generation
        )

    def users(self, task: Task) -> tuple[str, ...]:
        if not self.user_descriptions.get(task.task_id):
            raise BaselineError(f"task {task.task_id} has no user-written descriptions")
        return self.user_descriptions[task.task_id]

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
def _over_descriptions(
    h: Harness, task: Task, variant: Callable[[int, str], tuple], greedy: bool = True
) -> dict:
    """Score ``variant(i, description) -> (model, examples, info)`` for every description."""
    runs = []
    for i, text in enumerate(h.descriptions(task)):
        model, examples, info = variant(i, text)
        runs.append({**h.score(model, examples, greedy), **info})
    keys = ("score", "metric", "n", "answer_loss", "choice_loss", "correct")
    keys += ("gen_accuracy", "in_format", "gen_correct")
    out = {k: runs[0][k] for k in keys if k in runs[0]}
    out["runs"] = runs
    if len(runs) > 1:
        out["by_description"] = [r["score"] for r in runs]
        out["spread"] = report.spread(out["by_description"])
    return out


MEANED = ("score", "answer_loss", "choice_loss", "gen_accuracy", "in_format")


def _mean_over(
    h: Harness, texts, variant: Callable[[int, str], tuple], greedy: bool = True
) -> dict:
    """Score ``variant(i, text) -> (model, examples, info)`` for each text; the result is the
    mean over the texts (per example too, for the paired intervals)."""
    runs = []
    for i, text in enumerate(texts):
        model, examples, info = variant(i, text)
        runs.append({**h.score(model, examples, greedy), **info, "description": text})
    out = {k: float(np.mean([r[k] for r in runs])) for k in MEANED if k in runs[0]}
    out.update(metric=runs[0]["metric"], n=runs[0]["n"], runs=runs)
    out["correct"] = np.mean([r["correct"] for r in runs], axis=0).tolist()
    if "gen_correct" in runs[0]:
        out["gen_correct"] = np.mean([r["gen_correct"] for r in runs], axis=0).tolist()
    out["by_description"] = [r["score"] for r in runs]
    out["spread"] = report.spread(out["by_description"])
    return out


def _dealt(
    h: Harness, texts, examples: list[Example], variant: Callable, greedy: bool = True
) -> dict:
    """The eval examples dealt round-robin to ``texts`` (example ``j`` to text ``j mod len``), each
    share scored with ``variant(i, text, share) -> (model, examples, info)``: every user
    description is tried at the cost of one scoring per task, and each example keeps one
    score, paired with the same example under every other method. ``by_description`` holds
    each text's score on its share (about ``n / len(texts)`` examples, so noisier)."""
    texts = list(texts)
    shares = [list(range(i, len(examples), len(texts))) for i in range(len(texts))]
    runs, per_example = [], [dict() for _ in examples]
    for i, text in enumerate(texts):
        if not shares[i]:
            continue
        model, shown, info = variant(i, text, [examples[j] for j in shares[i]])
        run = {**h.score(model, shown, greedy), **info, "description": text, "examples": shares[i]}
        runs.append(run)
        for pos, j in enumerate(shares[i]):
            per_example[j] = {k: run[k][pos] for k in ("correct", "gen_correct") if k in run}
    n = len(examples)
    weights = [len(r["examples"]) / n for r in runs]
    out = {
        k: float(sum(w * r[k] for w, r in zip(weights, runs, strict=True)))
        for k in MEANED
        if k in runs[0]
    }
    out.update(metric=runs[0]["metric"], n=n, runs=runs)
    for k in ("correct", "gen_correct"):
        if k in runs[0]:
            out[k] = [e[k] for e in per_example]
    out["score"] = float(np.mean(out["correct"]))
    out["by_description"] = [r["score"] for r in runs]
    out["spread"] = report.spread(out["by_description"])
    return out


def run_base(h: Harness, task: Task, examples: list[Example]) -> dict:
    return h.score(h.slot.use(None), examples)


def with_description(examples: list[Example], description: str) -> list[Example]:
    """The examples with ``description`` and a blank line before each input."""
    return [replace(e, input=told_the_task(description, e.input)) for e in examples]


def run_base_description(h: Harness, task: Task, examples: list[Example]) -> dict:
    def variant(i, text):
        return h.slot.use(None), with_description(examples, text), {}

    return _over_descriptions(h, task, variant)


def run_base_user_description(h: Harness, task: Task, examples: list[Example]) -> dict:
    def variant(i, text, share):
        return h.slot.use(None), with_description(share, text), {}

    return _dealt(h, h.users(task), examples, variant)


def in_context_prompt(description: str, shots: list[Example], text: str) -> str:
    """The description, then each shot as an input and its answer, then the input."""
    blocks = [description, *(f"Input: {s.input}\nAnswer: {s.output}" for s in shots)]
    return "\n\n".join([*blocks, f"Input: {text}\nAnswer:"])


def run_in_context(h: Harness, task: Task, examples: list[Example]) -> dict:
    pool = list(task.train)
    if len(pool) < h.shots:
        raise BaselineError(
            f"task {task.task_id} has {len(pool)} training examples, {h.shots} needed"
        )
    shots = random.Random(f"{h.seed}:shots:{task.task_id}").sample(pool, h.shots)
    prompted = [
        replace(e, input=in_context_prompt(task.description, shots, e.input)) for e in examples
    ]
    return {**h.score(h.slot.use(None), prompted), "shots": [s.input for s in shots]}


def run_nearest(h: Harness, task: Task, examples: list[Example]) -> dict:
    def variant(i, text):
        idx, sims = h.bank.search(h.encoder.encode([text], truncate=True), 1)
        info = {"expert": h.bank.expert_ids[idx[0, 0]], "similarity": float(sims[0, 0])}
        return h.slot.use(expert_adapter(h.bank, int(idx[0, 0]))), examples, info

    return _over_descriptions(h, task, variant, greedy=False)


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


def run_router(h: Harness, task: Task, examples: list[Example], text: str | None = None) -> dict:
    """The top-k neighbours of the description (or ``text``) mixed with the router's weights."""
    if h.router is None:
        raise BaselineError("the router methods need a router (pass --router DIR)")
    r = h.router
    query = h.encoder.encode([task.description if text is None else text], truncate=True)
    idx, sims = h.bank.search(query, r.k)
    records = {x["expert_id"]: x for x in h.records}
    ids = [h.bank.expert_ids[int(i)] for i in idx[0]]
    with torch.no_grad():
        w = r(
            torch.from_numpy(np.asarray(query, dtype=np.float32)),
            h.bank.expert_embeddings[torch.as_tensor(idx[0]).long()][None],
            torch.from_numpy(np.asarray(sims, dtype=np.float32)),
            torch.tensor([[record_gain(records.get(e, {})) for e in ids]]),
        )[0]
    adapter = merge_topk([expert_adapter(h.bank, int(i)) for i in idx[0]], w.tolist())
    result = h.score(h.slot.use(adapter), examples)
    return {**result, "experts": ids, "similarities": sims[0].tolist(), "weights": w.tolist()}


def run_router_other(h: Harness, task: Task, examples: list[Example]) -> dict:
    if task.task_id not in h.other_description:
        raise BaselineError(f"no other held-out task's description for {task.task_id}")
    return run_router(h, task, examples, h.other_description[task.task_id])


def multitask_recipe(recipe: ExpertTrainConfig, n: int, cap: int | None) -> ExpertTrainConfig:
    """The multitask LoRA's recipe: the zoo's, for the zoo's budget (``n`` experts × their
    steps and seconds, ``steps`` capped by ``cap``), without early stopping. The zoo's
    validation split would take the union's last examples, all of one task, and stop the run
    by that task alone (with zoo v2's recipe: after 48 of 480 steps, keeping step 16)."""
    steps = recipe.steps * n if cap is None else min(recipe.steps * n, cap)
    seconds = None if recipe.max_seconds is None else recipe.max_seconds * n
    return replace(recipe, steps=steps, max_seconds=seconds, val_examples=0)


def trained_config(h: Harness, method: str) -> ExpertTrainConfig | None:
    """The recipe ``method``'s adapter trains with in this run (None: it trains nothing)."""
    if method == "multitask":
        return multitask_recipe(h.recipe(), len(h.records), h.multitask_steps)
    if method == "oracle":
        config = h.recipe()
        return config if h.oracle_steps is None else replace(config, steps=h.oracle_steps)
    return None


def trained_with(h: Harness, method: str, result: dict) -> bool:
    """Whether a stored result of ``method`` came from an adapter trained with this run's recipe
    (always true for the methods that train nothing). The score cache is keyed by the zoo's
    expert ids, not by their recipe or by the code that derives the baselines' recipe from it,
    so a result trained otherwise (e.g. the 16-step multitask runs before
    :func:`multitask_recipe` dropped early stopping) must not be reused. The training record
    keeps the recipe with ``eval_examples=1`` (the harness scores the adapter itself); fields it
    lacks were added later and are read at their defaults."""
    want = trained_config(h, method)
    if want is None:
        return True
    got = (result.get("training") or {}).get("recipe")
    if not isinstance(got, dict):
        return False
    try:
        got = ExpertTrainConfig(**{**got, "eval_examples": 1})
    except (TypeError, ValueError):  # a field this code no longer has
        return False
    return got.record() == replace(want, eval_examples=1).record()


def run_multitask(h: Harness, task: Task, examples: list[Example]) -> dict:
    if h._multitask is None:
        n = len(h.records)
        config = trained_config(h, "multitask")
        ids = sorted(r["task_id"] for r in h.records)
        extra = {"zoo_task_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
        logger.info("multitask baseline: %d zoo tasks, %d steps", n, config.steps)
        h._multitask = h.cache.get(
            "multitask", lambda: union_task(load_zoo_tasks(ids)), config, extra
        )
    adapter, record = h._multitask
    return {**h.score(h.slot.use(adapter), examples), "training": record}


def run_hypergen(h: Harness, task: Task, examples: list[Example]) -> dict:
    return _over_descriptions(h, task, _generated(h, h.descriptions(task), False)(examples))


def _generated(h: Harness, texts, with_text: bool) -> Callable[[int, str], tuple]:
    """A variant scoring the generator's adapter for each text (the text also prepended to the
    inputs when ``with_text``)."""
    made = [m[0] for m in h.require_generator().generate_batch(list(texts))]

    def variant(examples):
        def one(i, text):
            info = {"neighbors": [n[0] for n in made[i].neighbors]}
            shown = with_description(examples, text) if with_text else examples
            return h.slot.use(made[i].adapter), shown, info

        return one

    return variant


def run_hypergen_description(h: Harness, task: Task, examples: list[Example]) -> dict:
    return _over_descriptions(h, task, _generated(h, h.descriptions(task), True)(examples))


def run_hypergen_user(h: Harness, task: Task, examples: list[Example]) -> dict:
    texts = h.users(task)
    return _dealt(h, texts, examples, _dealt_generated(h, texts, False))


def run_hypergen_user_description(h: Harness, task: Task, examples: list[Example]) -> dict:
    texts = h.users(task)
    return _dealt(h, texts, examples, _dealt_generated(h, texts, True))


def _dealt_generated(h: Harness, texts, with_text: bool) -> Callable:
    """:func:`_generated` for :func:`_dealt`: the examples come with each call."""
    made = _generated(h, texts, with_text)
    return lambda i, text, share: made(share)(i, text)


def random_text(length: int, seed: str) -> str:
    """Lowercase letters and spaces, ``length`` characters, seeded (the random-string control)."""
    rng = random.Random(seed)
    return (
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz     ") for _ in range(length)).strip() or "x"
    )


def run_hypergen_random(h: Harness, task: Task, examples: list[Example]) -> dict:
    text = random_text(len(task.description), f"{h.seed}:random:{task.task_id}")
    return _mean_over(h, [text], _generated(h, [text], False)(examples), greedy=False)


def run_hypergen_other(h: Harness, task: Task, examples: list[Example]) -> dict:
    text = h.other_description.get(task.task_id)
    if text is None:
        raise BaselineError(f"no other task's description was assigned to {task.task_id}")
    return _mean_over(h, [text], _generated(h, [text], False)(examples), greedy=False)


def run_best_of_n(h: Harness, task: Task, examples: list[Example]) -> dict:
    made = h.require_generator().sample(task.description, h.best_of_n, temperature=1.0, seed=h.seed)
    pool = list(task.train)
    if len(pool) < h.select_examples:
        raise BaselineError(f"task {task.task_id} has too few training examples to select on")
    chosen = random.Random(f"{h.seed}:select:{task.task_id}").sample(pool, h.select_examples)
    picks = [score_examples(h.slot.use(g.adapter), h.base.tokenizer, chosen) for g in made]
    keys = [(p["score"], -p.get("choice_loss", p["answer_loss"])) for p in picks]
    best = max(range(len(made)), key=lambda i: keys[i])
    return {
        **h.score(h.slot.use(made[best].adapter), examples, greedy=False),
        "selection_scores": [p["score"] for p in picks],
        "best_sample": best,
        "selected_on": f"{h.select_examples} training examples (never the scored ones)",
    }


def run_oracle(h: Harness, task: Task, examples: list[Example]) -> dict:
    config = trained_config(h, "oracle")
    pairs = json.dumps([(e.input, e.output) for e in task.train])
    extra = {"task_id": task.task_id, "train_sha256": hashlib.sha256(pairs.encode()).hexdigest()}
    name = f"oracle/{expert_id_for(task.task_id)}"
    adapter, record = h.cache.get(name, task, config, extra)
    return {**h.score(h.slot.use(adapter), examples), "training": record}


RUNNERS: dict[str, Callable[[Harness, Task, list[Example]], dict]] = {
    "base": run_base,
    "base+description": run_base_description,
    "base+user-description": run_base_user_description,
    "in-context": run_in_context,
    "nearest": run_nearest,
    "topk-merge": run_topk_merge,
    "router": run_router,
    "router-other": run_router_other,
    "multitask": run_multitask,
    "hypergen": run_hypergen,
    "hypergen+description": run_hypergen_description,
    "hypergen-user": run_hypergen_user,
    "hypergen-user+description": run_hypergen_user_description,
    "hypergen-random": run_hypergen_random,
    "hypergen-other": run_hypergen_other,
    report.BEST_OF_N: run_best_of_n,
    "oracle": run_oracle,
}
