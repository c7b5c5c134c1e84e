"""Several zoos served as one bank, and the confidence every generated adapter carries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from expert_zoo.store import ExpertRecord, ExpertZoo, expert_id_for
from hypergen import cli
from hypergen.bank import BankError, ExpertBank
from hypergen.confidence import Confidence, agreement, gram, sample_spread
from hypergen.layout import LoraLayout, delta_weights
from tests.app.helpers import BagOfWordsEncoder, build_zoo, tiny_generator
from tests.conftest import random_adapter, tiny_llama


def _one_expert_zoo(root, text: str, layout: LoraLayout, expert: str = "mine"):
    encoder = BagOfWordsEncoder()
    zoo = ExpertZoo(root)
    record = ExpertRecord(
        expert_id=expert_id_for(f"user:{expert}"),
        task_id=f"user:{expert}",
        family=expert,
        descriptions=[text],
        encoder=encoder.name,
        base_model="tiny-llama",
        layout=layout.to_dict(),
    )
    adapter = random_adapter(layout, seed=99, scale=0.2)
    adapter.base_model = "tiny-llama"
    zoo.add(record, adapter, encoder.encode([text]))
    return zoo


def test_a_bank_over_two_zoos_retrieves_from_both(fake_zoo, tmp_path):
    layout = LoraLayout.for_model(tiny_llama())
    mine = _one_expert_zoo(tmp_path / "mine", "Spell a word backwards letter by letter", layout)
    bank = ExpertBank.load([fake_zoo.root, mine.root])
    assert len(bank) == len(fake_zoo) + 1 and bank.name == "zoo+mine"
    assert bank.sources[-1] == "mine" and bank.sources[0] == "zoo"
    query = BagOfWordsEncoder().encode(["Spell a word backwards letter by letter"])
    idx, sims = bank.search(query, 3)
    assert bank.expert_ids[idx[0, 0]] == "user__mine" and sims[0, 0] == pytest.approx(1.0)
    ours = bank.gather(torch.tensor([len(bank) - 1]))
    stored = mine.load_adapter("user__mine").weights
    for key, value in stored.items():
        torch.testing.assert_close(ours[key][0], value)
    shipped = ExpertBank.load(fake_zoo.root)
    idx2, _ = bank.search(BagOfWordsEncoder().encode(["Add two small numbers"]), 1)
    assert (
        bank.expert_ids[idx2[0, 0]]
        == shipped.expert_ids[
            shipped.search(BagOfWordsEncoder().encode(["Add two small numbers"]), 1)[0][0, 0]
        ]
    )


def test_zoos_that_do_not_fit_together_are_refused(fake_zoo, tmp_path):
    layout = LoraLayout.for_model(tiny_llama())
    other = LoraLayout.for_model(tiny_llama(), layout.modules, rank=layout.rank // 2, alpha=4.0)
    wide = _one_expert_zoo(tmp_path / "wide", "Anything at all", other)
    with pytest.raises(BankError, match="differ in their LoRA layout"):
        ExpertBank.load([fake_zoo.root, wide.root])
    twin = build_zoo(tmp_path / "twin", BagOfWordsEncoder())  # the same expert ids again
    with pytest.raises(BankError, match="is in both zoo"):
        ExpertBank.load([fake_zoo.root, twin.root])
    with pytest.raises(BankError, match="does not exist: pass a zoo folder"):
        ExpertBank.load([fake_zoo.root, tmp_path / "nowhere"])


def test_agreement_and_spread_match_dense_delta_weights():
    layout = LoraLayout.for_model(tiny_llama())
    adapters = [random_adapter(layout, seed=s, scale=0.3) for s in range(3)]
    stacked = {k: torch.stack([a.weights[k] for a in adapters]) for k in adapters[0].weights}
    dense = [
        torch.cat([d.flatten() for d in delta_weights(layout, a.weights).values()])
        for a in adapters
    ]
    g = gram(layout, stacked, stacked)
    for i in range(3):
        for j in range(3):
            assert float(g[i, j]) == pytest.approx(float(dense[i] @ dense[j]), rel=1e-4)
    cos = [
        float(torch.nn.functional.cosine_similarity(dense[i], dense[j], dim=0))
        for i, j in ((0, 1), (0, 2), (1, 2))
    ]
    assert agreement(layout, stacked) == pytest.approx(np.mean(cos), abs=1e-5)
    mean = sum(dense) / 3
    spread = np.mean([float((d - mean).norm() / mean.norm()) for d in dense])
    assert sample_spread(layout, stacked) == pytest.approx(spread, rel=1e-4)
    same = {k: v[:1].repeat(2, *[1] * (v.dim() - 1)) for k, v in stacked.items()}
    assert agreement(layout, same) == pytest.approx(1.0) and sample_spread(
        layout, same
    ) == pytest.approx(0.0, abs=1e-6)


def test_a_low_similarity_adapter_carries_the_warning(fake_zoo, tiny_model_dir, monkeypatch):
    generator = tiny_generator(fake_zoo.root, tiny_model_dir)
    made = generator.generate("Add two small numbers")
    c = made.confidence
    assert isinstance(c, Confidence) and -1 <= c.weighted <= c.nearest <= 1.0001
    assert c.agreement is not None and c.threshold is None and c.warning is None
    generator.threshold = 2.0  # above any similarity: every adapter is "far"
    far = generator.generate("Add two small numbers")
    assert far.confidence.low and "no zoo expert is close to this task" in far.confidence.warning
    assert far.adapter.metadata["confidence"]["low"] is True
    assert "Grow" in far.confidence.warning and "expert-zoo add" in far.confidence.warning


def test_the_cli_prints_the_warning_and_checks_before_loading(
    fake_zoo, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    generator = tiny_generator(fake_zoo.root, tiny_model_dir)
    generator.threshold = 2.0
    loads = []

    def load(args):
        loads.append(args.zoo)
        return generator

    monkeypatch.setattr(cli, "_load", load)
    out = tmp_path / "adapter"
    assert (
        cli.main(
            [
                "--zoo",
                str(fake_zoo.root),
                "--zoo",
                str(fake_zoo.root),
                "generate",
                "Add two small numbers",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "warning: no zoo expert is close to this task" in printed
        and "confidence: nearest" in printed
    )
    assert loads == [[fake_zoo.root, fake_zoo.root]]  # --zoo repeats
    # an empty description and an existing folder fail before anything loads
    assert cli.main(["generate", "   ", "--out", str(tmp_path / "x")]) == 2
    assert cli.main(["generate", "Add two small numbers", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "pass --overwrite to replace it" in err
    assert len(loads) == 1
