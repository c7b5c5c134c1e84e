import torch

from hypergen.prompting import IGNORE_INDEX, answer, build_prompt, make_batch
from tests.conftest import byte_tokenizer, tiny_llama


def test_batch_masks_prompt_and_padding():
    tok = byte_tokenizer()
    batch = make_batch(tok, [("abc", "xy"), ("a much longer input", "z")], max_length=64)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    first = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert tok.decode(first) == "xy<|im_end|>"
    assert (labels[0][mask[0] == 0] == IGNORE_INDEX).all()
    prompt = build_prompt(tok, "abc")
    assert prompt.endswith("<|im_start|>assistant\n") and "abc" in prompt


def test_truncation_keeps_the_answer():
    tok = byte_tokenizer()
    batch = make_batch(tok, [("x" * 500, "answer")], max_length=32)
    assert batch["input_ids"].shape[1] == 32
    kept = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert tok.decode(kept) == "answer<|im_end|>"


def test_answer_is_deterministic():
    tok, model = byte_tokenizer(), tiny_llama()
    torch.manual_seed(0)
    assert answer(model, tok, "hello", max_new_tokens=5) == answer(
        model, tok, "hello", max_new_tokens=5
    )
