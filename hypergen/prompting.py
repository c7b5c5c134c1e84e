"""Prompts, training batches and answers, all through the base model's chat template.

One format everywhere (expert training, evaluation, the demo): the task input is the user turn,
the answer is the assistant turn, and the loss covers the answer tokens (and the end-of-turn
token) only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100


def told_the_task(description: str, text: str) -> str:
    """The input as a user without hypergen would send it: the task described, a blank line,
    then the input (the benchmark's base+description, the app's and ``make run``'s second
    answer)."""
    return f"{description}\n\n{text}"


def build_prompt(tokenizer: PreTrainedTokenizerBase, text: str, system: str | None = None) -> str:
    """The chat-formatted prompt for ``text``, ending where the assistant's answer starts."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    if tokenizer.chat_template is None:
        return text + "\n"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt + answer + eos`` and labels masking the prompt.

    When too long, the prompt is cut from the left so the answer always survives.
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    a_ids = a_ids[:max_length]
    p_ids = p_ids[max(0, len(p_ids) - (max_length - len(a_ids))) :]
    return p_ids + a_ids, [IGNORE_INDEX] * len(p_ids) + a_ids


def make_batch(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    max_length: int = 256,
    system: str | None = None,
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` for ``(input, answer)`` pairs."""
    rows = [
        encode_pair(tokenizer, build_prompt(tokenizer, x, system), y, max_length) for x, y in pairs
    ]
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, lab) in enumerate(rows):
        ids[i, : len(row)], labels[i, : len(lab)], mask[i, : len(row)] = (
            torch.tensor(row),
            torch.tensor(lab),
            1,
        )
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    max_new_tokens: int = 32,
    system: str | None = None,
) -> str:
    """Greedy answer of ``model`` to ``text``."""
    prompt = build_prompt(tokenizer, text, system)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    out = model.generate(
        **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
