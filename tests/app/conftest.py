"""Fixtures of the app tests: a tiny zoo and a fake generator over the tiny model."""

from __future__ import annotations

import pytest

from hypergen.bank import ExpertBank
from tests.app.helpers import BagOfWordsEncoder, FakeGenerator, build_zoo


@pytest.fixture(scope="session")
def fake_zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.mktemp("app") / "zoo", BagOfWordsEncoder())


@pytest.fixture(scope="session")
def fake_generator(fake_zoo, tiny_model_dir) -> FakeGenerator:
    return FakeGenerator(ExpertBank.load(fake_zoo.root), BagOfWordsEncoder(), tiny_model_dir)
