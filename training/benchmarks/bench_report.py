"""The printed report of ``hypergen-bench`` (:mod:`training.benchmarks.bench`) and its targets.

Targets say where we stand; they are not gates.
"""

from __future__ import annotations

GENERATE_MS = 50.0
"""generate() under 50 ms warm on 2 cores."""
SEARCH_MS, SEARCH_AT = 1.0, 10_000
"""Top-k search under 1 ms at 10,000 experts."""
GENERATOR_SHARE = 0.10
"""Generator under 10% of the zoo's bytes."""


def targets(figures: dict, ratios: dict, machine: dict) -> dict:
    """Each target: the measured value, whether it is met, and a line saying so."""
    gen_ms = figures["generate"]["tensors_ms"]["p50"]
    cores = f"{machine['cores']} cores, {machine['torch_threads']} torch threads"
    largest = max(figures["scale"], key=int)
    big = figures["scale"][largest]
    search = big["search_ms"]["p50"]
    how = (
        f" ({big['search_mode']}, recall@k {big['search_recall']:.3f} against exact search, "
        f"whose p50 is {big['search_exact_ms']['p50']:.3f} ms)"
        if "search_recall" in big
        else ""
    )
    share = ratios["generator_over_zoo_bytes"]
    experts = figures["sizes"]["zoo_experts"]
    at = "" if int(largest) >= SEARCH_AT else f" (largest zoo measured: {int(largest):,} experts)"
    return {
        "generate_ms": {
            "value": gen_ms,
            "met": gen_ms < GENERATE_MS,
            "line": f"generate() < {GENERATE_MS:g} ms warm on 2 cores: p50 {gen_ms:.1f} ms on {cores}",
        },
        "search_ms": {
            "value": search,
            "met": search < SEARCH_MS and int(largest) >= SEARCH_AT,
            "line": f"top-k search < {SEARCH_MS:g} ms at {SEARCH_AT:,} experts: p50 {search:.3f} ms "
            f"at {int(largest):,}{at}{how}",
        },
        "generator_share": {
            "value": share,
            "met": share < GENERATOR_SHARE,
            "line": f"generator < {GENERATOR_SHARE:.0%} of the zoo's bytes: {share:.1%} of the "
            f"served zoo ({experts} experts); "
            + ", ".join(
                f"{v:.2%} at {int(n):,}"
                for n, v in ratios["generator_over_synthetic_zoo_bytes"].items()
            ),
        },
    }


def _ms(s: dict) -> str:
    return (
        f"p50 {s['p50']:.3f} ms  p95 {s['p95']:.3f} ms"
        if s["p50"] < 1
        else (f"p50 {s['p50']:.1f} ms  p95 {s['p95']:.1f} ms")
    )


def _times(x: float) -> str:
    return f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x"


def _load(averages: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in averages)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    wide = [max(len(r[i]) for r in rows) for i in range(2)]
    return [f"  {a:<{wide[0]}}  {b:<{wide[1]}}  {c}".rstrip() for a, b, c in rows]


def render(result: dict) -> str:
    """The report: a header (command, machine), the figures, the ratios and the targets."""
    m, f, r = result["machine"], result["figures"], result["ratios"]
    lines = [
        "hypergen-bench: speed and scale (medians of repeated runs; ratios from this run)",
        f"command  {result['command']}",
        f"date     {result['date']}   git {m['git']}   run took {result['seconds']:.0f} s",
        f"machine  {m['host']}: {m['cpu']}, {m['cores']} cores, {_bytes(m['memory_bytes'])} RAM,"
        f" load average {_load(m['load_average'])} at start, {_load(m['load_average_end'])} at end",
        f"software python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"faiss {m['faiss']}",
        "",
    ]
    for title, rows in _sections(f, r):
        lines += [title, *_table(rows), ""]
    lines += ["targets (where we stand, not gates)"]
    for t in result["targets"].values():
        lines.append(f"  [{'met' if t['met'] else 'not met'}] {t['line']}")
    return "\n".join(lines)


