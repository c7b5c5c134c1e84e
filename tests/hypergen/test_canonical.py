import torch

from hypergen.canonical import canonical_pair, canonicalize
from hypergen.layout import delta_weights
from tests.conftest import random_adapter


def _reparametrise(a, b, seed):
    """(B R, R⁻¹ A) for a random invertible R per layer."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(a.shape[0], a.shape[1], a.shape[1], generator=gen, dtype=torch.float64)
    return torch.linalg.solve(r, a), b @ r


def test_canonical_preserves_delta_w(tiny_layout):
    adapter = random_adapter(tiny_layout)
    canon = canonicalize(tiny_layout, adapter.weights)
    before, after = delta_weights(tiny_layout, adapter.weights), delta_weights(tiny_layout, canon)
    for m in tiny_layout.modules:
        assert (before[m] - after[m]).abs().max() < 1e-5


def test_canonical_is_invariant_to_reparametrisation():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 8, 40, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 24, 8, generator=gen, dtype=torch.float64)
    a1, b1 = canonical_pair(a, b)
    for seed in range(5):
        a2, b2 = canonical_pair(*_reparametrise(a, b, seed))
        torch.testing.assert_close(a2, a1, rtol=0, atol=1e-8)
        torch.testing.assert_close(b2, b1, rtol=0, atol=1e-8)


def test_canonical_float32_reparametrised_copy_is_close(tiny_layout):
    adapter = random_adapter(tiny_layout)
    a, b = adapter.weights["q_proj.A"], adapter.weights["q_proj.B"]
    a_r, b_r = _reparametrise(a.double(), b.double(), seed=3)
    a1, b1 = canonical_pair(a, b)
    a2, b2 = canonical_pair(a_r.float(), b_r.float())
    assert (a1 - a2).abs().max() < 1e-4 and (b1 - b2).abs().max() < 1e-4


def test_canonical_is_idempotent_with_balanced_factors_and_fixed_signs(tiny_layout):
    canon = canonicalize(tiny_layout, random_adapter(tiny_layout).weights)
    again = canonicalize(tiny_layout, canon)
    for k in canon:
        assert (canon[k] - again[k]).abs().max() < 1e-5
    a, b = canon["v_proj.A"], canon["v_proj.B"]
    torch.testing.assert_close(a.norm(dim=-1), b.norm(dim=-2), atol=1e-5, rtol=1e-5)
    pivots = torch.gather(b, -2, b.abs().argmax(dim=-2, keepdim=True))
    assert (pivots > 0).all()


def test_canonical_of_zero_update_is_zero():
    a, b = torch.randn(2, 4, 10), torch.zeros(2, 6, 4)
    a1, b1 = canonical_pair(a, b)
    assert torch.count_nonzero(a1) == 0 and torch.count_nonzero(b1) == 0
