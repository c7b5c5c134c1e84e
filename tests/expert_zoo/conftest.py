"""Fixtures of the zoo store tests: the tiny layout, an empty zoo, a zoo of 4 experts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from expert_zoo.store import (
    ExpertZoo,
)
from hypergen.layout import LoraLayout
from tests.conftest import tiny_llama
from tests.expert_zoo.helpers import make_expert


@pytest.fixture(scope="module")
def layout() -> LoraLayout:
    return LoraLayout.for_model(tiny_llama())


@pytest.fixture
def zoo(tmp_path) -> ExpertZoo:
    return ExpertZoo(tmp_path / "zoo")


@pytest.fixture(scope="module")
def template(tmp_path_factory, layout) -> Path:
    """A zoo of four experts with 1, 2, 3 and 1 descriptions, built once per module."""
    zoo = ExpertZoo(tmp_path_factory.mktemp("template") / "zoo")
    for i, n in enumerate((1, 2, 3, 1)):
        zoo.add(*make_expert(layout, i, n))
    return zoo.root


@pytest.fixture
def filled(template, tmp_path) -> ExpertZoo:
    """A fresh copy of the template zoo (a zoo folder does not depend on where it lies)."""
    return ExpertZoo(shutil.copytree(template, tmp_path / "zoo"))
