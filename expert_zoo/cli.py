"""``expert-zoo``: build, inspect, search and maintain a zoo of expert LoRAs.

Every command takes ``--zoo PATH`` (default: the zoo shipped with hypergen).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from expert_zoo.store import ExpertZoo, ZooError

DEFAULT_ZOO = Path(__file__).resolve().parent / "zoo"
"""The default zoo shipped in the repository (``expert_zoo/zoo``)."""


def _cmd_list(zoo: ExpertZoo, args) -> int:
    for r in zoo.records():
        gain = r.metrics.get("gain")
        flag = " (flagged: no gain)" if r.flagged else ""
        gain_text = f"{gain:+.3f}" if isinstance(gain, float) else "n/a"
        print(f"{r.expert_id:60s} {r.family:30s} gain {gain_text}{flag}")
    print(f"{len(zoo)} experts")
    return 0


def _cmd_show(zoo: ExpertZoo, args) -> int:
    record = zoo.get(args.id)
    print(json.dumps(record.__dict__, indent=2, default=str))
    return 0


def _cmd_search(zoo: ExpertZoo, args) -> int:
    from hypergen.encoder import TaskEncoder

    query = TaskEncoder().encode(args.text)
    for expert_id, description, sim in zoo.search(query, k=args.k):
        print(f"{sim:6.3f}  {expert_id}  {description[:90]}")
    return 0


def _trainer_setup(args):
    from expert_zoo.train import BASE_DTYPES, ExpertTrainConfig
    from hypergen.base_model import load_base_model
    from hypergen.encoder import TaskEncoder

    config = ExpertTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_examples=args.eval_examples,
        max_seconds=args.max_seconds,
        seed=args.seed,
        val_examples=args.val_examples,
        val_every=args.val_every,
        patience=args.patience,
        base_dtype=args.base_dtype,
    )
    base = load_base_model(args.base_model, dtype=BASE_DTYPES[config.base_dtype])
    return base, TaskEncoder(args.encoder), config


def _cmd_add(zoo: ExpertZoo, args) -> int:
    from expert_zoo.build import add_task
    from expert_zoo.tasks import load_user_task

    task = load_user_task(args.task)
    base, encoder, config = _trainer_setup(args)
    record = add_task(zoo, base, encoder, task, config, keep_flagged=not args.drop_flagged)
    print(f"added {record.expert_id}" if record else f"dropped {task.task_id}: no gain over base")
    return 0


def matches(task_id: str, only: list[str] | None) -> bool:
    """Whether ``task_id`` matches one of the shell-style patterns ``only`` (any id when there
    are none), as ``build --only`` and ``describe --only`` select tasks."""
    from fnmatch import fnmatchcase

    return not only or any(fnmatchcase(task_id, pattern) for pattern in only)


def source_tasks(source: str, limit: int | None = None, only: list[str] | None = None):
    """The zoo's (not held-out) tasks of ``source``: ``packages`` (everyday tasks from PyPI,
    Debian and npm package archives), ``bigbench``, ``all`` (packages first, then BIG-bench) or
    ``synthetic``; with ``only``, those whose id matches one of its shell-style patterns
    (``bigbench:arithmetic/*``), in the source's order; ``limit`` counts after that filter."""
    from itertools import chain, islice

    from expert_zoo.tasks import is_held_out, iter_bigbench_tasks, synthetic_tasks
    from expert_zoo.tasks.debian import iter_debian_tasks
    from expert_zoo.tasks.npm import iter_npm_tasks
    from expert_zoo.tasks.packaged import iter_packaged_tasks

    def wanted(task) -> bool:
        return matches(task.task_id, only)

    if source == "synthetic":
        return [t for t in synthetic_tasks() if not is_held_out(t.family) and wanted(t)][:limit]
    parts = []
    if source in ("packages", "all"):
        parts += [
            iter_packaged_tasks(split="train"),
            iter_debian_tasks(split="train"),
            iter_npm_tasks(split="train"),
        ]
    if source in ("bigbench", "all"):
        parts.append(iter_bigbench_tasks(split="train", order="family"))
    return islice(filter(wanted, chain(*parts)), limit)


def _cmd_build(zoo: ExpertZoo, args) -> int:
    from expert_zoo.build import build

    i, n = (int(x) for x in args.shard.split("/"))
    tasks = source_tasks(args.source, args.limit, args.only)
    if args.only:
        tasks = list(tasks)
        if not tasks:
            print(
                f"error: no task of --source {args.source} matches --only {' '.join(args.only)} "
                "(ids are source:name, e.g. bigbench:arithmetic/3_digit_addition)",
                file=sys.stderr,
            )
            return 2
    base, encoder, config = _trainer_setup(args)
    report = build(
        zoo,
        base,
        encoder,
        tasks,
        config,
        shard=(i, n),
        keep_flagged=not args.drop_flagged,
        retrain_flagged=args.retrain_flagged,
    )
    print(
        f"added {len(report.added)} (retrained {len(report.retrained)} flagged), skipped {len(report.skipped)} already in the zoo, "
        f"dropped {len(report.dropped)} in {report.seconds:.0f} s; zoo has {len(zoo)} experts"
    )
    return 0


def _cmd_describe(zoo: ExpertZoo, args) -> int:
    from expert_zoo.tasks.by_id import can_reload, load_tasks
    from hypergen.encoder import TaskEncoder

    only = args.only or []
    records = [r for r in zoo.records() if can_reload(r.task_id) and matches(r.task_id, only)]
    if only and not records:
        print(f"error: no expert's task id matches --only {' '.join(only)}", file=sys.stderr)
        return 2
    skipped = len(zoo) - len(records)
    encoder, changed = TaskEncoder(args.encoder), 0
    for record, task in zip(records, load_tasks([r.task_id for r in records]), strict=True):
        if list(task.descriptions) == record.descriptions:
            continue
        embeddings = encoder.encode(list(task.descriptions), truncate=True)
        zoo.redescribe(record.expert_id, list(task.descriptions), embeddings)
        changed += 1
        print(f"{record.expert_id}: {len(record.descriptions)} -> {len(task.descriptions)}")
    print(
        f"redescribed {changed} of {len(records)} experts from their task sources "
        f"({skipped} {'others' if only else 'of other sources'} left as they are); "
        "weights unchanged"
    )
    return 0


def _cmd_remove(zoo: ExpertZoo, args) -> int:
    zoo.remove(args.id)
    print(f"removed {args.id}; zoo has {len(zoo)} experts")
    return 0


def _cmd_reject_flagged(zoo: ExpertZoo, args) -> int:
    from expert_zoo import rejected

    flagged = [r for r in zoo.records() if r.flagged]
    for record in flagged:
        rejected.reject(zoo.root, record)  # first, so a crash between the two loses nothing
        zoo.remove(record.expert_id)
        print(f"rejected {record.expert_id} (gain {record.metrics.get('gain', float('nan')):+.3f})")
    print(
        f"moved {len(flagged)} flagged experts to {zoo.root / rejected.REJECTED}; zoo has {len(zoo)} experts"
    )
    return 0


def _cmd_verify(zoo: ExpertZoo, args) -> int:
    problems = zoo.verify()
    problems += [f"stray: {p} is not named by the manifest" for p in zoo.strays()]
    for p in problems:
        print(f"problem: {p}")
    print("zoo is clean" if not problems else f"{len(problems)} problems: run `expert-zoo repair`")
    return 1 if problems else 0


def _cmd_repair(zoo: ExpertZoo, args) -> int:
    for line in zoo.repair():
        print(line)
    print(f"repaired; zoo has {len(zoo)} experts")
    return 0


def _cmd_stats(zoo: ExpertZoo, args) -> int:
    import statistics

    from expert_zoo import rejected

    records, dropped = zoo.records(), rejected.read_rejected(zoo.root)
    if not records:
        print("empty zoo" + (f"; {len(dropped)} rejected experts" if dropped else ""))
        if dropped and args.by_source:
            print("\n".join(rejected.rejected_table(dropped)))
        return 0
    gains = sorted(r.metrics["gain"] for r in records if "gain" in r.metrics)
    secs = [r.metrics["seconds"] for r in records if "seconds" in r.metrics]
    size = sum(f.stat().st_size for f in zoo.root.rglob("*") if f.is_file())
    print(
        f"experts: {len(records)} in {len({r.family for r in records})} families, "
        f"{sum(r.flagged for r in records)} flagged (no gain over the base model)"
    )
    if gains:
        print(
            f"eval gain over base: median {statistics.median(gains):+.3f}, "
            f"min {gains[0]:+.3f}, max {gains[-1]:+.3f}, "
            f"quartiles {[round(q, 3) for q in statistics.quantiles(gains, n=4)] if len(gains) > 1 else gains}"
        )
    if secs:
        print(f"training seconds per expert: median {statistics.median(secs):.0f}")
    print(f"size on disk: {size / 1e6:.1f} MB")
    if dropped:
        print(f"rejected (trained, not kept: no gain over the base model): {len(dropped)}")
    if args.by_source:
        print()
        print("\n".join(source_table(records)))
        if dropped:
            print()
            print("\n".join(rejected.rejected_table(dropped)))
    return 0


def source_table(records) -> list[str]:
    """A Markdown table of the zoo per task source: experts, families, not flagged, median
    gain, licence."""
    import statistics

    from expert_zoo.tasks.debian import DEBIAN_SOURCES
    from expert_zoo.tasks.npm import NPM_SOURCES
    from expert_zoo.tasks.packaged import SOURCES

    # one package may hold several licences: each task's own
    licences = {s.task_id: s.licence for s in (*SOURCES, *DEBIAN_SOURCES, *NPM_SOURCES)}
    bigbench = "BIG-bench: Apache-2.0 (bigbench 1.0.0 sdist)"
    rows = ["| source | experts | families | beat the base | median gain | licence |"]
    rows.append("|---|---:|---:|---:|---:|---|")
    by_source: dict[str, list] = {}
    for r in records:
        by_source.setdefault(r.task_id.split(":", 1)[0], []).append(r)
    for source in sorted(by_source):
        group = by_source[source]
        gains = [r.metrics["gain"] for r in group if "gain" in r.metrics]
        fallback = bigbench if source == "bigbench" else "see the task file"
        licence = "; ".join(dict.fromkeys(licences.get(r.task_id, fallback) for r in group))
        rows.append(
            f"| {source} | {len(group)} | {len({r.family for r in group})} | "
            f"{sum(not r.flagged for r in group)} | "
            f"{f'{statistics.median(gains):+.3f}' if gains else 'n/a'} | "
            f"{licence} |"
        )
    return rows


def _cmd_export(zoo: ExpertZoo, args) -> int:
    print(f"wrote {zoo.export(args.out)}")
    return 0


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per expert (default 40)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument(
        "--eval-examples",
        type=int,
        default=50,
        help="eval-split examples scored before/after training (default 50)",
    )
    p.add_argument("--max-seconds", type=float, default=None, help="time budget per expert")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument(
        "--val-examples",
        type=int,
        default=0,
        help="training examples held out to pick each expert's budget by early stopping "
        "(default 0: no validation, train --steps)",
    )
    p.add_argument(
        "--val-every", type=int, default=16, help="steps between validation checks (default 16)"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=2,
        help="validation checks without a new best before an expert stops (default 2)",
    )
    p.add_argument(
        "--base-dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="precision of the frozen base model while experts train and are scored "
        "(bfloat16: faster on CPUs with AVX-512 BF16; the LoRA weights train in float32)",
    )
    p.add_argument(
        "--base-model",
        default=None,
        help="transformers folder or .gguf file (default: SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--encoder", default=None, help="sentence-transformers folder (default: all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--drop-flagged",
        action="store_true",
        help="do not add experts that fail to beat the base model on their eval split",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="expert-zoo", description=__doc__)
    top.add_argument(
        "--zoo", type=Path, default=DEFAULT_ZOO, help=f"zoo folder (default {DEFAULT_ZOO})"
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experts with their family and eval gain")
    p = sub.add_parser("show", help="print one expert's record (descriptions, metrics, layout)")
    p.add_argument("id")
    p = sub.add_parser("search", help="experts whose descriptions are nearest to a text")
    p.add_argument("text")
    p.add_argument("-k", type=int, default=5, help="number of neighbours (default 5)")
    p = sub.add_parser("add", help="train an expert on your task file (JSONL) and add it")
    p.add_argument(
        "--task",
        type=Path,
        required=True,
        help="JSONL file: a header line with the description, then examples",
    )
    _add_training_options(p)
    p = sub.add_parser("build", help="train and add experts for a task source, resumably")
    top.build_parser = p  # --config sets this subcommand's defaults
    p.add_argument(
        "--config",
        type=Path,
        help="TOML recipe: keys are this command's option names (steps = 64, ...); options "
        "on the command line override it (expert_zoo/recipes/)",
    )
    p.add_argument(
        "--source",
        choices=["bigbench", "packages", "all", "synthetic"],
        default="bigbench",
        help="bigbench: BIG-bench JSON tasks; packages: everyday tasks read from package "
        "archives (sentiment, topic, spam, ...); all: packages then bigbench (default bigbench)",
    )
    p.add_argument("--limit", type=int, default=None, help="first N tasks of the source")
    p.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="only the tasks whose id matches this shell-style pattern (repeatable): ids are "
        "source:name, e.g. bigbench:arithmetic/3_digit_addition or afinn:afinn_word_polarity "
        "(`expert-zoo show` prints an expert's task_id); --only 'bigbench:arithmetic/*' builds "
        "one family first",
    )
    p.add_argument("--shard", default="0/1", help="i/n: this worker's share of the tasks")
    p.add_argument(
        "--retrain-flagged",
        action="store_true",
        help="retrain experts already in the zoo that are flagged and were trained with another "
        "recipe, replacing them",
    )
    _add_training_options(p)
    p = sub.add_parser(
        "describe",
        help="give every expert its task source's current descriptions (and re-embed them); "
        "no retraining",
    )
    p.add_argument(
        "--encoder", default=None, help="sentence-transformers folder (default: all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="only the experts whose task id matches this shell-style pattern (repeatable), e.g. "
        "'dict-freedict-*'; the others keep their descriptions and need not be re-loaded",
    )
    p = sub.add_parser("remove", help="remove an expert and its index rows")
    p.add_argument("id")
    sub.add_parser(
        "reject-flagged",
        help="move every flagged expert (no gain over the base model) out of the zoo into its "
        "rejected.json, numbers kept",
    )
    sub.add_parser("verify", help="check every file and the index; exit 1 on problems")
    sub.add_parser("repair", help="rebuild the manifest and index from the expert folders")
    p = sub.add_parser("stats", help="size, families, eval gains and training time of the zoo")
    p.add_argument(
        "--by-source",
        action="store_true",
        help="also a Markdown table per task source (experts, families, gains, licence) and "
        "one of the rejected experts with their numbers",
    )
    p = sub.add_parser("export", help="write the whole zoo to one safetensors file")
    p.add_argument("out", type=Path)
    return top


COMMANDS = {
    "list": _cmd_list,
    "reject-flagged": _cmd_reject_flagged,
    "show": _cmd_show,
    "search": _cmd_search,
    "add": _cmd_add,
    "build": _cmd_build,
    "describe": _cmd_describe,
    "remove": _cmd_remove,
    "verify": _cmd_verify,
    "repair": _cmd_repair,
    "stats": _cmd_stats,
    "export": _cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if getattr(args, "config", None) is not None:
        from hypergen.recipe_file import read_recipe

        top.build_parser.set_defaults(**read_recipe(args.config, top.build_parser))
        args = top.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](ExpertZoo(args.zoo), args)
    except (ZooError, ValueError, FileNotFoundError) as exc:
        print(f"expert-zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
