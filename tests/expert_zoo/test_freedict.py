"""FreeDict dictionary tasks read from fake ``dict-freedict-*`` packages (dictd format), never
downloads."""

from __future__ import annotations

import pytest

from expert_zoo.tasks import is_held_out
from expert_zoo.tasks.debian import debian_source_for
from expert_zoo.tasks.freedict import FREEDICT_PAIRS, FREEDICT_TO_ENGLISH
from tests.expert_zoo.fake_debs import examples, freedict_packages, pairs, write_debs


@pytest.fixture
def cache(tmp_path):
    return write_debs(tmp_path, freedict_packages())


def test_freedict_keeps_one_word_one_sense_entries(cache):
    words = examples(cache, "dict-freedict-eng-fra:freedict_eng_fra")
    assert words["dog"].output == "chien" and words["wc"].output == "tcfra"
    assert words["juggler"].output == "Jongleur"  # tags and labels stripped
    for dropped in ("run", "apple", "a lot", "Paris", "jugglers", "fish", "swim"):
        assert dropped not in words
    assert not any(w.startswith("00") for w in words)
    assert examples(cache, "dict-freedict-eng-deu:freedict_eng_deu")["wa"].output == "tadeu"
    assert {"acerb", "acedia", "ace"}.isdisjoint(words)  # a lone "1." stays dropped here
    assert words["spice"].output == "fûszer"


def test_freedict_tur_numbers_a_lone_sense_and_hun_gets_its_letters_back(cache):
    def expected(lang: str) -> dict[str, str]:
        words = {f"w{c}": f"t{c}{lang}" for c in "abcdefghijklmnop"}
        return words | {"dog": "chien", "juggler": "Jongleur"}

    assert pairs(cache, "dict-freedict-eng-tur:freedict_eng_tur") == expected("tur") | {
        "acerb": "acı",
        "acedia": "halsizlik",  # the final full stop dropped
        "spice": "fûszer",
    }
    assert pairs(cache, "dict-freedict-eng-hun:freedict_eng_hun") == expected("hun") | {
        "spice": "fűszer"
    }


def test_freedict_to_english_keeps_plain_english_answers_in_the_pairs_family(cache):
    expected = {f"x{c}": f"word{c}" for c in "abcdefghijklmnop"}
    for lang in ("dan", "tur", "hun"):  # eng-tur's and eng-hun's quirks are not theirs
        task_id = f"dict-freedict-{lang}-eng:freedict_{lang}_eng"
        assert pairs(cache, task_id) == expected | {"kirsebær": "cherry-tree", "fugl": "bird"}
        source = debian_source_for(task_id)
        assert source.family == f"freedict_eng_{lang}"  # one family per pair, both directions
        assert source.description == f"Translate a {FREEDICT_TO_ENGLISH[lang][0]} word into English"
    assert debian_source_for("dict-freedict-ita-eng:freedict_ita_eng").description == (
        "Translate an Italian word into English"
    )
    # a pair whose family is held out has no X -> English task in the zoo's sources
    assert not any(is_held_out(f"freedict_eng_{lang}") for lang in FREEDICT_TO_ENGLISH)


def test_freedict_pairs_keep_plain_words_of_any_language_in_one_family_per_pair(cache):
    expected = {f"y{c}": f"z{c}" for c in "abcdefghijklmnop"}
    assert pairs(cache, "dict-freedict-deu-fra:freedict_deu_fra") == expected | {
        "zögern": "esitare",  # a lone "1." is one sense here
        "wollen": "vouloir",  # the gloss under the translation is not read
        "perforatrice": "rei’ittäjä",
        "temperatuur": "temperatura",  # the bracketed label dropped
    }
    there = debian_source_for("dict-freedict-fra-deu:freedict_fra_deu")
    back = debian_source_for("dict-freedict-deu-fra:freedict_deu_fra")
    assert there.family == back.family == "freedict_deu_fra"  # one family, both directions
    assert there.description == "Translate a French word into German"
    assert debian_source_for("dict-freedict-ita-spa:freedict_ita_spa").description == (
        "Translate an Italian word into Spanish"
    )
    assert back.licence == "FreeDict deu-fra (FreeDict contributors): CC-BY-SA-3.0"
    assert debian_source_for("dict-freedict-deu-ita:freedict_deu_ita").licence.endswith("GPL-2+")
    # the held-out benchmark's tasks stay as they were: no pair of a held-out family is added
    assert not any(
        is_held_out(f"freedict_{'_'.join(sorted(p.split('-')))}") for p in FREEDICT_PAIRS
    )
    assert all("eng" not in pair.split("-") for pair in FREEDICT_PAIRS)
