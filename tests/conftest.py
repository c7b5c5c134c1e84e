"""Shared fixtures: a tiny Llama-style causal LM with a byte-level tokenizer, built in code, and a
tiny zoo with a fake generator over it (for the app and reliability tests)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hypergen.adapter_io import LoraAdapter
from hypergen.layout import LoraLayout

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: 256 byte tokens plus the chat special tokens (ids 256-258)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens(
        {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "pad_token": "<|pad|>"}
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """2 layers, width 16, grouped-query attention so q_proj and v_proj differ in shape."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=260,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=257,
        eos_token_id=256,
        pad_token_id=258,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A transformers folder holding the tiny model and its tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model():
    return tiny_llama()


def random_adapter(layout: LoraLayout, seed: int = 0, scale: float = 0.5) -> LoraAdapter:
    """An adapter with random A and B (B non-zero, so it changes the model's output)."""
    gen = torch.Generator().manual_seed(seed)
    weights = {
        k: scale * torch.randn(s, generator=gen) for k, s in layout.expected_shapes().items()
    }
    return LoraAdapter(layout, weights, "tiny-llama", {"seed": seed})


@pytest.fixture
def tiny_layout(tiny_model) -> LoraLayout:
    return LoraLayout.for_model(tiny_model)


@pytest.fixture(scope="session")
def fake_zoo(tmp_path_factory):
    """8 tiny experts embedded by a bag-of-words encoder (see tests/app/helpers.py)."""
    from tests.app.helpers import BagOfWordsEncoder, build_zoo

    return build_zoo(tmp_path_factory.mktemp("app") / "zoo", BagOfWordsEncoder())


@pytest.fixture(scope="session")
def fake_generator(fake_zoo, tiny_model_dir):
    """A real :class:`HyperGen` over the tiny zoo and model: a small CVAE whose output heads are
    randomised (as if trained, so samples differ) and the bag-of-words encoder of
    tests/app/helpers.py (no sentence-transformers model needed)."""
    from tests.app.helpers import tiny_generator

    return tiny_generator(fake_zoo.root, tiny_model_dir)
