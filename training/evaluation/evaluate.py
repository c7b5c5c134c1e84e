"""``hypergen-eval``: the quality benchmark. hypergen against every baseline on held-out tasks.

Every method is scored with :func:`expert_zoo.scoring.score_examples` (multiple-choice
log-likelihood accuracy, or exact match of the greedy answer) on the same eval examples of each
task (drawn with ``--seed``), with one base model loaded once; adapters are swapped in place.
Each method also gets two losses, continuous measures that separate methods a few dozen examples
of accuracy cannot: the *answer loss*, the gold answer's per-token negative log-likelihood, and,
on multiple-choice tasks, the *choice loss*, the cross-entropy of the gold option among the
options' scores (see :func:`expert_zoo.scoring.score_examples`).

Methods (``--methods``, default all, in this order):

  base                       zero-shot, the task's inputs as they come
  base+description           the task description prepended to every input (in the user turn,
                             a blank line between them): what a user would try first
  base+user-description      the same with the user-written descriptions, the eval examples
                             dealt round-robin among them (run only when named in --methods)
  in-context                 the description and 3 training examples (input, answer) before
                             each input: the base model prompted as a user with examples would
  nearest                    the zoo expert nearest to the description embedding (top-1)
  topk-merge                 the top-k zoo experts (the generator's k) merged in ΔW space with
                             weights softmax(similarity / tau) (the generator's tau), as one
                             exact LoRA of rank k·r; no training
  router                     the top-k experts mixed with a learned router's weights
                             (--router DIR, hypergen/router.py), as one exact LoRA of rank
                             k·r (run only when named in --methods)
  router-other               control: the router given another held-out task's description
  multitask                  one LoRA trained with the zoo's recipe on the union of the zoo
                             tasks' train data: the zoo's budget (recipe steps × experts),
                             capped by --multitask-steps, without early stopping
  hypergen                   the generator's adapter from the description (the prior's mean),
                             bare inputs
  hypergen+description       that adapter, with the description also prepended to the inputs
  hypergen-user              the adapter from each user-written description, on bare inputs,
                             the eval examples dealt round-robin among the descriptions (one
                             scoring per task; every example paired): what a new user gets
  hypergen-user+description  the same, each user description also prepended to the inputs
                             (run only when named in --methods)
  hypergen-random            control: the generator given a random string as long as the
                             description (scores like hypergen: the text is not being read)
  hypergen-other             control: the generator given another held-out task's description
  hypergen-best-of-n         --best-of-n samples at temperature 1, the best on 5 training
                             examples of the task (never the scored ones)
  oracle                     an expert trained with the zoo's recipe on the task's own train
                             split (evaluation only, never added to the zoo)

Held-out tasks are re-split so that --eval-examples are scored (the same for every method)
wherever a task has that many plus 40 for training. The user-written descriptions are committed
in training/evaluation/held_out_descriptions.json (three per held-out task) and used only here. Every
method also gets, on multiple-choice tasks, the greedy answer's accuracy and in-format rate
(what a user of the app sees). results.md gives paired differences of hypergen against every
method (and of each method against its like) with 95% intervals from a two-level bootstrap over
tasks and examples. Options of one example are scored with the prompt run once (its key/value
cache reused). Every method's result on a task is kept in <out>/method-cache, keyed by what
it depends on (the hypergen methods also by the generator checkpoint's fingerprint): a run
with another generator scores only the hypergen methods, and runs over disjoint method lists
(one per core) fill one cache that the full run then reads.

multitask and oracle adapters are cached in <out>/cache and reused by reruns with the same
recipe. A method that fails stops the run (exit 1); it is never dropped from the table. Writes
<out>/results.json (every number, the command, seeds, names, timings), results.md and
results.png.

Each finished task is appended to <out>/progress.jsonl as it finishes: a run that is stopped
(Ctrl-C, a crash, a lost machine) continues where it stopped when started again with the same
settings, models, generator and zoo (other --families/--limit/--per-family choices reuse what
they share); --fresh starts over.

Examples::

    hypergen-eval --out results/quality
    hypergen-eval --families bbq_lite_json,logical_deduction --eval-examples 50 --out results/q2
    hypergen-eval --methods base,nearest,hypergen --limit 5 --out results/smoke
    hypergen-eval --per-family 1 --eval-examples 30 --out results/quality   # one task per family
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shlex
import sys
import time
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path

from tqdm.auto import tqdm

from expert_zoo.tasks import Example, Task, is_held_out, iter_bigbench_tasks, synthetic_tasks
from expert_zoo.tasks.debian import iter_debian_tasks
from expert_zoo.tasks.npm import iter_npm_tasks
from expert_zoo.tasks.packaged import iter_packaged_tasks
from hypergen.bank import ExpertBank
from hypergen.base_model import load_base_model
from hypergen.cvae import CVAEConfig
from hypergen.cvae_config import CheckpointError, read_config
from hypergen.encoder import TaskEncoder
from hypergen.errors import HypergenError
from hypergen.generator import DEFAULT_GENERATOR, DEFAULT_ZOO, HyperGen
from hypergen.router import NeighbourRouter
from training.evaluation import options, report
from training.evaluation.baselines import (
    AdapterSlot,
    BaselineError,
    ExpertCache,
    zoo_records,
)
from training.evaluation.cache import SCORING, Progress, ScoreCache, fingerprint
from training.evaluation.methods import (
    METHOD_NOTES,
    RUNNERS,
    Harness,
    MethodError,
    trained_with,
)
from training.evaluation.options import DTYPES, USER_DESCRIPTIONS, parse_methods

logger = logging.getLogger("hypergen.eval")


# --- tasks and examples ----------------------------------------------------------------------
def load_tasks(args: argparse.Namespace) -> list[Task]:
    """The tasks to evaluate: held-out (or all) tasks of ``--source``, filtered and limited;
    held-out tasks are re-split so that ``--eval-examples`` are scored where the task has them
    (:func:`benchmark_split`)."""
    families = set(args.families.split(",")) if args.families else None
    tasks: list[Task] = []
    if args.source in ("bigbench", "all"):
        tasks += iter_bigbench_tasks(split=args.tasks, families=families, limit=args.limit)
    if args.source in ("packages", "all"):
        tasks += iter_packaged_tasks(split=args.tasks, families=families)
        tasks += iter_debian_tasks(split=args.tasks, families=families)
        tasks += iter_npm_tasks(split=args.tasks, families=families)
    if args.source == "synthetic":
        tasks = [t for t in synthetic_tasks() if args.tasks == "all" or is_held_out(t.family)]
        tasks = [t for t in tasks if families is None or t.family in families]
    tasks = tasks[: args.limit]
    if args.per_family is not None:
        seen: dict[str, int] = {}
        kept = []
        for task in tasks:
            seen[task.family] = seen.get(task.family, 0) + 1
            if seen[task.family] <= args.per_family:
                kept.append(task)
        tasks = kept
    if not tasks:
        raise BaselineError(f"no {args.tasks} {args.source} tasks match --families {args.families}")
    if args.tasks == "held_out":
        tasks = [benchmark_split(t, args.eval_examples) for t in tasks]
    return tasks


MIN_TRAIN = 40
"""Training examples a held-out task keeps for the oracle, the in-context shots and best-of-n."""


def benchmark_split(task: Task, n_eval: int) -> Task:
    """``task`` with training examples moved to its eval split until it has ``n_eval`` (keeping
    at least :data:`MIN_TRAIN` for training). Only held-out tasks are re-split: no zoo expert
    was trained on them, so their training split serves only the oracle, the in-context shots
    and best-of-n's selection, and the scored examples never overlap it."""
    need = min(n_eval - len(task.eval), len(task.train) - MIN_TRAIN)
    if need <= 0:
        return task
    return replace(task, train=task.train[:-need], eval=task.eval + task.train[-need:])


