"""The public HyperGen API and the hypergen CLI, on the tiny model and a tiny zoo."""

import numpy as np
import pytest
import torch
from peft import PeftModel

from expert_zoo.store import ExpertRecord, ExpertZoo, expert_id_for
from hypergen import DescriptionError, HyperGen, LoraLayout
from hypergen.bank import ExpertBank
from hypergen.cli import main
from hypergen.cvae import CheckpointError
from hypergen.encoder import TaskEncoder
from hypergen.generator import GeneratedAdapter
from tests.conftest import random_adapter, tiny_llama
from training.module import new_model

TASKS = [
    "Reverse the letters of a word",
    "Add two small numbers",
    "Say if a review is positive",
    "Translate a word to French",
    "Uppercase the sentence",
    "Count the vowels in a word",
    "Pick the larger of two numbers",
    "Tell whether a sentence is toxic",
]


@pytest.fixture(scope="module")
def encoder():
    return TaskEncoder()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, encoder):
    """A zoo of 8 tiny experts and an (untrained) generator for it."""
    root = tmp_path_factory.mktemp("gen")
    layout = LoraLayout.for_model(tiny_llama())
    zoo = ExpertZoo(root / "zoo")
    for i, text in enumerate(TASKS):
        descriptions = [text, f"Task: {text.lower()}."]
        record = ExpertRecord(
            expert_id=expert_id_for(f"t:{i}"),
            task_id=f"t:{i}",
            family=f"f{i}",
            descriptions=descriptions,
            encoder=encoder.name,
            base_model="tiny-llama",
            layout=layout.to_dict(),
        )
        zoo.add(record, random_adapter(layout, seed=i, scale=0.2), encoder.encode(descriptions))
    bank = ExpertBank.load(zoo.root)
    torch.manual_seed(0)
    model = new_model(bank, np.arange(len(bank)), k=3)
    with torch.no_grad():  # as if trained: heads start at zero, which ignores the latent
        for name, param in model.named_parameters():
            if name.startswith("heads."):
                param.normal_(0, 0.02)
    model.save_pretrained(root / "generator")
    return root


def _gen(setup, tiny_model_dir):
    return HyperGen.from_pretrained(setup / "generator", setup / "zoo", base_model=tiny_model_dir)


def test_generate_save_and_load_with_peft(setup, tiny_model_dir, tmp_path):
    gen = _gen(setup, tiny_model_dir)
    adapter = gen.generate("Decide if a restaurant review is positive or negative")
    assert len(adapter.neighbors) == 3
    assert adapter.neighbors[0][0] == expert_id_for("t:2")  # the sentiment expert
    assert adapter.neighbors[0][2] >= adapter.neighbors[1][2]
    adapter.save_pretrained(tmp_path / "a")
    peft_model = PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "a")).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    applied = gen.apply(adapter)
    with torch.no_grad():
        assert (peft_model(ids).logits - applied(ids).logits).abs().max() < 1e-4
    swapped = gen.apply(gen.generate("Add two numbers"))
    assert swapped is applied  # swapped in place, the base is not reloaded


def test_seeds_samples_and_batches(setup, tiny_model_dir):
    gen = _gen(setup, tiny_model_dir)
    text = "Reverse a word"
    a = gen.sample(text, 2, temperature=1.0, seed=1)
    b = gen.sample(text, 2, temperature=1.0, seed=1)
    c = gen.sample(text, 2, temperature=1.0, seed=2)
    key = "q_proj.B"
    assert torch.equal(a[0].adapter.weights[key], b[0].adapter.weights[key])
    assert not torch.equal(a[0].adapter.weights[key], c[0].adapter.weights[key])
    assert not torch.equal(a[0].adapter.weights[key], a[1].adapter.weights[key])
    batch = gen.generate_batch([text, "Add two numbers"])
    assert [[g.description for g in row] for row in batch] == [[text], ["Add two numbers"]]
    single = gen.generate(text)
    assert isinstance(single, GeneratedAdapter)
    torch.testing.assert_close(batch[0][0].adapter.weights[key], single.adapter.weights[key])
    drawn = gen.generate(text, temperature=1.0, seed=1)  # one draw: the first of sample()'s
    torch.testing.assert_close(drawn.adapter.weights[key], a[0].adapter.weights[key])
    two = gen.generate_batch([text, "Add two numbers"], num_samples=2, temperature=1.0, seed=1)
    assert [len(row) for row in two] == [2, 2]
    with pytest.raises(DescriptionError, match="use generate_batch"):
        gen.generate([text])
    with pytest.raises(DescriptionError, match="use generate\\(\\) for one"):
        gen.generate_batch(text)


