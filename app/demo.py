"""``make run``: generate an adapter from a task description with the shipped generator and zoo,
save it as a PEFT folder, check that ``PeftModel.from_pretrained`` loads it, and print three
answers to a sample input: the base model's, the base model's with the description before the
input (what a user would do without hypergen), and the adapted model's; with the adapter's
confidence (and its warning when no zoo expert is close).

``--fit`` runs the pre-generator demo instead: fit a small LoRA on eight examples (12 steps),
save, reload, merge and compare.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from peft import get_peft_model

from hypergen.adapter_io import LoraAdapter
from hypergen.apply import apply_adapter, merge_into_base
from hypergen.base_model import load_base_model
from hypergen.encoder import TaskEncoder
from hypergen.layout import LoraLayout
from hypergen.prompting import answer, make_batch, told_the_task

logger = logging.getLogger("app.demo")

DESCRIPTION = "Read a short review and answer with one word: positive or negative."
EXAMPLES = [
    ("The food was cold and the waiter ignored us.", "negative"),
    ("Absolutely loved the view and the staff were lovely.", "positive"),
    ("Worst purchase I have made this year, it broke in a day.", "negative"),
    ("A delightful little book, I read it twice.", "positive"),
    ("The room smelled of smoke and the bed was broken.", "negative"),
    ("Great sound quality and the battery lasts all week.", "positive"),
    ("Boring plot, flat characters, I left halfway through.", "negative"),
    ("Friendly service and fair prices, we will be back.", "positive"),
]
PROBE = "The hotel was spotless and the breakfast was wonderful."
GEN_DESCRIPTION = "Read a hotel review and say whether it is positive or negative."
GEN_INPUT = (
    "Review: The room was dirty and the staff were rude. Is this review positive or negative?"
)
HELD_OUT_DESCRIPTION = "Say whether a French book review from Amazon.fr is positive or negative"
"""The held-out benchmark task where the shipped system helped most (results/calibration:
accuracy 0.41 with the description in the prompt, 0.54 with the adapter; greedy answers in the
right label 0.00 and 0.40). No expert of its family is in the zoo."""
HELD_OUT_INPUT = (
    "Un roman ennuyeux : les personnages sont plats et la fin est bâclée. Je ne le recommande pas."
)


def fit_lora(model, tokenizer, pairs, steps: int, lr: float = 2e-3, seed: int = 0):
    """A few AdamW steps of LoRA (r=8, q_proj/v_proj) on ``pairs``; returns the PeftModel."""
    torch.manual_seed(seed)
    layout = LoraLayout.for_model(model)
    config = LoraAdapter(layout, _zeros(layout), model.name_or_path).peft_config()
    peft_model = get_peft_model(model, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr)
    batch = make_batch(tokenizer, pairs, max_length=96)
    peft_model.train()
    for step in range(steps):
        loss = peft_model(**batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        logger.info("step %d/%d loss %.3f", step + 1, steps, loss.item())
    return peft_model.eval()


def _zeros(layout: LoraLayout) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s) for k, s in layout.expected_shapes().items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo-adapter"), help="adapter folder")
    parser.add_argument("--description", default=GEN_DESCRIPTION, help="the task, in words")
    parser.add_argument("--input", default=GEN_INPUT, help="a sample input of that task")
    parser.add_argument(
        "--only-one",
        action="store_true",
        help="skip the second example (a held-out benchmark task, French book reviews)",
    )
    parser.add_argument("--fit", action="store_true", help="run the LoRA-fitting demo instead")
    parser.add_argument("--steps", type=int, default=12, help="LoRA steps of the --fit demo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.fit:
        fit_demo(args)
    else:
        generate_demo(args)
        if not args.only_one and args.description == GEN_DESCRIPTION:
            print("\nand a task no zoo expert was trained on (held out by the benchmark):")
            args.description, args.input = HELD_OUT_DESCRIPTION, HELD_OUT_INPUT
            args.out = args.out.with_name(args.out.name + "-held-out")
            generate_demo(args)


def generate_demo(args) -> None:
    """Description in, PEFT adapter out, base vs adapted answers."""
    from peft import PeftModel

    from hypergen.generator import HyperGen

    t0 = time.perf_counter()
    gen = HyperGen.from_pretrained()
    info = gen.info()
    print(
        f"loaded generator ({info['generator_parameters']:,} parameters), zoo of "
        f"{info['zoo_experts']} experts and {info['encoder']} in {time.perf_counter() - t0:.1f} s"
    )
    before = answer(gen.base.model, gen.base.tokenizer, args.input)
    told = answer(gen.base.model, gen.base.tokenizer, told_the_task(args.description, args.input))
    t0 = time.perf_counter()
    adapter = gen.generate(args.description)
    print(
        f"task: {args.description!r}\ngenerated a LoRA adapter in "
        f"{1000 * (time.perf_counter() - t0):.0f} ms; nearest zoo experts:"
    )
    for expert_id, _, sim in adapter.neighbors:
        print(f"  {sim:.3f}  {expert_id}")
    c = adapter.confidence
    agree = "n/a" if c.agreement is None else f"{c.agreement:.2f}"
    print(f"confidence: nearest expert {c.nearest:.2f}, neighbours agree {agree}")
    if c.warning:
        print(f"warning: {c.warning}")
    adapter.save_pretrained(args.out, overwrite=True)
    check = PeftModel.from_pretrained(load_base_model().model, str(args.out))
    n_lora = sum("lora_A" in name for name, _ in check.named_modules()) // 2
    print(f"saved {args.out}; PeftModel.from_pretrained loads it ({n_lora} LoRA layers)")
    after = answer(gen.apply(adapter), gen.base.tokenizer, args.input)
    print(
        f"input:                 {args.input}\n"
        f"base:                  {before}\n"
        f"base, told the task:   {told}\n"
        f"adapted (bare input):  {after}"
    )


def fit_demo(args) -> None:
    """The pre-generator demo: fit, save, reload, merge, compare."""
    logging.getLogger("app.demo").setLevel(logging.INFO)

    t0 = time.perf_counter()
    base = load_base_model()
    encoder = TaskEncoder()
    emb = encoder.encode(DESCRIPTION)
    print(f"loaded {base.name} and {encoder.name} in {time.perf_counter() - t0:.1f} s")
    print(f"task: {DESCRIPTION!r} -> {emb.shape[0]}-d embedding")
    before = answer(base.model, base.tokenizer, PROBE)

    peft_model = fit_lora(base.model, base.tokenizer, EXAMPLES, steps=args.steps)
    adapter = LoraAdapter.from_peft_model(
        peft_model, base.name, metadata={"description": DESCRIPTION}
    )
    adapter.canonical().save_pretrained(args.out, overwrite=True)
    loaded = LoraAdapter.from_pretrained(args.out)
    merged = merge_into_base(apply_adapter(peft_model.unload(), loaded))
    after = answer(merged, base.tokenizer, PROBE)

    print(f"adapter saved to {args.out} ({adapter.layout.num_params:,} LoRA parameters)")
    print(f"input:   {PROBE}")
    print(f"base:    {before}")
    print(f"adapted: {after}")


if __name__ == "__main__":
    main()
