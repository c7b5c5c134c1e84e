"""Tests of the generator model (hypergen.cvae) on a tiny structured zoo, no training loop.

The zoo (``structured_bank``) has three hidden factors per expert: an angle θ (cos θ, sin θ) and
a height h. Its description embeddings are noisy unit vectors in a 3-d subspace spanned by the
factors; its LoRA weights are balanced factors (B = U√S, A = √S Vᵀ, i.e. near canonical form)
plus a linear function of the factors plus noise, then put in canonical form like a real zoo's
(the shared part already follows the sign rule, so the small variations do not flip signs).
Neighbours (close in θ) predict the θ part; the h part must be read from the embedding, so a
generator that beats the neighbours' merge has learnt from the condition.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hypergen.adapter_io import LoraAdapter
from hypergen.apply import apply_adapter
from hypergen.bank import ExpertBank, ZooExport
from hypergen.canonical import canonical_pair
from hypergen.conditioning import merge_pairs
from hypergen.cvae import (
    CheckpointError,
    CVAEConfig,
    LoraCVAE,
    chunk_size,
    condition_inputs,
    dw_sq_error,
    expert_embeddings,
    from_chunks,
    to_chunks,
)
from hypergen.errors import LayoutError
from hypergen.layout import LoraLayout
from tests.conftest import tiny_llama

DIM = 16
ENCODER = "test-encoder"
SMOLLM2_PARAMS = 1_568_962
"""Parameters of the default-config generator for SmolLM2-135M (30 layers, q_proj 576×576,
v_proj 192×576, r=8, head_rank 32): the size of ~3.4 experts (460,800 parameters each)."""


def tiny_layout(rank: int = 8) -> LoraLayout:
    return LoraLayout.for_model(tiny_llama(), rank=rank)


def structured_bank(
    layout: LoraLayout | None = None,
    num_experts: int = 12,
    family_size: int = 2,
    n_desc: int = 2,
    dim: int = DIM,
    seed: int = 0,
) -> ExpertBank:
    """A zoo whose weights are a smooth function of the description embeddings (see the module
    docstring); experts ``i`` and ``i + 1`` share a family when ``family_size`` is 2."""
    layout = layout or tiny_layout()
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    theta = 2 * math.pi * (np.arange(num_experts) + 0.2 * rng.random(num_experts)) / num_experts
    factors = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-1, 1, num_experts)], 1)
    weights = {}
    for m in layout.modules:
        (out, inp), r, nl = layout.shapes[m], layout.rank, layout.num_layers
        root = torch.linspace(2.0, 0.7, r)  # balanced factors B = U√S, A = √S Vᵀ
        u, v = (torch.linalg.qr(torch.randn(n, r, generator=gen))[0] for n in (out, inp))
        sign = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))  # the canonical sign rule
        u, v = u * sign, v * sign
        for ab, base in (("A", root[:, None] * v.T), ("B", u * root)):
            directions = 0.03 * torch.randn(3, nl, *base.shape, generator=gen)
            smooth = torch.einsum(
                "ef,f...->e...", torch.tensor(factors, dtype=torch.float32), directions
            )
            noise = 0.003 * torch.randn(num_experts, nl, *base.shape, generator=gen)
            weights[f"{m}.{ab}"] = base + smooth + noise
        weights[f"{m}.A"], weights[f"{m}.B"] = canonical_pair(weights[f"{m}.A"], weights[f"{m}.B"])
    scale = np.array([1.0, 1.0, 0.5])  # the third factor moves embeddings less than weights
    basis = np.linalg.qr(rng.standard_normal((dim, 3)))[0]
    rows = [
        basis @ (f * scale) + 0.05 * rng.standard_normal(dim)
        for f in factors
        for _ in range(n_desc)
    ]
    rows = [row / np.linalg.norm(row) for row in rows]
    records = [
        {
            "expert_id": f"e{i}",
            "family": f"fam{i // family_size}",
            "descriptions": [f"task {i} v{j}" for j in range(n_desc)],
        }
        for i in range(num_experts)
    ]
    export = ZooExport(
        header={
            "encoder": ENCODER,
            "base_model": "tiny-llama",
            "dim": dim,
            "layout": layout.to_dict(),
        },
        records=records,
        weights={k: v.half() for k, v in weights.items()},
        embeddings=np.asarray(rows, dtype=np.float32),
        row_expert=np.repeat(np.arange(num_experts), n_desc),
        row_description=np.tile(np.arange(n_desc), num_experts),
    )
    return ExpertBank(export, name="circle")


# --- helpers ------------------------------------------------------------------------------------
def small_config(layout: LoraLayout, **changes) -> CVAEConfig:
    sizes = dict(embed_dim=DIM, k=3, latent_dim=4, hidden_dim=32, cond_dim=16, pos_dim=8)
    return CVAEConfig(
        layout=layout.to_dict(), encoder=ENCODER, base_model="tiny-llama", **{**sizes, **changes}
    )


@pytest.fixture(scope="module")
def bank() -> ExpertBank:
    return structured_bank()


@pytest.fixture
def model(bank) -> LoraCVAE:
    torch.manual_seed(0)
    model = LoraCVAE(small_config(bank.layout))
    model.set_normalisation(bank.weights)
    with torch.no_grad():  # leave the zero init, so outputs depend on z and c
        for head in model.heads.values():
            head[-1].weight.normal_(0, 0.05)
    return model.eval()


def queries(bank: ExpertBank, rows=(0, 5, 9)) -> np.ndarray:
    return bank.embeddings[list(rows)]


def smollm2_layout(num_layers: int = 30, rank: int = 8) -> LoraLayout:
    paths = {m: f"model.layers.{{layer}}.self_attn.{m}" for m in ("q_proj", "v_proj")}
    return LoraLayout(num_layers, {"q_proj": (576, 576), "v_proj": (192, 576)}, paths, rank=rank)


# --- chunks and condition inputs ----------------------------------------------------------------
def test_chunks_round_trip(bank):
    for m in bank.layout.modules:
        chunks = to_chunks(bank.weights, m)
        assert chunks.shape == (len(bank), bank.layout.num_layers, chunk_size(bank.layout, m))
        a, b = from_chunks(bank.layout, chunks, m)
        assert torch.equal(a, bank.weights[f"{m}.A"]) and torch.equal(b, bank.weights[f"{m}.B"])


def test_dw_error_from_gram_matrices_matches_the_dense_product():
    gen = torch.Generator().manual_seed(0)
    a, a_hat = torch.randn(2, 5, 3, 8, 40, generator=gen, dtype=torch.float64)
    b, b_hat = torch.randn(2, 5, 3, 24, 8, generator=gen, dtype=torch.float64)
    dense = ((b_hat @ a_hat - b @ a) ** 2).sum((-1, -2))
    torch.testing.assert_close(dw_sq_error(a_hat, b_hat, a, b), dense)
    assert torch.all(dw_sq_error(a, b, a, b) < 1e-9)


def test_condition_inputs_are_the_weighted_neighbour_summary(bank):
    tau, query = 0.1, queries(bank)
    cond = condition_inputs(bank, query, k=3, exclude=[{0}, set(), {4, 5}], tau=tau)
    idx, sims = bank.search(query, 3, [{0}, set(), {4, 5}])
    assert torch.equal(cond["neighbours"], torch.from_numpy(idx))
    assert 0 not in idx[0] and not {4, 5} & set(idx[2])
    w = torch.softmax(torch.from_numpy(sims) / tau, -1)
    for m in bank.layout.modules:
        chunks = to_chunks(bank.weights, m)[torch.from_numpy(idx)]  # (n, k, L, chunk)
        mean = (w[..., None, None] * chunks).sum(1)
        spread = (w[..., None, None] * (chunks - mean[:, None]) ** 2).sum(1).sqrt()
        torch.testing.assert_close(cond[f"mean.{m}"], mean)
        torch.testing.assert_close(cond[f"spread.{m}"], spread, atol=1e-5, rtol=1e-4)
    emb = expert_embeddings(bank)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(bank)))
    torch.testing.assert_close(cond["neighbour_embedding"], (w[..., None] * emb[idx]).sum(1))


# --- the model ----------------------------------------------------------------------------------
def test_forward_losses_and_gradients(model, bank):
    cond = model.condition_inputs(bank, queries(bank))
    targets = {k: v[[0, 2, 4]] for k, v in bank.weights.items()}
    model.train()
    out = model(targets, cond, beta=0.5, dw_weight=0.1)
    assert set(out) == {"loss", "recon", "kl", "dw", "chunks"}
    assert out["kl"] >= 0 and out["dw"] > 0 and torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"], out["recon"] + 0.5 * out["kl"] + 0.1 * out["dw"])
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "spread" not in n)
    assert model(targets, cond, dw_weight=0.0)["dw"] == 0


def test_a_fresh_decoder_starts_from_the_neighbours_merge(bank):
    model = LoraCVAE(small_config(bank.layout))
    model.set_normalisation(bank.weights)
    cond = model.condition_inputs(bank, queries(bank))
    weights = model.generate(cond, num_samples=1, temperature=0)
    for m in bank.layout.modules:
        torch.testing.assert_close(
            to_chunks(weights, m)[:, 0], cond[f"merge.{m}"], atol=1e-5, rtol=1e-5
        )


def test_layer_scales_multiply_each_layers_update_and_survive_a_checkpoint(bank, tmp_path):
    model = LoraCVAE(small_config(bank.layout, layer_scales=True))
    model.set_normalisation(bank.weights)
    cond = model.condition_inputs(bank, queries(bank))
    plain = model.generate(cond, num_samples=1, temperature=0)  # zero scales: the merge
    m, nl = bank.layout.modules[0], bank.layout.num_layers
    with torch.no_grad():
        model.layer_scales[m][0] = math.log(2.0)
    scaled = model.generate(cond, num_samples=1, temperature=0)

    def dw(w, layer):
        return w[f"{m}.B"][:, 0, layer] @ w[f"{m}.A"][:, 0, layer]

    torch.testing.assert_close(dw(scaled, 0), 2 * dw(plain, 0), atol=1e-6, rtol=1e-5)
    for layer in range(1, nl):
        torch.testing.assert_close(dw(scaled, layer), dw(plain, layer))
    for other in bank.layout.modules[1:]:
        torch.testing.assert_close(scaled[f"{other}.B"], plain[f"{other}.B"])
    chunks = {k: model.normalise(k, cond[f"merge.{k}"]) for k in bank.layout.modules}
    assert torch.equal(model.to_weights(chunks, scale=False)[f"{m}.B"], plain[f"{m}.B"][:, 0])
    model.save_pretrained(tmp_path / "gen", dtype=torch.float32)
    loaded = LoraCVAE.from_pretrained(tmp_path / "gen", bank.layout, DIM)
    assert loaded.layer_scales[m][0].item() == pytest.approx(math.log(2.0))
    assert "layer_scales" not in dict(LoraCVAE(small_config(bank.layout)).named_parameters())


def assert_fresh_decoder_outputs_the_merge(model, cond, bank):
    fresh = model.generate(cond, num_samples=1, temperature=0)
    for m in bank.layout.modules:
        torch.testing.assert_close(
            to_chunks(fresh, m)[:, 0], cond[f"merge.{m}"], atol=1e-5, rtol=1e-4
        )
    return fresh


def test_norm_to_merge_keeps_each_layers_update_at_the_merges_norm(bank, tmp_path):
    torch.manual_seed(0)
    model = LoraCVAE(small_config(bank.layout, norm_to_merge=True))
    model.set_normalisation(bank.weights)
    cond = model.condition_inputs(bank, queries(bank))
    fresh = assert_fresh_decoder_outputs_the_merge(model, cond, bank)
    with torch.no_grad():  # a decoder that turns and grows the adapter, per layer
        for m in bank.layout.modules:
            model.heads[m][-1].weight.normal_(0, 0.5)
            model.gates[m].bias.fill_(2.0)
    turned = model.generate(cond, num_samples=2, temperature=1.0)
    plain = LoraCVAE(small_config(bank.layout))
    plain.load_state_dict(model.state_dict())
    unscaled = plain.generate(cond, num_samples=2, temperature=1.0, generator=None)

    def norms(w, m):
        return torch.linalg.matrix_norm(w[f"{m}.B"] @ w[f"{m}.A"])  # (B, S, L)

    merge = {k: cond[f"merge.{k}"][:, None] for k in bank.layout.modules}
    for m in bank.layout.modules:
        a, b = from_chunks(bank.layout, merge[m], m)
        target = torch.linalg.matrix_norm(b @ a).expand(-1, 2, -1)
        torch.testing.assert_close(norms(turned, m), target, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(norms(unscaled, m), target, rtol=0.05)  # the cap did it
        cos = (to_chunks(turned, m) * merge[m]).sum(-1) / (
            to_chunks(turned, m).norm(dim=-1) * merge[m].norm(dim=-1)
        )
        assert (cos < 0.999).any()  # turned, not just rescaled
    model.save_pretrained(tmp_path / "gen", dtype=torch.float32)
    assert LoraCVAE.from_pretrained(tmp_path / "gen").config.norm_to_merge
    m = bank.layout.modules[0]  # a merge of exactly 0: (all but) 0 out, finite gradients
    shape = (1, bank.layout.num_layers, to_chunks(fresh, m).shape[-1])
    out = model.normalise(m, torch.randn(shape)).requires_grad_(True)
    scaled = model._to_norm_of(m, out, model.normalise(m, torch.zeros(shape)))
    scaled.sum().backward()
    assert model.denormalise(m, scaled).norm() < 1e-3 * model.denormalise(m, out).norm()
    assert torch.isfinite(out.grad).all()


def test_the_merge_is_the_best_rank_r_approximation_of_the_weighted_sum(bank):
    tau, query = 0.1, queries(bank)
    cond = condition_inputs(bank, query, k=3, tau=tau)
    idx, sims = bank.search(query, 3)
    w = torch.softmax(torch.from_numpy(sims).double() / tau, -1)
    for m in bank.layout.modules:
        a, b = (bank.weights[f"{m}.{x}"][torch.from_numpy(idx)].double() for x in "AB")
        dense = (w[..., None, None, None] * (b @ a)).sum(1)  # (n, L, out, in)
        u, s, vh = torch.linalg.svd(dense)
        r = bank.layout.rank
        best = u[..., :r] @ torch.diag_embed(s[..., :r]) @ vh[..., :r, :]
        merged_a, merged_b = from_chunks(bank.layout, cond[f"merge.{m}"], m)
        torch.testing.assert_close((merged_b @ merged_a).double(), best, atol=1e-4, rtol=1e-3)
        # averaging factors instead loses most of the update's size: the reason for the merge
        mean_a, mean_b = from_chunks(bank.layout, cond[f"mean.{m}"], m)
        assert (mean_b @ mean_a).norm() < (merged_b @ merged_a).norm()


def test_the_merge_is_canonical_and_survives_degenerate_neighbours():
    """merge_pairs gives canonical factors (canonical_pair leaves them as they are), and stays
    exact and finite when neighbours repeat, weigh nothing or are all zero."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(2, 4, 3, 4, 24, generator=gen) * 0.1  # (n, k, L, r, in)
    b = torch.randn(2, 4, 3, 20, 4, generator=gen) * 0.1  # (n, k, L, out, r)
    a[1, 1], b[1, 1] = a[1, 0], b[1, 0]  # a repeated neighbour
    a[1, 3], b[1, 3] = 0.0, 0.0  # an all-zero expert
    w = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.5, 0.5, 0.0, 0.0]])
    merged_a, merged_b = merge_pairs(a, b, w)
    again_a, again_b = canonical_pair(merged_a, merged_b)
    torch.testing.assert_close(again_a, merged_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again_b, merged_b, atol=1e-5, rtol=1e-4)
    dense = (w.double()[..., None, None, None] * (b.double() @ a.double())).sum(1)
    u, s, vh = torch.linalg.svd(dense)
    best = u[..., :4] @ torch.diag_embed(s[..., :4]) @ vh[..., :4, :]
    torch.testing.assert_close((merged_b @ merged_a).double(), best, atol=1e-5, rtol=1e-4)
    zero_a, zero_b = merge_pairs(torch.zeros_like(a), torch.zeros_like(b), w)
    assert torch.isfinite(zero_a).all() and not zero_a.any() and not zero_b.any()


