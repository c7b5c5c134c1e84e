"""The shared-prompt (key/value cached) option scoring against the uncached one."""

from __future__ import annotations

import pytest
import torch

from expert_zoo.scoring import answer_logprobs, mc_scores, option_scores, shared_prompt_logprobs
from expert_zoo.tasks import Example
from tests.conftest import byte_tokenizer, tiny_llama


def test_cached_option_scores_equal_the_uncached_ones():
    torch.manual_seed(0)
    tok, model = byte_tokenizer(), tiny_llama().eval()
    options = ("a", "bb", "a longer option", "")
    options = tuple(o for o in options if o)
    for text in ("q", "what is two plus two?", "x" * 60):
        cached = shared_prompt_logprobs(model, tok, text, options)
        plain = answer_logprobs(model, tok, [(text, o) for o in options])
        assert cached is not None and [n for _, n in cached] == [n for _, n in plain]
        for (a, _), (b, _) in zip(cached, plain, strict=True):
            assert a == pytest.approx(b, abs=1e-4)


def test_mc_scores_are_the_same_with_and_without_the_shared_prompt():
    tok, model = byte_tokenizer(), tiny_llama().eval()
    examples = [
        Example("first question", "yes", ("yes", "no")),
        Example("second, longer question " * 3, "maybe not", ("yes", "no", "maybe not")),
        Example("y" * 300, "no", ("yes", "no")),  # too long to share: the uncached path
    ]
    assert shared_prompt_logprobs(model, tok, examples[2].input, examples[2].options) is None
    cached, plain = mc_scores(model, tok, examples), mc_scores(model, tok, examples, shared=False)
    assert cached["correct"] == plain["correct"]
    for key in ("score", "choice_loss", "answer_loss"):
        assert cached[key] == pytest.approx(plain[key], abs=1e-4)
    blocks = option_scores(model, tok, examples)
    assert [len(b) for b in blocks] == [2, 3, 2]


def test_greedy_fields_of_mc_scores_and_long_prompts():
    from expert_zoo.scoring import generation_scores, greedy_answers

    tok, model = byte_tokenizer(), tiny_llama().eval()
    examples = [
        Example("first question", "yes", ("yes", "no")),
        Example("another, longer question here", "maybe", ("yes", "no", "maybe")),
    ]
    with_greedy = mc_scores(model, tok, examples, greedy=True)
    alone = generation_scores(model, tok, examples)
    assert with_greedy["gen_correct"] == alone["gen_correct"]
    assert (
        with_greedy["in_format"]
        == sum(
            a.strip().lower().strip(".!?\"'`") in {"yes", "no", "maybe"} for a in alone["answers"]
        )
        / 2
    )
    # a prompt longer than the scoring window is cut from the left, as likelihood scoring cuts it
    cut = greedy_answers(model, tok, ["z" * 100 + "end"], max_new_tokens=4, max_length=40)
    same = greedy_answers(model, tok, ["z" * 100 + "end"], max_new_tokens=4, max_length=40)
    assert cut == same and len(cut) == 1
