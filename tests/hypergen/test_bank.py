import numpy as np
import pytest
import torch

from expert_zoo.store import ExpertZoo
from hypergen.bank import BankError, ExpertBank, read_zoo_export
from hypergen.layout import LoraLayout
from tests.conftest import tiny_llama
from tests.expert_zoo.helpers import make_expert, unit_rows


@pytest.fixture(scope="module")
def bank_file(tmp_path_factory):
    layout = LoraLayout.for_model(tiny_llama())
    zoo = ExpertZoo(tmp_path_factory.mktemp("zoo"))
    for i in range(6):
        zoo.add(*make_expert(layout, i, n_desc=1 + i % 3))
    return zoo.export(tmp_path_factory.mktemp("export") / "zoo.safetensors")


def test_bank_loads_export(bank_file):
    bank = ExpertBank.from_export(bank_file)
    assert len(bank) == 6 and bank.dim == 8
    assert (
        bank.weights["q_proj.A"].shape == (6, 2, 8, 16)
        and bank.weights["q_proj.A"].dtype == torch.float32
    )
    assert bank.families[2] == "fam2" and len(bank.descriptions[2]) == 3


def test_search_matches_brute_force_and_excludes(bank_file):
    bank = ExpertBank.from_export(bank_file)
    queries = unit_rows(5, seed=99)
    idx, sims = bank.search(queries, k=3)
    full = queries @ bank.embeddings.T
    for q in range(5):
        best = {}
        for row, expert in enumerate(bank.row_expert):
            best[int(expert)] = max(best.get(int(expert), -2.0), full[q, row])
        expected = sorted(best, key=best.get, reverse=True)[:3]
        assert idx[q].tolist() == expected
        np.testing.assert_allclose(sims[q], [best[e] for e in expected], atol=1e-5)
    idx_ex, _ = bank.search(queries, k=3, exclude=[{int(i)} for i in idx[:, 0]])
    assert all(idx[q, 0] not in idx_ex[q] for q in range(5))
    with pytest.raises(BankError, match="cannot return 6 neighbours"):
        bank.search(queries[:1], k=6, exclude=[{0}])
    with pytest.raises(BankError, match="cannot return 7 neighbours"):
        bank.search_exact(queries[:1], k=7)


def test_two_stage_search_of_a_big_bank(bank_file):
    """Above ``approximate_above`` experts, search scans only the shortlist's rows: with the
    whole bank shortlisted it is exact; with less, each returned similarity is still the
    expert's exact best row, and a shortlist that exclusions empty falls back to every row."""
    bank = ExpertBank.from_export(bank_file)
    queries = unit_rows(5, seed=7)
    exclude = [{q % 6} for q in range(5)]
    exact = bank.search_exact(queries, 3, exclude)
    bank.approximate_above, bank.shortlist = 0, 6
    for got, want in zip(bank.search(queries, 3, exclude), exact, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    bank.shortlist = 3
    idx, sims = bank.search(queries, 2)
    full = queries @ bank.embeddings.T
    for q in range(5):
        best = [full[q, bank.row_expert == e].max() for e in idx[q]]
        np.testing.assert_allclose(sims[q], best, atol=1e-6)
        assert sims[q, 0] >= sims[q, 1]
    bank.shortlist = 1  # 1 + 1 excluded leaves one expert for k=3: every row is scanned
    for got, want in zip(bank.search(queries, 3, exclude), exact, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_bad_export_files(tmp_path):
    with pytest.raises(BankError, match="does not exist"):
        read_zoo_export(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(BankError, match="not a readable safetensors"):
        read_zoo_export(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(BankError, match="is not a hypergen-expert-zoo-export/1 file"):
        read_zoo_export(tmp_path / "other.safetensors")


def test_zoo_folder_and_export_give_the_same_bank(bank_file, tmp_path):
    zoo = ExpertZoo(tmp_path / "zoo")
    layout = LoraLayout.for_model(tiny_llama())
    for i in range(6):
        zoo.add(*make_expert(layout, i, n_desc=1 + i % 3))
    a, b = ExpertBank.load(zoo.root), ExpertBank.load(bank_file)
    assert a.expert_ids == b.expert_ids
    np.testing.assert_array_equal(a.row_expert, b.row_expert)
    np.testing.assert_allclose(a.embeddings, b.embeddings)
    for k in a.weights:
        torch.testing.assert_close(a.weights[k], b.weights[k])
    with pytest.raises(BankError, match="not a readable zoo folder"):
        ExpertBank.from_zoo_folder(tmp_path)


def test_export_bank_reads_only_the_experts_asked_for(bank_file):
    lazy, eager = ExpertBank.from_export(bank_file), ExpertBank(read_zoo_export(bank_file))
    experts = torch.tensor([[4, 1], [1, 1]])
    got, want = lazy.gather(experts), eager.gather(experts)
    assert lazy._weights is None  # nothing but the asked-for rows was read
    assert got["q_proj.B"].shape == (2, 2, *eager.weights["q_proj.B"].shape[1:])
    for k in want:
        assert got[k].dtype == torch.float32
        torch.testing.assert_close(got[k], want[k])
        torch.testing.assert_close(lazy.weights[k], eager.weights[k])  # all, on demand
    emb = eager.expert_embeddings
    assert emb.shape == (6, 8) and lazy.expert_embeddings is lazy.expert_embeddings  # cached
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(6))


def test_condition_inputs_are_the_same_from_memory_and_from_disk(bank_file):
    """A bank with its weights in memory merges the neighbours in place (``resident``); one
    that reads them from its export file gathers them first: the same condition inputs."""
    from hypergen.conditioning import condition_inputs

    lazy, eager = ExpertBank.from_export(bank_file), ExpertBank(read_zoo_export(bank_file))
    assert lazy.resident is None and eager.resident is eager.weights
    queries = unit_rows(3, seed=11)
    got = condition_inputs(lazy, queries, k=3, exclude=[{0}, set(), {2, 5}])
    want = condition_inputs(eager, queries, k=3, exclude=[{0}, set(), {2, 5}])
    assert lazy.resident is None  # still only the neighbours were read
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key])


def test_export_bank_refuses_nan_weights_of_the_experts_it_reads(bank_file, tmp_path):
    poisoned = tmp_path / "poisoned.safetensors"
    poisoned.write_bytes(bank_file.read_bytes())
    bank = ExpertBank.from_export(poisoned)
    begin, _, _, step = bank._source._rows["v_proj.B"]
    with open(poisoned, "r+b") as f:  # expert 3's v_proj.B becomes fp16 NaNs
        f.seek(begin + 3 * step)
        f.write(np.full(step // 2, 0x7E00, dtype=np.uint16).tobytes())
    bank = ExpertBank.from_export(poisoned)
    assert torch.isfinite(bank.gather(torch.tensor([1, 4]))["v_proj.B"]).all()
    with pytest.raises(BankError, match=r"expert\(s\) \[3\] hold NaN or inf in 'v_proj.B'"):
        bank.gather(torch.tensor([1, 3]))