def test_the_merge_reads_neighbours_by_index_as_from_gathered_factors():
    """merge_pairs(a, b, w, idx) over a bank of experts is merge_pairs(a[idx], b[idx], w), with
    repeated neighbours and rows that share experts."""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(6, 3, 4, 24, generator=gen) * 0.1  # (E, L, r, in)
    b = torch.randn(6, 3, 20, 4, generator=gen) * 0.1  # (E, L, out, r)
    idx = torch.tensor([[0, 3, 5, 1], [2, 2, 4, 0], [5, 4, 3, 2]])
    w = torch.softmax(torch.randn(3, 4, generator=gen), dim=-1)
    want_a, want_b = merge_pairs(a[idx], b[idx], w)
    got_a, got_b = merge_pairs(a, b, w, idx)
    torch.testing.assert_close(got_a, want_a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_b, want_b, atol=1e-6, rtol=1e-5)


def test_the_merge_falls_back_to_eigenpairs_where_cholesky_fails(monkeypatch):
    """Where float32 rounding leaves G_A indefinite (seen on a synthetic 10,000-expert zoo),
    the layers whose Cholesky fails get P = V√Λ instead, with the same result."""
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(2, 4, 3, 4, 24, generator=gen) * 0.1
    b = torch.randn(2, 4, 3, 20, 4, generator=gen) * 0.1
    a[0, 2], b[0, 2] = a[0, 1], b[0, 1]
    w = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    expected_a, expected_b = merge_pairs(a, b, w)
    real = torch.linalg.cholesky_ex

    def failing_on_layer_1(x):
        p, info = real(x)
        p, info = p.clone(), info.clone()
        p[:, 1], info[:, 1] = float("nan"), 1  # a failed factor is garbage
        return p, info

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing_on_layer_1)
    got_a, got_b = merge_pairs(a, b, w)
    assert torch.isfinite(got_a).all() and torch.isfinite(got_b).all()
    torch.testing.assert_close(got_b @ got_a, expected_b @ expected_a, atol=1e-5, rtol=1e-4)