def _sections(f: dict, r: dict) -> list[tuple[str, list[tuple[str, str, str]]]]:
    g, c, a, t, z = f["generate"], f["cold"], f["apply"], f["train"], f["sizes"]
    recipe = t["recipe"]
    return [
        (
            "generate (warm)",
            [
                (
                    "description -> adapter tensors",
                    _ms(g["tensors_ms"]),
                    f"n={g['tensors_ms']['n']}",
                ),
                ("description -> PEFT folder on disk", _ms(g["peft_folder_ms"]), "save_pretrained"),
                (
                    f"batch of {g['batch_size']}",
                    _ms(g["batch_ms"]),
                    f"{g['batch_adapters_per_s']:.1f} adapters/s",
                ),
            ],
        ),
        (
            f"cold start (fresh process, median of {c['runs']})",
            [
                ("python start + import hypergen", f"{c['import_s']:.2f} s", ""),
                (
                    "+ load generator, encoder, index",
                    f"{c['ready_s']:.2f} s",
                    "base model excluded",
                ),
                (
                    "+ load base model",
                    f"{c['ready_with_base_s']:.2f} s",
                    f"base model included (its load: {c['base_load_s']:.2f} s)",
                ),
                (
                    "first adapter after start",
                    f"{c['first_adapter_s']:.2f} s",
                    "base model excluded",
                ),
            ],
        ),
        (
            "apply",
            [
                (
                    "attach + merge into the base",
                    _ms(a["attach_merge_ms"]),
                    "apply_adapter + merge",
                ),
                ("merge_and_unload", _ms(a["merge_and_unload_ms"]), "attach + merge_and_unload"),
                (
                    "swap adapter, base not reloaded",
                    _ms(a["swap_ms"]),
                    "HyperGen.apply, merged slot",
                ),
            ],
        ),
        (
            "training one expert vs generating one",
            [
                (
                    f"train one expert ({t['task']})",
                    f"{t['wall_s']:.1f} s",
                    f"{t['steps']} steps, batch {recipe['batch_size']}, max {recipe['max_seconds']} s, "
                    f"{recipe['eval_examples']} eval examples; recipe {t['recipe_source']}",
                ),
                (
                    "  of which optimisation",
                    f"{t['optimise_s']:.1f} s",
                    "scoring before/after aside",
                ),
                (
                    "train ÷ generate (p50)",
                    _times(r["train_wall_over_generate"]),
                    f"optimisation only: {_times(r['train_optimise_over_generate'])}",
                ),
            ],
        ),
        ("scale (synthetic zoos, random canonical fp16 adapters)", _scale_rows(f["scale"])),
        (
            "sizes",
            [
                ("generator (checkpoint files)", _bytes(z["generator_bytes"]), ""),
                (
                    f"served zoo ({z['zoo_experts']} experts)",
                    _bytes(z["zoo_bytes"]),
                    "all its files",
                ),
                ("generator ÷ zoo", f"{r['generator_over_zoo_bytes']:.1%}", "same run"),
                *[
                    (
                        f"generator ÷ synthetic zoo of {int(n):,}",
                        f"{v:.2%}",
                        f"export file {_bytes(z['per_synthetic_zoo'][n])}",
                    )
                    for n, v in r["generator_over_synthetic_zoo_bytes"].items()
                ],
            ],
        ),
    ]


def _scale_rows(scale: dict) -> list[tuple[str, str, str]]:
    rows = [("experts", "  ".join(f"{int(n):>13,}" for n in scale), "")]

    def row(name: str, fmt, note: str = "") -> None:
        rows.append((name, "  ".join(f"{fmt(s):>13}" for s in scale.values()), note))

    row("description rows", lambda s: f"{s['rows']:,}")
    row("export file (fp16)", lambda s: _bytes(s["export_bytes"]))
    row("open bank (s)", lambda s: f"{s['open_bank_s']:.2f}", "records + embeddings + index")
    row("index build p50 (ms)", lambda s: f"{s['index_build_ms']['p50']:.2f}", "IndexFlatIP")
    row("search mode", lambda s: s.get("search_mode", "exact"), "two-stage above 4,096 experts")
    row("top-k search p50 (ms)", lambda s: f"{s['search_ms']['p50']:.3f}", "ExpertBank.search")
    row("top-k search p95 (ms)", lambda s: f"{s['search_ms']['p95']:.3f}")
    if all("search_exact_ms" in s for s in scale.values()):
        row("exact search p50 (ms)", lambda s: f"{s['search_exact_ms']['p50']:.3f}", "every row")
        row("recall@k vs exact", lambda s: f"{s['search_recall']:.3f}", "same queries")
    row("generate() p50 (ms)", lambda s: f"{s['generate_ms']['p50']:.1f}", "warm")
    row("generate() p95 (ms)", lambda s: f"{s['generate_ms']['p95']:.1f}")
    row("RSS growth, open", lambda s: _bytes(s["rss_open_delta_bytes"]), "process RSS")
    row("RSS growth, + generate", lambda s: _bytes(s["rss_generate_delta_bytes"]))
    row("embeddings + index", lambda s: _bytes(s["resident_index_bytes"]), "weights stay on disk")
    row(
        "all weights as fp32", lambda s: _bytes(s["weights_fp32_bytes"]), "if read whole (not done)"
    )
    row("build zoo folder (s)", lambda s: f"{s['build_folder_s']:.1f}", "one commit, hard links")
    row("add one expert p50 (ms)", lambda s: f"{s['add_ms']['p50']:.0f}", "ExpertZoo.add")
    return rows
