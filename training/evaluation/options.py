"""``hypergen-eval``'s command line: the methods to run and every option."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.evaluation.methods import DEFAULT_METHODS, METHODS

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
USER_DESCRIPTIONS = Path(__file__).resolve().parent / "held_out_descriptions.json"
"""Three descriptions per held-out task written as new users would type them, committed with
the benchmark before any generator was trained on the zoo they are compared with; they are read
only here, for scoring, never for training or choosing hyper-parameters."""


def parse_methods(text: str | None) -> list[str]:
    """``"base,hypergen"`` -> the methods in benchmark order; unknown names raise."""
    if not text:
        return list(DEFAULT_METHODS)
    wanted = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(METHODS))
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"unknown methods {unknown}; choose from {', '.join(METHODS)}"
        )
    return [m for m in METHODS if m in wanted]


def _methods(text: str) -> str:
    parse_methods(text)
    return text


def build_parser(epilog: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hypergen-eval",
        description="Score hypergen against every baseline on held-out tasks; write "
        "results.json, results.md and results.png.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add(
        "--out",
        type=Path,
        default=Path("results/quality"),
        help="results folder (default: %(default)s)",
    )
    add("--generator", type=Path, help="generator checkpoint folder (default: the shipped one)")
    add(
        "--router", type=Path, help="router folder of the router method (python -m training.router)"
    )
    add("--zoo", type=Path, help="zoo folder or export file (default: the shipped zoo)")
    add("--base-model", help="transformers folder or .gguf file (default: SmolLM2-135M-Instruct)")
    add("--encoder", help="sentence-transformers folder (default: all-MiniLM-L6-v2)")
    add(
        "--source",
        choices=["all", "bigbench", "packages", "synthetic"],
        default="all",
        help="task source: all (BIG-bench and the everyday tasks of package archives), "
        "bigbench, packages, or synthetic (the code-generated test tasks); default %(default)s",
    )
    add(
        "--tasks",
        choices=["held_out", "all"],
        default="held_out",
        help="held-out families only (the benchmark) or all (in-distribution diagnostics)",
    )
    add("--families", help="comma-separated families to keep (default: all of --tasks)")
    add("--limit", type=int, help="evaluate only the first N tasks")
    add(
        "--per-family",
        type=int,
        help="evaluate at most N tasks of each family (the first by task id; default: all)",
    )
    add(
        "--eval-examples",
        type=int,
        default=100,
        help="eval examples per task, the same for every method (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=0,
        help="seed of the eval example draw and of the best-of-n samples (default: %(default)s)",
    )
    add(
        "--methods",
        type=_methods,
        help=f"comma-separated subset of: {', '.join(METHODS)} (default: all but "
        f"{', '.join(m for m in METHODS if m not in DEFAULT_METHODS)})",
    )
    add(
        "--user-descriptions",
        type=Path,
        default=USER_DESCRIPTIONS,
        help="JSON of the held-out tasks' user-written descriptions "
        '({"descriptions": {task_id: [text, ...]}}; default: the committed ones)',
    )
    add(
        "--no-generation",
        action="store_true",
        help="skip the greedy answers on multiple-choice tasks (generation accuracy, in format)",
    )
    add(
        "--paraphrases",
        type=int,
        default=0,
        help="paraphrased descriptions also scored for base+description, nearest, hypergen (default: %(default)s)",
    )
    add("--k", type=int, help="experts merged by topk-merge (default: the generator's k)")
    add(
        "--tau",
        type=float,
        help="softmax temperature of the topk-merge weights (default: the generator's tau)",
    )
    add(
        "--best-of-n",
        type=int,
        default=4,
        help="samples for hypergen-best-of-n (default: %(default)s)",
    )
    add("--oracle-steps", type=int, help="oracle training steps (default: the zoo recipe's)")
    add(
        "--multitask-steps",
        type=int,
        help="cap on multitask training steps (default: recipe steps × zoo experts)",
    )
    add("--device", default="cpu", help="torch device of the base model (default: %(default)s)")
    add(
        "--dtype",
        choices=sorted(DTYPES),
        default="bfloat16",
        help="precision the base model scores in (default: %(default)s, 2.5x faster than "
        "float32 on CPUs with AVX-512 BF16, 6x slower where it is emulated; the LoRA layers stay "
        "float32; the multitask and oracle adapters train in --train-dtype)",
    )
    add(
        "--train-dtype",
        choices=sorted(DTYPES),
        help="precision of the base model the multitask and oracle adapters train on (default: "
        "the zoo recipe's base_dtype; pass float32 where bfloat16 is emulated, see `lscpu`)",
    )
    add(
        "--fresh",
        action="store_true",
        help="start over: ignore the finished tasks in <out>/progress.jsonl and the method cache",
    )
    add("--quiet", action="store_true", help="no progress bar")
    return p


def check(args: argparse.Namespace) -> None:
    positive = ("eval_examples", "best_of_n", "limit", "per_family", "k")
    for name in (*positive, "oracle_steps", "multitask_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"hypergen-eval: --{name.replace('_', '-')} must be >= 1, got {value}")
    if args.paraphrases < 0 or (args.tau is not None and args.tau <= 0):
        raise SystemExit("hypergen-eval: --paraphrases must be >= 0 and --tau > 0")
    asked = parse_methods(args.methods)
    if any(m.startswith("router") for m in asked) and args.router is None:
        raise SystemExit(
            "hypergen-eval: the router methods need --router DIR (python -m training.router)"
        )
    if args.router is not None and not args.router.is_dir():
        raise SystemExit(f"hypergen-eval: --router {args.router} is not a folder")