def test_generated_weights_validate_and_load_as_an_adapter(model, bank, tmp_path):
    cond = model.condition_inputs(bank, queries(bank))
    weights = model.generate(cond, num_samples=2, generator=torch.Generator().manual_seed(0))
    for name, shape in bank.layout.expected_shapes().items():
        assert weights[name].shape == (3, 2, *shape) and weights[name].dtype == torch.float32
    one = {k: v[1, 0] for k, v in weights.items()}
    bank.layout.validate(one)
    LoraAdapter(bank.layout, one, "tiny-llama").save_pretrained(tmp_path / "a")
    loaded = LoraAdapter.from_pretrained(tmp_path / "a", layout=bank.layout)
    assert all(torch.equal(loaded.weights[k], v) for k, v in one.items())
    peft_model = apply_adapter(tiny_llama(), loaded)
    assert peft_model(torch.tensor([[5, 17, 99]])).logits.isfinite().all()


def test_same_seed_same_adapter_different_seeds_differ(model, bank):
    cond = model.condition_inputs(bank, queries(bank))

    def sample(seed, temperature=1.0):
        gen = torch.Generator().manual_seed(seed)
        return model.generate(cond, num_samples=2, temperature=temperature, generator=gen)

    a, b, c = sample(7), sample(7), sample(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.allclose(a[k], c[k]) for k in a)
    assert all(not torch.allclose(a[k][:, 0], a[k][:, 1]) for k in a)  # samples differ too
    cold = sample(1, temperature=0)
    assert all(torch.equal(cold[k], sample(2, temperature=0)[k]) for k in cold)
    assert all(torch.equal(cold[k][:, 0], cold[k][:, 1]) for k in cold)
    c_vec = model.condition(cond)
    prior_mean = model.to_weights(model.decode(model.prior(c_vec)[0], c_vec, cond))
    for k, v in prior_mean.items():
        torch.testing.assert_close(cold[k][:, 0], v)


