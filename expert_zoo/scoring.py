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
    """``(summed log-probability, token count)`` of each ``answer`` given its ``input``.

    The output layer runs only at the positions that predict answer tokens (on a 49k-token
    vocabulary it and its softmax are a quarter of the work when it runs at every position)."""
    decoder, head = _decoder_and_head(model)
    out: list[tuple[float, int]] = []
    for start in range(0, len(pairs), batch_size):
        batch = make_batch(tokenizer, pairs[start : start + batch_size], max_length=max_length)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        hidden = decoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        labels = batch["labels"][:, 1:]
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        logp = head(hidden[rows, cols]).float().log_softmax(-1)
        picked = logp.gather(-1, labels[rows, cols].unsqueeze(-1)).squeeze(-1)
        sums = torch.zeros(labels.shape[0], dtype=torch.float64).index_add_(
            0, rows, picked.double()
        )
        counts = torch.bincount(rows, minlength=labels.shape[0])
        out.extend(zip(sums.tolist(), counts.tolist(), strict=True))
    return out


def _decoder_and_head(model):
    """The transformer body (final norm included) and the output layer of a causal LM, also
    when it is wrapped by peft."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder(), inner.get_output_embeddings()


PREFILL_LOGITS = 1
"""Positions of the shared prompt whose logits are computed (0: all, as before 2026-12-02)."""


@torch.no_grad()
def shared_prompt_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    answers: Sequence[str],
    max_length: int = 256,
) -> list[tuple[float, int]] | None:
    """:func:`answer_logprobs` of every answer after one shared input, the prompt run once.

    The chat-formatted prompt goes through the model once; its key/value cache is repeated for
    the answers, which then run as one batch. The numbers equal :func:`answer_logprobs`'s (the
    same tokens at the same positions). Returns None when prompt + the longest answer exceeds
    ``max_length``: the uncached path would then cut the prompt differently per answer.
    (Greedy answers are not decoded from this cache: one token at a time for one example is
    slower on a CPU than :func:`greedy_answers`' batches, measured on winowhy.)
    """
    eos = tokenizer.eos_token_id
    p_ids = tokenizer(build_prompt(tokenizer, text), add_special_tokens=False)["input_ids"]
    a_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]
    if not answers or len(p_ids) + max(len(a) for a in a_ids) > max_length:
        return None
    device = model.device
    # the output layer only at the prompt's last position: the rest would be thrown away
    out = model(
        input_ids=torch.tensor([p_ids], device=device),
        use_cache=True,
        logits_to_keep=PREFILL_LOGITS,
    )
    first = out.logits[0, -1].float().log_softmax(-1)
    cache = out.past_key_values
    sums = [float(first[a[0]]) for a in a_ids]
    width = max(len(a) for a in a_ids) - 1
    if width > 0:
        cache.batch_repeat_interleave(len(a_ids))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        ids = torch.full((len(a_ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(a_ids), len(p_ids) + width), dtype=torch.long)
        mask[:, : len(p_ids)] = 1
        for i, a in enumerate(a_ids):
            ids[i, : len(a) - 1] = torch.tensor(a[:-1])
            mask[i, len(p_ids) : len(p_ids) + len(a) - 1] = 1
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache
        ).logits
        logp = logits.float().log_softmax(-1)
        for i, a in enumerate(a_ids):
            targets = torch.tensor(a[1:], device=device)
            sums[i] += float(logp[i, : len(a) - 1].gather(-1, targets[:, None]).sum())
    return list(zip(sums, [len(a) for a in a_ids], strict=True))


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
    max_length: int = 256,
) -> list[str]:
    """Greedy answers, batched with left padding. A prompt longer than ``max_length −
    max_new_tokens`` tokens is cut from the left, as the likelihood scoring cuts it (the model
    sees the same context in both; very long inputs cost no more than that)."""
    keep = max(1, max_length - max_new_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    for start in range(0, len(inputs), batch_size):
        rows = [
            tokenizer(build_prompt(tokenizer, x), add_special_tokens=False)["input_ids"][-keep:]
            for x in inputs[start : start + batch_size]
        ]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), 1
        gen = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        out.extend(tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True))
    return out


@torch.no_grad()
def generation_scores(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]
) -> dict[str, float | list]:
    """What a user sees on multiple-choice examples: the greedy answer (up to the longest
    option + 4 tokens), counted right (``gen_accuracy``) when it is the gold option and in
    format (``in_format``) when it is one of the options (both after
    :func:`normalise_answer`); ``answers`` keeps the texts."""
    answers = greedy_answers(
        model, tokenizer, [e.input for e in examples], _longest_option(tokenizer, examples) + 4
    )
    return _greedy_fields(examples, answers)


def score_examples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    greedy: bool = False,
) -> dict[str, float]:
    """``{"metric": "mc_accuracy" | "exact_match", "score", "n", "answer_loss", "correct"}``,
    and for multiple choice ``"choice_loss"``; ``correct`` holds 1 or 0 per example (for paired
    intervals over examples).

    With ``greedy`` multiple-choice examples also get :func:`generation_scores`' fields.
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
            score = {
                "metric": "mc_accuracy",
                **mc_scores(model, tokenizer, examples, greedy=greedy),
            }
        else:
            # an answer longer than the longest gold one (+4 tokens) can never match exactly
            longest = max(
                len(tokenizer(e.output, add_special_tokens=False)["input_ids"]) for e in examples
            )
            answers = greedy_answers(
                model, tokenizer, [e.input for e in examples], min(24, longest + 4)
            )
            hits = [
                normalise_answer(a) == normalise_answer(e.output)
                for a, e in zip(answers, examples, strict=True)
            ]
            score = {"metric": "exact_match", "score": sum(hits) / len(hits)}
            score["correct"] = [int(h) for h in hits]
            score["answer_loss"] = answer_loss(model, tokenizer, examples)
        return {**score, "n": len(examples)}
    finally:
        model.train(was_training)


def option_scores(
    model, tokenizer, examples: Sequence[Example], shared: bool = True
) -> list[list[tuple[float, int]]]:
    """Per example, ``(summed log-probability, tokens)`` of each option. With ``shared`` each
    example's prompt runs once for all its options (:func:`shared_prompt_logprobs`); examples
    whose prompt is too long for that, and all of them without ``shared``, go through
    :func:`answer_logprobs` batched over (prompt, option) pairs."""
    blocks: list[list[tuple[float, int]] | None] = [
        shared_prompt_logprobs(model, tokenizer, e.input, e.options) if shared else None
        for e in examples
    ]
    rest = [i for i, b in enumerate(blocks) if b is None]
    pairs = [(examples[i].input, option) for i in rest for option in examples[i].options]
    scored, start = answer_logprobs(model, tokenizer, pairs) if pairs else [], 0
    for i in rest:
        blocks[i] = scored[start : start + len(examples[i].options)]
        start += len(examples[i].options)
    return blocks


def mc_scores(
    model, tokenizer, examples: Sequence[Example], shared: bool = True, greedy: bool = False
) -> dict[str, float | list]:
    """``score`` (the highest-scoring option is the gold one), ``choice_loss`` and
    ``answer_loss``, all from one pass over the options (the gold answer is one of them), and
    ``correct``: per example, 1 when the gold option scored highest. With ``greedy``, also
    :func:`generation_scores`' fields."""
    blocks = option_scores(model, tokenizer, examples, shared)
    correct, choice, gold_nll = [], 0.0, 0.0
    for e, block in zip(examples, blocks, strict=True):
        sums = torch.tensor([s for s, _ in block], dtype=torch.float64)
        gold = e.options.index(e.output)
        correct.append(int(e.options[int(sums.argmax())] == e.output))
        choice += float(sums.logsumexp(0) - sums[gold])
        gold_nll += -block[gold][0] / max(block[gold][1], 1)
    n = len(examples)
    out = {
        "score": sum(correct) / n,
        "choice_loss": choice / n,
        "answer_loss": gold_nll / n,
        "correct": correct,
    }
    if greedy:
        out.update(generation_scores(model, tokenizer, examples))
    return out


def _longest_option(tokenizer, examples: Sequence[Example]) -> int:
    return max(
        len(tokenizer(o, add_special_tokens=False)["input_ids"])
        for e in examples
        for o in e.options
    )


def _greedy_fields(examples: Sequence[Example], answers: Sequence[str]) -> dict:
    right, fmt = [], []
    for a, e in zip(answers, examples, strict=True):
        said = normalise_answer(a)
        right.append(int(said == normalise_answer(e.output)))
        fmt.append(int(said in {normalise_answer(o) for o in e.options}))
    n = len(examples)
    return {
        "gen_accuracy": sum(right) / n,
        "in_format": sum(fmt) / n,
        "gen_correct": right,
        "answers": [a.strip() for a in answers],
    }
