"""Fixtures of the reliability tests: a real HyperGen over the tiny zoo (an untrained CVAE, the
bag-of-words encoder, the tiny base model), and hypothesis settings that are the same every run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from hypergen.bank import ExpertBank
from hypergen.generator import HyperGen
from tests.app.helpers import BagOfWordsEncoder

settings.register_profile(
    "reliability",
    derandomize=True,  # the same examples in CI as here
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("reliability")


@pytest.fixture(scope="session")
def tiny_hypergen(fake_zoo, tiny_model_dir) -> HyperGen:
    """HyperGen with an untrained generator whose output heads are random, so adapters depend on
    the description, the seed and the temperature (as a trained one's do)."""
    from training.module import new_model

    bank = ExpertBank.load(fake_zoo.root)
    torch.manual_seed(0)
    model = new_model(bank, np.arange(len(bank)), k=3, hidden_dim=32, latent_dim=8)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("heads."):
                param.normal_(0, 0.05)
    return HyperGen(model, bank, BagOfWordsEncoder(), tiny_model_dir)