def test_save_load_round_trip(model, bank, tmp_path, monkeypatch):
    model.config.extra = {"note": "round trip"}
    model.save_pretrained(tmp_path / "gen")
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    for target in ("pickle.load", "pickle.loads", "torch.load"):
        monkeypatch.setattr(target, _no_pickle)
    loaded = LoraCVAE.from_pretrained(tmp_path / "gen", bank.layout, DIM)
    assert loaded.config == model.config and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    cond = model.condition_inputs(bank, queries(bank))
    before = model.generate(cond, 3, generator=torch.Generator().manual_seed(0))
    after = loaded.generate(cond, 3, generator=torch.Generator().manual_seed(0))
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    with pytest.raises(FileExistsError):
        model.save_pretrained(tmp_path / "gen")
    model.save_pretrained(tmp_path / "gen", overwrite=True)


def _no_pickle(*args, **kwargs):
    raise AssertionError("a generator checkpoint must load without pickle")


@pytest.mark.parametrize(
    "change, message",
    [
        ("rank", "layout mismatch in rank: expected 4, found 8"),
        ("depth", "layout mismatch in num_layers: expected 3, found 2"),
        ("embed_dim", "expects 16-d description embeddings .*'test-encoder'.*found 32-d"),
    ],
)
def test_a_mismatched_checkpoint_is_refused(model, bank, tmp_path, change, message):
    model.save_pretrained(tmp_path / "gen")
    layout, dim = bank.layout, DIM
    if change == "rank":
        layout = tiny_layout(rank=4)
    if change == "depth":
        layout = LoraLayout(3, dict(layout.shapes), dict(layout.paths), layout.rank, layout.alpha)
    if change == "embed_dim":
        dim = 32
    with pytest.raises(CheckpointError, match=message):
        LoraCVAE.from_pretrained(tmp_path / "gen", layout, dim)