def other_descriptions(tasks: list[Task]) -> dict[str, str]:
    """For each task, the description of another task half the list away, of another family
    where there is one (a fixed assignment, for the hypergen-other control)."""
    out, n = {}, len(tasks)
    for i, task in enumerate(tasks):
        others = [tasks[(i + step) % n] for step in range(n // 2 or 1, n + n // 2)]
        others = [o for o in others if o.task_id != task.task_id]
        other_family = [o for o in others if o.family != task.family]
        if other_family or others:
            out[task.task_id] = (other_family or others)[0].description
    return out


def load_user_descriptions(path: Path = USER_DESCRIPTIONS) -> dict[str, tuple[str, ...]]:
    data = json.loads(path.read_text(encoding="utf-8"))["descriptions"]
    return {task_id: tuple(texts) for task_id, texts in data.items()}


def eval_examples(task: Task, n: int, seed: int) -> list[Example]:
    """``n`` eval examples of ``task`` (all when it has fewer), drawn with ``seed``."""
    if not task.eval:
        raise BaselineError(f"task {task.task_id} has no eval examples")
    pool = list(task.eval)
    return pool if len(pool) <= n else random.Random(f"{seed}:{task.task_id}").sample(pool, n)


def check_held_out(tasks: list[Task], bank: ExpertBank, split: str) -> None:
    """Refuse a held-out evaluation whose task families are in the zoo (contamination)."""
    leaked = sorted({t.family for t in tasks} & set(bank.families))
    if split == "held_out" and leaked:
        raise BaselineError(f"held-out families {leaked} have experts in zoo {bank.name}")


# --- the run ---------------------------------------------------------------------------------
def generator_neighbours(folder: Path) -> dict:
    """The ``k`` and ``tau`` of the generator checkpoint in ``folder`` (CVAEConfig's defaults
    where it has no config), read without loading its weights, so that top-k merge is the same
    baseline whether or not a run's methods load the generator."""
    try:
        config = read_config(Path(folder))
    except CheckpointError:
        return {f.name: f.default for f in fields(CVAEConfig) if f.name in ("k", "tau")}
    return {"k": config.k, "tau": config.tau}


def build_harness(args: argparse.Namespace, methods: list[str], tasks: list[Task]) -> Harness:
    """Load the base model once, the zoo, the encoder and (when a method needs it) the generator."""
    zoo = args.zoo if args.zoo is not None else DEFAULT_ZOO
    generator = None
    if any(m.startswith("hypergen") for m in methods):
        generator = HyperGen.from_pretrained(args.generator, zoo, args.encoder, args.base_model)
        bank, encoder, config = generator.bank, generator.encoder, generator.cvae.config
    else:
        bank, encoder = ExpertBank.load(zoo), TaskEncoder(args.encoder)
        config = argparse.Namespace(**generator_neighbours(args.generator or DEFAULT_GENERATOR))
    base = load_base_model(args.base_model)
    base.model.to(device=args.device, dtype=DTYPES[args.dtype]).eval()
    slot = AdapterSlot(base)
    known = set(bank.expert_ids)  # the zoo may grow while we run: keep the experts we loaded
    return Harness(
        base=base,
        slot=slot,
        bank=bank,
        encoder=encoder,
        generator=generator,
        cache=ExpertCache(args.out / "cache", base, slot),
        records=[r for r in zoo_records(zoo) if r["expert_id"] in known],
        k=args.k or config.k,
        tau=args.tau or config.tau,
        seed=args.seed,
        paraphrases=args.paraphrases,
        best_of_n=args.best_of_n,
        oracle_steps=args.oracle_steps,
        multitask_steps=args.multitask_steps,
        train_dtype=args.train_dtype,
        user_descriptions=load_user_descriptions(args.user_descriptions),
        other_description=other_descriptions(tasks),
        generation=not args.no_generation,
        router=None if args.router is None else NeighbourRouter.from_pretrained(args.router),
        router_sha256=None if args.router is None else fingerprint(args.router),
    )


def run_method(h: Harness, method: str, task: Task, examples: list[Example], cache) -> dict:
    """One method's result on one task, from ``cache`` when it holds it (its seconds then are
    the original run's)."""
    key = None
    if cache is not None and (h.generator is not None or not method.startswith("hypergen")):
        key = cache.key(h, method, task, examples)
        hit = cache.get(method, key)
        if hit is not None and trained_with(h, method, hit):
            return {**hit, "cached": True}
        if hit is not None:
            logger.info("cached %s on %s: trained with another recipe, again", method, task.task_id)
    start = time.perf_counter()
    try:
        result = RUNNERS[method](h, task, examples)
    except Exception as exc:
        raise MethodError(f"method {method!r} failed on task {task.task_id}: {exc}") from exc
    result = {**result, "seconds": round(time.perf_counter() - start, 3)}
    if key is not None:
        cache.put(method, key, result)
    return result


def run_task(
    h: Harness, task: Task, methods: list[str], n: int, bar, cache: ScoreCache | None = None
) -> dict:
    """Every method on one task's eval examples; a failing method raises :class:`MethodError`."""
    examples = eval_examples(task, n, h.seed)
    entry = {"task_id": task.task_id, "family": task.family, "n": len(examples)}
    entry["descriptions"] = list(h.descriptions(task))
    entry["scores"], entry["losses"], entry["details"] = {}, {}, {}
    for method in methods:
        bar.set_postfix_str(f"{task.task_id.split(':', 1)[-1][:40]} · {method}")
        result = run_method(h, method, task, examples, cache)
        entry["scores"][method] = float(result["score"])
        entry["losses"][method] = float(result["answer_loss"])
        if "choice_loss" in result:  # multiple-choice tasks
            entry.setdefault("choice_losses", {})[method] = float(result["choice_loss"])
        if "gen_accuracy" in result:
            entry.setdefault("generation", {})[method] = {
                "gen_accuracy": float(result["gen_accuracy"]),
                "in_format": float(result["in_format"]),
            }
        entry["details"][method] = result
        entry["metric"] = result["metric"]
        bar.update()
    return entry


def run_key(args: argparse.Namespace, h: Harness, methods: list[str]) -> dict:
    """What a finished task's numbers depend on (see :class:`Progress`)."""
    settings = ("source", "tasks", "eval_examples", "seed", "paraphrases", "best_of_n")
    settings += ("oracle_steps", "multitask_steps", "device", "no_generation", "dtype")
    key = {name: getattr(args, name) for name in settings}
    if args.train_dtype is not None:  # only when given: the keys of earlier runs still match
        key["train_dtype"] = args.train_dtype
    key.update(methods=methods, k=h.k, tau=h.tau, models=_names(args, h))
    key["scoring"] = SCORING
    key["zoo_experts_sha256"] = hashlib.sha256("\n".join(h.bank.expert_ids).encode()).hexdigest()
    if h.router_sha256 is not None:
        key["router_sha256"] = h.router_sha256
    if h.generator is not None:
        key["generator_sha256"] = fingerprint(Path(args.generator or DEFAULT_GENERATOR))
    return json.loads(json.dumps(key, default=str))


def evaluate(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the benchmark as ``args`` say; returns the results (also written to ``args.out``)."""
    start, methods = time.perf_counter(), parse_methods(args.methods)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    tasks = load_tasks(args)
    h = build_harness(args, methods, tasks)
    check_held_out(tasks, h.bank, args.tasks)
    key = run_key(args, h, methods)
    progress = Progress(args.out, key, fresh=args.fresh)
    skip = (
        "methods",
        "generator_sha256",
        "router_sha256",
        "k",
        "tau",
        "zoo_experts_sha256",
        "train_dtype",
    )
    common = {k: v for k, v in key.items() if k not in skip}
    common["models"] = {
        k: v for k, v in key["models"].items() if k not in ("generator", "generator_parameters")
    }
    cache = ScoreCache(
        args.out / "method-cache",
        common,
        key["zoo_experts_sha256"],
        read=not args.fresh,
        generator_sha256=key.get("generator_sha256"),
    )
    logger.info(
        "%d tasks × %d methods, %d eval examples each", len(tasks), len(methods), args.eval_examples
    )
    entries = []
    with tqdm(total=len(tasks) * len(methods), desc="hypergen-eval", disable=args.quiet) as bar:
        for task in tasks:
            entry = progress.done.get(task.task_id)
            if entry is None:
                entry = run_task(h, task, methods, args.eval_examples, bar, cache)
                progress.add(entry)
            else:
                bar.update(len(methods))
            entries.append(entry)
    timings = {m: sum(e["details"][m]["seconds"] for e in entries) for m in methods}
    results = {
        "command": "hypergen-eval " + shlex.join(argv),
        "argv": argv,
        "started": started,
        "seconds": time.perf_counter() - start,
        "resumed_tasks": sum(e["task_id"] in progress.done for e in entries),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "models": _names(args, h),
        "methods": methods,
        "method_notes": {m: METHOD_NOTES[m] for m in methods},
        "tasks": entries,
        "timings": {m: round(timings[m], 2) for m in methods},
        "training": _training(entries),
    }
    results["config"].update(k=h.k, tau=h.tau, recipe=_recipe(h))
    results["summary"] = report.summarise(entries, methods)
    report.write_outputs(results, args.out)
    return results


def _training(entries: list[dict]) -> dict:
    """The multitask and oracle training records (each task's entry keeps them)."""
    training = {"multitask": None, "oracle": {}}
    for e in entries:
        if "multitask" in e["details"] and training["multitask"] is None:
            training["multitask"] = e["details"]["multitask"].get("training")
        if "oracle" in e["details"]:
            training["oracle"][e["task_id"]] = e["details"]["oracle"].get("training")
    return training


def _names(args: argparse.Namespace, h: Harness) -> dict:
    return {
        "base_model": h.base.name,
        "base_model_source": str(args.base_model or "default"),
        "zoo": h.bank.name,
        "zoo_path": str(args.zoo if args.zoo is not None else DEFAULT_ZOO),
        "zoo_experts": len(h.bank),
        "generator": None if h.generator is None else str(args.generator or "default"),
        "generator_parameters": None if h.generator is None else h.generator.cvae.num_parameters(),
        "encoder": h.encoder.name,
    }


def _recipe(h: Harness) -> dict | None:
    try:
        return json.loads(json.dumps(h.recipe().record()))
    except BaselineError:
        return None


def build_parser() -> argparse.ArgumentParser:
    """The ``hypergen-eval`` parser, with this module's method list as its epilog."""
    return options.build_parser(__doc__.split("\n", 2)[2])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    options.check(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        results = evaluate(args, argv)
    except (MethodError, HypergenError, ValueError) as exc:
        logger.error("hypergen-eval failed; no results written", exc_info=exc)
        print(f"hypergen-eval: error: {exc}", file=sys.stderr)
        return 1
    means = results["summary"]["means"]
    print(f"wrote {args.out}/results.{{json,md,png}} in {results['seconds']:.0f} s")
    print("\n".join(f"{m:>20}  {means[m]:.3f}" for m in results["methods"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