def test_an_untrained_generator_says_its_samples_are_all_the_merge(setup, tiny_model_dir):
    gen = _gen(setup, tiny_model_dir)
    assert gen.samples_differ
    with torch.no_grad():
        for name, param in gen.cvae.named_parameters():
            if name.startswith("heads."):
                param.zero_()  # back to a fresh decoder: the latent no longer matters
    assert not gen.samples_differ
    with pytest.warns(UserWarning, match="all 2 samples are the same adapter"):
        a, b = gen.sample("Reverse a word", 2, temperature=1.0)
    assert all(torch.equal(a.adapter.weights[k], v) for k, v in b.adapter.weights.items())


def test_mixture_noise_gives_each_sample_its_own_neighbour_mixture(setup, tiny_model_dir):
    """With ``mix_noise``, an untrained decoder's samples differ: each is the merge of the same
    neighbours with its own weights (checked against merge_pairs), reproducibly by seed; the
    prior mean (temperature 0) is the usual adapter."""
    from hypergen.conditioning import from_chunks, merge_pairs, mixture_inputs

    gen = _gen(setup, tiny_model_dir)
    with torch.no_grad():
        for name, param in gen.cvae.named_parameters():
            if name.startswith("heads."):
                param.zero_()  # the merge itself (no layer scales in this generator)
    text, key = "Reverse a word", "q_proj.B"
    plain = gen.generate(text)
    gen.cvae.config.mix_noise = 1.0
    assert gen.samples_differ
    torch.testing.assert_close(gen.generate(text).adapter.weights[key], plain.adapter.weights[key])
    a = gen.sample(text, 3, temperature=1.0, seed=4)
    b = gen.sample(text, 3, temperature=1.0, seed=4)
    assert all(
        torch.equal(x.adapter.weights[key], y.adapter.weights[key])
        for x, y in zip(a, b, strict=True)
    )
    assert not torch.allclose(a[0].adapter.weights[key], a[1].adapter.weights[key])
    assert [g.neighbors for g in a] == [plain.neighbors] * 3

    cond = gen.cvae.condition_inputs(gen.bank, gen.encoder.encode([text]))
    mixed = mixture_inputs(gen.bank, cond, 3, gen.cvae.config.tau, 1.0, torch.Generator())
    w = mixed["mixture"]
    assert w.shape == (3, 3) and torch.allclose(w.sum(-1), torch.ones(3))
    assert not torch.allclose(w[0], w[1])
    nbrs = gen.bank.gather(cond["neighbours"][0])
    a_, b_ = merge_pairs(nbrs["q_proj.A"][None], nbrs["q_proj.B"][None], w[2:])
    expected = (b_ @ a_)[0]
    got_a, got_b = from_chunks(gen.bank.layout, mixed["merge.q_proj"][2], "q_proj")
    torch.testing.assert_close(got_b @ got_a, expected, atol=1e-5, rtol=1e-4)
    gen.cvae.config.mix_noise = 0.0


@pytest.mark.parametrize("bad", ["", "   ", "x" * 100_000, None, 3])
def test_bad_descriptions(setup, tiny_model_dir, bad):
    with pytest.raises((DescriptionError, ValueError)):
        _gen(setup, tiny_model_dir).generate(bad)


def test_mismatched_checkpoint_and_missing_generator(setup, tmp_path, encoder):
    bank = ExpertBank.load(setup / "zoo")
    other = LoraLayout.for_model(tiny_llama(), rank=4)
    config_layout = bank.layout
    bank.layout = other
    with pytest.raises(CheckpointError, match="rank: expected 4, found 8"):
        from hypergen.cvae import LoraCVAE

        LoraCVAE.from_pretrained(setup / "generator", expected_layout=other)
    bank.layout = config_layout
    with pytest.raises(CheckpointError, match="no generator checkpoint"):
        HyperGen.from_pretrained(tmp_path, setup / "zoo")


def test_cli_generate_info_and_errors(setup, tiny_model_dir, tmp_path, capsys):
    common = [
        "--generator",
        str(setup / "generator"),
        "--zoo",
        str(setup / "zoo"),
        "--base-model",
        str(tiny_model_dir),
    ]
    assert main([*common, "generate", "Count vowels", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "nearest zoo experts" in out
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    assert main([*common, "generate", "Count vowels", "--out", str(tmp_path / "a")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*common, "generate", " ", "--out", str(tmp_path / "b")]) == 2
    assert main([*common, "info"]) == 0
    assert '"zoo_experts": 8' in capsys.readouterr().out
    assert main([*common, "chat", "--describe", "Count vowels", "--prompt", "banana"]) == 0