def test_a_broken_checkpoint_is_refused(model, tmp_path):
    with pytest.raises(CheckpointError, match="not a generator checkpoint"):
        LoraCVAE.from_pretrained(tmp_path / "nothing")
    folder = model.save_pretrained(tmp_path / "gen")
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="does not fit its config"):
        LoraCVAE.from_pretrained(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="not a valid generator config"):
        LoraCVAE.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**model.config.to_dict(), "color": 1}))
    with pytest.raises(CheckpointError, match="unknown generator config fields"):
        LoraCVAE.from_pretrained(folder)


@pytest.mark.parametrize(
    "bad", [{"latent_dim": 0}, {"k": -1}, {"beta": -1.0}, {"tau": 0.0}, {"dropout": 1.0}]
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        small_config(tiny_layout(), **bad)
    with pytest.raises(LayoutError):
        CVAEConfig(layout={"num_layers": 2})


def test_generate_checks_its_arguments(model, bank):
    cond = model.condition_inputs(bank, queries(bank))
    with pytest.raises(ValueError, match="num_samples"):
        model.generate(cond, num_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(cond, temperature=-1)


def test_size_does_not_grow_with_the_zoo_and_barely_with_depth():
    config = CVAEConfig(layout=smollm2_layout().to_dict())
    smol = LoraCVAE(config)
    assert smol.num_parameters() == SMOLLM2_PARAMS  # pinned: the default generator's size
    deeper = LoraCVAE(CVAEConfig(layout=smollm2_layout(num_layers=60).to_dict()))
    assert deeper.num_parameters() - smol.num_parameters() == 30 * config.pos_dim
    zoo = smollm2_layout().num_params * 100  # a zoo of 100 experts
    assert smol.num_parameters() < zoo / 10


def test_fp16_checkpoint_loads_close_to_fp32(tmp_path):
    import numpy as np

    from training.module import new_model

    bank = structured_bank()
    model = new_model(bank, np.arange(len(bank))).eval()
    model.save_pretrained(tmp_path / "f32")
    model.save_pretrained(tmp_path / "f16", dtype=torch.float16)
    size = {d: (tmp_path / d / "model.safetensors").stat().st_size for d in ("f32", "f16")}
    assert size["f16"] < 0.6 * size["f32"]
    a, b = (LoraCVAE.from_pretrained(tmp_path / d) for d in ("f32", "f16"))
    assert next(b.parameters()).dtype == torch.float32
    cond = a.condition_inputs(bank, bank.embeddings[:2])
    wa, wb = a.generate(cond, temperature=0), b.generate(cond, temperature=0)
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-2 * (wa[k].abs().max() + 1e-6)


def test_max_deviation_keeps_the_decoders_change_inside_a_radius_around_the_merge(bank, tmp_path):
    torch.manual_seed(0)
    model = LoraCVAE(small_config(bank.layout, max_deviation=0.15))
    model.set_normalisation(bank.weights)
    cond = model.condition_inputs(bank, queries(bank))
    fresh = assert_fresh_decoder_outputs_the_merge(model, cond, bank)
    with torch.no_grad():  # a decoder that moves far from the merge
        for m in bank.layout.modules:
            model.heads[m][-1].weight.normal_(0, 0.5)
            model.gates[m].bias.fill_(2.0)
    plain = LoraCVAE(small_config(bank.layout))
    plain.load_state_dict(model.state_dict())
    for gen, bounded in ((model, True), (plain, False)):
        torch.manual_seed(1)
        out = gen.generate(cond, num_samples=2, temperature=1.0)
        for m in bank.layout.modules:
            merge = cond[f"merge.{m}"][:, None]  # (B, 1, L, chunk)
            rel = (to_chunks(out, m) - merge).norm(dim=-1) / merge.norm(dim=-1)
            if bounded:
                assert rel.max() < 0.15 and rel.min() > 0.05  # moved, inside the radius
            else:
                assert rel.max() > 1.0  # the same decoder without the radius goes far
    x = model.normalise(m, torch.randn(to_chunks(fresh, m).shape)).requires_grad_(True)
    model._within_radius(m, x, torch.zeros_like(x)).sum().backward()  # merge 0: finite
    assert torch.isfinite(x.grad).all()
    model.save_pretrained(tmp_path / "gen", dtype=torch.float32)
    assert LoraCVAE.from_pretrained(tmp_path / "gen").config.max_deviation == 0.15
    with pytest.raises(ValueError, match="max_deviation"):
        small_config(bank.layout, max_deviation=-0.1)
