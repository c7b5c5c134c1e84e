"""``hypergen``: generate an adapter from a task description, chat with it, or show what is loaded."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hypergen.errors import HypergenError


def _load(args):
    from hypergen.generator import HyperGen

    return HyperGen.from_pretrained(args.generator, args.zoo, args.encoder, args.base_model)


def _cmd_generate(args) -> int:
    from hypergen.encoder import check_description

    check_description(args.description)  # before any weights load: a bad one fails at once
    targets = (
        [args.out] if args.samples == 1 else [args.out / f"sample-{i}" for i in range(args.samples)]
    )
    taken = [t for t in targets if t.exists()]
    if taken and not args.overwrite:
        raise FileExistsError(f"{taken[0]} already exists: pass --overwrite to replace it")
    gen = _load(args)
    made = gen.sample(args.description, args.samples, args.temperature, args.seed)
    for out, adapter in zip(targets, made, strict=True):
        adapter.save_pretrained(out, overwrite=args.overwrite)
        print(f"wrote {out}")
    print("nearest zoo experts:")
    for expert_id, description, sim in made[0].neighbors:
        print(f"  {sim:6.3f}  {expert_id}  {description[:80]}")
    _print_confidence(made[0].confidence)
    return 0


def _print_confidence(confidence) -> None:
    if confidence is None:
        return
    agree = "n/a" if confidence.agreement is None else f"{confidence.agreement:.2f}"
    print(
        f"confidence: nearest expert {confidence.nearest:.2f}, weighted {confidence.weighted:.2f}, "
        f"neighbours agree {agree}"
        + ("" if confidence.threshold is None else f" (threshold {confidence.threshold:.2f})")
    )
    if confidence.warning:
        print(f"warning: {confidence.warning}")


def _cmd_chat(args) -> int:
    from hypergen.adapter_io import LoraAdapter
    from hypergen.encoder import check_description
    from hypergen.prompting import answer

    if args.describe is not None:
        check_description(args.describe)
    gen = _load(args)
    if args.adapter is not None:
        adapter = LoraAdapter.from_pretrained(args.adapter, layout=gen.bank.layout)
    else:
        adapter = gen.generate(args.describe)
        print("generated from:", ", ".join(e for e, _, _ in adapter.neighbors))
        _print_confidence(adapter.confidence)
    model = gen.apply(adapter)
    prompts = [args.prompt] if args.prompt else iter(lambda: input("you> "), "")
    for prompt in prompts:
        print(answer(model, gen.base.tokenizer, prompt, max_new_tokens=args.max_new_tokens))
    return 0


def _cmd_info(args) -> int:
    print(json.dumps(_load(args).info(), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hypergen", description=__doc__)
    top.add_argument(
        "--generator",
        type=Path,
        default=None,
        help="generator checkpoint folder (default: the shipped one)",
    )
    top.add_argument(
        "--zoo",
        type=Path,
        action="append",
        default=None,
        help="zoo folder or export file (default: the shipped zoo); repeat it to serve several "
        "as one (e.g. --zoo expert_zoo/zoo --zoo my-zoo)",
    )
    top.add_argument("--encoder", default=None, help="sentence-transformers folder")
    top.add_argument("--base-model", default=None, help="transformers folder or .gguf file")
    top.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="write a PEFT adapter made from a task description")
    p.add_argument("description", help="the task, in words")
    p.add_argument("--out", type=Path, required=True, help="adapter folder to write")
    p.add_argument("--samples", type=int, default=1, help="adapters to sample (default 1)")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0: the prior's mean (default); > 0: random draws",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p = sub.add_parser("chat", help="answer prompts with an adapter applied to the base model")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--adapter", type=Path, help="a PEFT LoRA folder")
    which.add_argument("--describe", help="generate the adapter from this description first")
    p.add_argument("--prompt", help="one prompt (default: read prompts until an empty line)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    sub.add_parser("info", help="what is loaded: base model, zoo size, generator size")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return {"generate": _cmd_generate, "chat": _cmd_chat, "info": _cmd_info}[args.command](args)
    except (HypergenError, FileExistsError) as exc:
        print(f"hypergen {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
