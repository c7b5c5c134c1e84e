"""``hypergen-bench``: the speed and scale benchmark. Printed figures, medians over repeated runs,
every ratio taken from figures measured in the same run.

Sections (each a dict of figures in ``--out FILE.json``):

  generate   warm ``generate()`` latency p50/p95, description -> adapter tensors and -> PEFT folder
             on disk; batch throughput (adapters per second at ``--batch``)
  cold       a fresh process: import, load generator + encoder + index; first adapter; base model
  apply      attach + merge into the base model; merge_and_unload; swap one adapter for another in
             the merged slot without reloading the base
  train      one expert trained with the zoo's recipe on a synthetic task (wall time)
  scale      synthetic zoos (random canonical fp16 adapters in the real layout, written to a temp
             folder and deleted): index build, top-k search, generate(), memory, adding an expert
  sizes      generator bytes vs zoo bytes

Targets (where we stand, not gates): generate() under 50 ms warm on 2 cores; top-k search under
1 ms at 10,000 experts; generator under 10% of the zoo's bytes.

Examples::

    hypergen-bench --out results/bench/bench.json
    hypergen-bench --quick
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from expert_zoo.tasks import synthetic_tasks
from expert_zoo.train import ExpertTrainConfig, base_in_dtype, train_expert
from hypergen.apply import apply_adapter, merge_into_base
from hypergen.generator import DEFAULT_GENERATOR, DEFAULT_ZOO, HyperGen
from training.benchmarks.bench_report import render, targets
from training.benchmarks.bench_scale import bench_scale
from training.benchmarks.config import DESCRIPTIONS, QUICK, BenchConfig
from training.benchmarks.measure import folder_bytes, machine, stats, timings
from training.evaluation import baselines

ZOO_RECIPE = ExpertTrainConfig(steps=32, max_seconds=100, eval_examples=40)
"""The shipped zoo's recipe (expert_zoo/README.md), used when the zoo records none."""
TRAIN_TASK = "synthetic:sentiment"


