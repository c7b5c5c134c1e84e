"""Scoring a model on a task's examples: multiple-choice log-likelihood accuracy where examples
have options, exact match of the greedy answer otherwise.

Multiple choice follows BIG-bench's log-likelihood scoring: each option is scored by the summed
log-probability of its tokens (and the end-of-turn token) after the chat-formatted prompt, and
the example counts as correct when the true option scores highest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from expert_zoo.tasks import Example
from hypergen.prompting import IGNORE_INDEX, build_prompt, make_batch


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 16,
    max_length: int = 256,
) -> list[tuple[float, int]]:
    """``(summed log-probability, token count)`` of each ``answer`` given its ``input``."""
    out: list[tuple[float, int]] = []
    for start in range(0, len(pairs), batch_size):
        batch = make_batch(tokenizer, pairs[start : start + batch_size], max_length=max_length)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        logp = logits[:, :-1].float().log_softmax(-1)
        picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        mask = labels != IGNORE_INDEX
        out.extend(zip((picked * mask).sum(-1).tolist(), mask.sum(-1).tolist(), strict=True))
    return out


def option_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 16,
    max_length: int = 256,
) -> list[float]:
    """Summed log-probability of each ``answer`` given its ``input``; one float per pair."""
    return [s for s, _ in answer_logprobs(model, tokenizer, pairs, batch_size, max_length)]


def answer_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]
) -> float:
    """Mean over ``examples`` of the per-token negative log-likelihood of the gold answer.

    A continuous companion to accuracy: on a few dozen examples, accuracy moves in steps of
    ``1/n`` and hides a method that makes the right answer likelier without making it win.
    """
    scored = answer_logprobs(model, tokenizer, [(e.input, e.output) for e in examples])
    return sum(-s / max(n, 1) for s, n in scored) / len(scored)


def normalise_answer(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding punctuation and quotes."""
    return re.sub(r"\s+", " ", text).strip().strip(".!?\"'`").strip().lower()


@torch.no_grad()
def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[str],
    max_new_tokens: int = 24,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers, batched with left padding."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        out: list[str] = []
        for start in range(0, len(inputs), batch_size):
            prompts = [build_prompt(tokenizer, x) for x in inputs[start : start + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(model.device)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        return out
    finally:
        tokenizer.padding_side = side


def score_examples(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]
) -> dict[str, float]:
    """``{"metric": "mc_accuracy" | "exact_match", "score", "n", "answer_loss"}``, and for
    multiple choice ``"choice_loss"``.

    ``answer_loss`` (:func:`answer_loss`) is the gold answer's per-token NLL. ``choice_loss`` is
    the mean of ``−log softmax(option scores)[gold]``: the cross-entropy of the choice that the
    accuracy counts, continuous where accuracy moves in steps of ``1/n``. Both: lower is better.
    """
    if not examples:
        raise ValueError("no examples to score")
    was_training = model.training
    model.eval()
    try:
        if all(e.options is not None for e in examples):
            score = {"metric": "mc_accuracy", **_mc_scores(model, tokenizer, examples)}
        else:
            answers = greedy_answers(model, tokenizer, [e.input for e in examples])
            hits = [
                normalise_answer(a) == normalise_answer(e.output)
                for a, e in zip(answers, examples, strict=True)
            ]
            score = {"metric": "exact_match", "score": sum(hits) / len(hits)}
            score["answer_loss"] = answer_loss(model, tokenizer, examples)
        return {**score, "n": len(examples)}
    finally:
        model.train(was_training)


def _mc_scores(model, tokenizer, examples: Sequence[Example]) -> dict[str, float]:
    """``score`` (the highest-scoring option is the gold one), ``choice_loss`` and
    ``answer_loss``, all from one pass over the options (the gold answer is one of them)."""
    pairs = [(e.input, option) for e in examples for option in e.options]
    scored = answer_logprobs(model, tokenizer, pairs)
    correct, choice, gold_nll, i = 0, 0.0, 0.0, 0
    for e in examples:
        block = scored[i : i + len(e.options)]
        i += len(e.options)
        sums = torch.tensor([s for s, _ in block], dtype=torch.float64)
        gold = e.options.index(e.output)
        correct += e.options[int(sums.argmax())] == e.output
        choice += float(sums.logsumexp(0) - sums[gold])
        gold_nll += -block[gold][0] / max(block[gold][1], 1)
    n = len(examples)
    return {"score": correct / n, "choice_loss": choice / n, "answer_loss": gold_nll / n}
