"""The shipped zoo and generator as committed: the zoo verifies with no stray files and no
held-out family, the generator loads against it, and the README's figures match them."""

from __future__ import annotations

import re
from pathlib import Path

from expert_zoo.store import ExpertZoo
from expert_zoo.tasks import is_held_out
from hypergen.generator import DEFAULT_GENERATOR, DEFAULT_ZOO, HyperGen

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_shipped_zoo_is_sound_and_holds_no_held_out_family():
    zoo = ExpertZoo(DEFAULT_ZOO)
    assert zoo.verify() == [] and zoo.strays() == []
    assert not [r.family for r in zoo.records() if is_held_out(r.family)]


def test_the_shipped_generator_loads_and_the_readme_states_the_shipped_figures():
    generator = HyperGen.from_pretrained()
    zoo = ExpertZoo(DEFAULT_ZOO)
    records = zoo.records()
    text = README.read_text()
    found = re.search(r"The shipped zoo has (\d+) experts from (\d+)\s+families", text)
    assert found, "README must state the shipped zoo's size"
    assert int(found.group(1)) == len(records) == len(generator.bank)
    assert int(found.group(2)) == len({r.family for r in records})
    params = re.search(
        r"shipped generator\s+\(`hypergen/assets/generator`, ([\d.]+) M parameters", text
    )
    assert params and float(params.group(1)) == round(generator.cvae.num_parameters() / 1e6, 2)
    assert (DEFAULT_GENERATOR / "config.json").is_file()