# --- sections -----------------------------------------------------------------------------------
def bench_generate(gen: HyperGen, cfg: BenchConfig, tmp: Path) -> dict:
    def text(i: int) -> str:
        return DESCRIPTIONS[i % len(DESCRIPTIONS)]

    tensors = timings(lambda i: gen.generate(text(i)), cfg.repeats, "generate")
    folder = timings(
        lambda i: gen.generate(text(i)).save_pretrained(tmp / "adapter", overwrite=True),
        cfg.repeats,
        "generate -> folder",
    )
    runs = max(3, cfg.repeats // 5)
    batch = timings(lambda i: gen.generate_batch(list(DESCRIPTIONS[: cfg.batch])), runs, "batch")
    return {
        "tensors_ms": stats(tensors),
        "peft_folder_ms": stats(folder),
        "batch_size": cfg.batch,
        "batch_ms": stats(batch),
        "batch_adapters_per_s": cfg.batch / float(np.median(batch)),
        "torch_threads": torch.get_num_threads(),
    }


_COLD = """
import json, sys, time
start, args = float(sys.argv[1]), json.loads(sys.argv[2])
from hypergen import HyperGen
marks = {"import_s": time.time() - start}
gen = HyperGen.from_pretrained(args["generator"], args["zoo"], args["encoder"], args["base_model"])
marks["ready_s"] = time.time() - start
gen.generate(args["text"])
marks["first_adapter_s"] = time.time() - start
t = time.time()
gen.base
marks["base_load_s"] = time.time() - t
print("BENCH " + json.dumps(marks))
"""


def bench_cold(cfg: BenchConfig) -> dict:
    """Fresh processes: the clock starts before the interpreter is launched."""
    args = {k: getattr(cfg, k) for k in ("generator", "zoo", "encoder", "base_model")}
    args["text"] = DESCRIPTIONS[0]
    runs = []
    for _ in tqdm(range(cfg.cold_runs), desc="cold start", leave=False):
        start = time.time()
        cmd = [sys.executable, "-c", _COLD, repr(start), json.dumps(args)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [x for x in done.stdout.splitlines() if x.startswith("BENCH ")]
        if done.returncode or not line:
            raise RuntimeError(f"cold-start process failed:\n{done.stderr[-2000:]}")
        runs.append(json.loads(line[-1][len("BENCH ") :]))
    out = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    out["ready_with_base_s"] = float(np.median([r["ready_s"] + r["base_load_s"] for r in runs]))
    out["runs"] = len(runs)
    return out


def bench_apply(gen: HyperGen, cfg: BenchConfig) -> dict:
    """Attach + merge (undone after each run), merge_and_unload (on copies of the base)."""
    loras = [gen.generate(t).adapter for t in DESCRIPTIONS[:2]]
    model = gen.base.model

    def attach_merge(i: int):
        peft_model = apply_adapter(model, loras[i % 2])
        peft_model.merge_adapter()
        return peft_model

    attach = []
    for i in range(cfg.repeats + 1):
        start = time.perf_counter()
        peft_model = attach_merge(i)
        attach.append(time.perf_counter() - start)
        peft_model.unmerge_adapter()
        peft_model.unload()  # the plain base again
    unload = []
    for i in range(max(3, cfg.repeats // 5)):
        base = copy.deepcopy(model)
        start = time.perf_counter()
        merge_into_base(apply_adapter(base, loras[i % 2]))
        unload.append(time.perf_counter() - start)
        del base
    return {"attach_merge_ms": stats(attach[1:]), "merge_and_unload_ms": stats(unload)}


def bench_swap(gen: HyperGen, cfg: BenchConfig) -> dict:
    """``HyperGen.apply`` of one adapter after another: swapped in place in the merged slot."""
    loras = [gen.generate(t) for t in DESCRIPTIONS[:2]]
    slot = gen.apply(loras[0])
    swap = timings(lambda i: gen.apply(loras[(i + 1) % 2]), cfg.repeats)
    if gen.apply(loras[0]) is not slot:
        raise RuntimeError("HyperGen.apply reloaded the base model instead of swapping")
    return {"swap_ms": stats(swap)}


def zoo_recipe(zoo: Path, cfg: BenchConfig) -> tuple[ExpertTrainConfig, str]:
    """The zoo's recorded recipe (else :data:`ZOO_RECIPE`), steps overridden by ``--train-steps``."""
    try:
        recipe = baselines.zoo_recipe(baselines.zoo_records(zoo))
        source = "recorded by the zoo"
    except (baselines.BaselineError, OSError, KeyError, ValueError):
        recipe, source = ZOO_RECIPE, "expert_zoo/README.md"
    if cfg.train_steps is not None:
        recipe = replace(recipe, steps=cfg.train_steps, eval_examples=min(4, recipe.eval_examples))
        source += f", steps cut to {cfg.train_steps} and eval to {recipe.eval_examples} (--quick)"
    return recipe, source


def bench_train(gen: HyperGen, cfg: BenchConfig, zoo: Path) -> dict:
    """Train one expert with the zoo's recipe (scoring before and after included), as a zoo
    build does; the base model is the generator's own, unwrapped again afterwards."""
    recipe, source = zoo_recipe(zoo, cfg)
    task = next(t for t in synthetic_tasks(n_train=256, n_eval=64) if t.task_id == TRAIN_TASK)
    with base_in_dtype(gen.base, recipe.base_dtype):  # the recipe's precision, then back
        start = time.perf_counter()
        _, metrics = train_expert(gen.base, task, recipe, progress=False)
        wall = time.perf_counter() - start
    return {
        "task": task.task_id,
        "recipe": recipe.record(),
        "recipe_source": source,
        "wall_s": wall,
        "optimise_s": float(metrics["seconds"]),
        "steps": int(metrics["steps"]),
    }


def bench_sizes(generator: Path, zoo: Path, experts: int, scale: dict) -> dict:
    """Bytes on disk of the generator checkpoint, the served zoo and each synthetic export."""
    return {
        "generator_bytes": folder_bytes(generator),
        "zoo_bytes": folder_bytes(zoo),
        "zoo_experts": experts,
        "per_synthetic_zoo": {n: s["export_bytes"] for n, s in scale.items()},
    }


# --- the run ------------------------------------------------------------------------------------
def run(cfg: BenchConfig, argv: list[str]) -> dict:
    started = time.perf_counter()
    result = {
        "command": shlex.join(["hypergen-bench", *argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": asdict(cfg),
    }
    generator = Path(cfg.generator) if cfg.generator else DEFAULT_GENERATOR
    zoo = Path(cfg.zoo) if cfg.zoo else DEFAULT_ZOO
    gen = HyperGen.from_pretrained(generator, zoo, cfg.encoder, cfg.base_model)
    figures = result["figures"] = {}
    if cfg.workdir:  # --workdir names a folder that may not exist yet
        Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hypergen-bench-", dir=cfg.workdir))
    try:
        steps = [
            ("generate", lambda: bench_generate(gen, cfg, work)),
            ("cold", lambda: bench_cold(cfg)),
            ("apply", lambda: bench_apply(gen, cfg)),
            ("train", lambda: bench_train(gen, cfg, zoo)),
            ("swap", lambda: bench_swap(gen, cfg)),
            ("scale", lambda: bench_scale(gen, cfg, work, DESCRIPTIONS)),
        ]
        for name, step in tqdm(steps, desc="hypergen-bench"):
            figures[name] = step()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["apply"].update(figures.pop("swap"))
    figures["sizes"] = bench_sizes(generator, zoo, len(gen.bank), figures["scale"])
    result["ratios"] = ratios(figures)
    result["targets"] = targets(figures, result["ratios"], result["machine"])
    result["seconds"] = time.perf_counter() - started
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def ratios(figures: dict) -> dict:
    """Ratios of figures measured in this run."""
    generate_s = figures["generate"]["tensors_ms"]["p50"] / 1000
    sizes = figures["sizes"]
    return {
        "train_wall_over_generate": figures["train"]["wall_s"] / generate_s,
        "train_optimise_over_generate": figures["train"]["optimise_s"] / generate_s,
        "generator_over_zoo_bytes": sizes["generator_bytes"] / sizes["zoo_bytes"],
        "generator_over_synthetic_zoo_bytes": {
            n: sizes["generator_bytes"] / b for n, b in sizes["per_synthetic_zoo"].items()
        },
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hypergen-bench",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    docs = _field_docs(BenchConfig)
    for f in fields(BenchConfig):
        kind = _sizes if f.name == "sizes" else (str if f.name in _PATHS else int)
        p.add_argument(
            f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=docs[f.name]
        )
    p.add_argument("--quick", action="store_true", help=f"small sizes, few repeats: {QUICK}")
    p.add_argument("--out", type=Path, default=None, help="also save every figure as JSON here")
    return p


_PATHS = ("generator", "zoo", "encoder", "base_model", "workdir")


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(","))


def _field_docs(cls) -> dict[str, str]:
    """The docstrings under a dataclass's fields (they are the CLI help)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {
        a.target.id: " ".join(b.value.value.split())
        for a, b in zip(body, body[1:], strict=False)
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = vars(build_parser().parse_args(argv))
    quick, out = args.pop("quick"), args.pop("out")
    cfg = BenchConfig(**(args | (QUICK if quick else {})))
    result = run(cfg, argv)
    print(render(result))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"figures saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
