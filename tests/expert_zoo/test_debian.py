"""Task sources read from Debian packages (WordNet, fortunes, and all of them together; the
FreeDict ones alone in test_freedict.py): tiny .deb files shaped like the real ones (built in
fake_debs.py), never downloads."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from expert_zoo.tasks import archives, debian, is_held_out, wordnet
from expert_zoo.tasks.by_id import load_tasks
from expert_zoo.tasks.corpora import MAX_INPUT_CHARS
from expert_zoo.tasks.deb_archive import ar_members, deb_file
from expert_zoo.tasks.debian import (
    DEBIAN_ARCHIVES,
    DEBIAN_SOURCES,
    FORTUNE_TOPICS,
    debian_source_for,
    ensure_deb,
    iter_debian_tasks,
    load_debian_task,
)
from expert_zoo.tasks.packaged import load_source
from expert_zoo.tasks.user_descriptions import DESCRIPTIONS_DIR
from tests.expert_zoo.fake_debs import examples, freedict_packages, pairs, write_deb, write_debs

TEMPLATED = re.compile(r"^(task:|an? [\w ]+ task\.)", re.IGNORECASE)


WORDNET_ADJ = """\
  1 This software and database is being provided to you, the LICENSEE, by  
  2 Princeton University under the following license.  
00001740 00 a 01 able 0 001 ! 00002098 a 0101 | having the necessary means  
00002098 00 a 01 unable 0 001 ! 00001740 a 0101 | not having the necessary means  
00002312 00 a 02 abaxial 0 dorsal 4 003 ;c 06037666 n 0000 ! 00002527 a 0101 ! 00002527 a 0202 | facing away  
00002527 00 a 02 adaxial 0 ventral 4 002 ! 00002312 a 0101 ! 00002312 a 0202 | facing toward  
00003000 00 a 01 high(a) 0 001 ! 00003100 a 0101 | greater than normal  
00003100 00 a 01 low(a) 0 001 ! 00003000 a 0101 | less than normal  
00003200 00 a 01 active 0 002 ! 00003300 a 0101 ! 00003400 a 0101 | busy  
00003300 00 a 01 inactive 0 000 | not active  
00003400 00 a 01 passive 0 000 | not active  
00003500 00 a 01 well_known 0 001 ! 00003600 a 0101 | known widely  
00003600 00 a 01 unknown 0 000 | not known  
00003700 00 a 01 offensive 0 000 | causing anger  
00003800 00 a 01 engraved 0 000 | cut into a surface  
"""
LICENCE_HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
WORDNET_DATA = {
    "noun": """\
00001000 03 n 01 animal 0 000 | a living organism  
00001100 05 n 01 larva 0 001 @ 00001000 n 0000 | an immature free-living form of an animal  
00001200 05 n 01 tadpole 0 001 @ 00001100 n 0000 | a larval frog or toad  
00001300 04 n 02 crime 0 offence 0 000 | an illegal act  
00001400 04 n 01 misdemeanor 0 001 @ 00001300 n 0000 | a crime less serious than a felony  
00001500 06 n 01 motorcar 0 002 @ 00001600 n 0000 #p 00001600 n 0000 | a motor vehicle with four wheels  
00001600 06 n 01 motor_vehicle 0 000 | a self-propelled wheeled vehicle  
00001700 23 n 01 furlong 0 002 @ 00001800 n 0000 #p 00003000 n 0000 | a unit of length equal to 220 yards  
00001800 23 n 02 linear_unit 0 length_unit 0 000 | a unit of measurement of length  
00001900 28 n 01 Tuesday 0 001 @ 00002000 n 0000 | the third day of the week  
00002000 28 n 01 weekday 0 001 #p 00002800 n 0000 | any day except Sunday  
00002100 04 n 01 offensive 0 001 @ 00001300 n 0000 | the action of attacking an enemy  
00002200 04 n 01 cleaning 0 001 @ 00001300 n 0000 | the act of making something clean  
00002300 17 n 01 bank 0 001 @ 00001000 n 0000 | sloping land beside a river  
00002400 14 n 01 bank 0 000 | a financial institution  
00002500 23 n 01 excosecant 0 001 @ 00001000 n 0000 | a trigonometric function  
00002600 18 n 01 bore 0 000 | a person who evokes boredom  
00002700 04 n 01 indictment 0 000 | a formal accusation  
00002800 28 n 01 week 0 000 | seven days  
00002900 18 n 01 cleaner 0 000 | a person who cleans  
00003000 23 n 01 mile 0 000 | a unit of length  
""",
    "verb": """\
00100000 32 v 01 indict 0 001 + 00002700 n 0101 01 + 08 00 | accuse formally of a crime; "The suspect was indicted"  
00100100 35 v 01 engrave 0 000 | carve, cut, or etch into a material or surface  
00100200 35 v 01 clean 0 002 + 00002200 n 0101 + 00002900 n 0101 | make clean by removing dirt  
00100300 29 v 01 bear 0 000 | bring forth  
""",
    "adv": """\
00200000 02 r 01 quickly 0 000 | in a quick manner  
00200100 02 r 01 abroad 0 000 | to or in a foreign country; "he lived abroad"  
""",
}
WORDNET_INDEX = {  # lemma: (offsets, senses seen in SemCor)
    "noun": {
        "animal": ("00001000", 1),
        "bank": ("00002300 00002400", 2),
        "bore": ("00002600", 1),
        "cleaning": ("00002200", 1),
        "crime": ("00001300", 1),
        "excosecant": ("00002500", 0),
        "furlong": ("00001700", 1),
        "larva": ("00001100", 1),
        "length_unit": ("00001800", 1),
        "linear_unit": ("00001800", 1),
        "misdemeanor": ("00001400", 1),
        "motor_vehicle": ("00001600", 1),
        "motorcar": ("00001500", 1),
        "offence": ("00001300", 1),
        "offensive": ("00002100", 1),
        "tadpole": ("00001200", 1),
        "tuesday": ("00001900", 1),
        "weekday": ("00002000", 1),
    },
    "verb": {
        "bear": ("00100300", 1),
        "clean": ("00100200", 1),
        "engrave": ("00100100", 1),
        "indict": ("00100000", 1),
    },
    "adj": {
        "abaxial": ("00002312", 1),
        "able": ("00001740", 1),
        "active": ("00003200", 1),
        "adaxial": ("00002527", 1),
        "dorsal": ("00002312", 1),
        "engraved": ("00003800", 1),
        "high": ("00003000", 1),
        "inactive": ("00003300", 1),
        "low": ("00003100", 1),
        "offensive": ("00003700", 1),
        "passive": ("00003400", 1),
        "unable": ("00002098", 1),
        "unknown": ("00003600", 1),
        "ventral": ("00002527", 1),
        "well_known": ("00003500", 1),
    },
    "adv": {"abroad": ("00200100", 1), "quickly": ("00200000", 1)},
}
WORDNET_EXC = {"noun": "oxen ox\n", "verb": "bore bear\nborne bear\n", "adj": "", "adv": ""}


def _wordnet_files() -> dict[str, bytes]:
    files = {wordnet.WORDNET + "data.adj": WORDNET_ADJ.encode()}
    for pos, text in WORDNET_DATA.items():
        files[wordnet.WORDNET + "data." + pos] = (LICENCE_HEADER + text).encode()
    for pos, lemmas in WORDNET_INDEX.items():
        lines = [LICENCE_HEADER]
        for lemma, (offsets, tagged) in sorted(lemmas.items()):
            n = len(offsets.split())
            lines.append(f"{lemma} {pos[0]} {n} 1 @ {n} {tagged} {offsets}  \n")
        files[wordnet.WORDNET + "index." + pos] = "".join(lines).encode()
    for pos, text in WORDNET_EXC.items():
        files[wordnet.WORDNET + pos + ".exc"] = text.encode()
    return files


def _fortunes() -> dict[str, bytes]:
    files = {}
    for topic in FORTUNE_TOPICS:
        quotes = [f"A saying about {topic} number {i}.\n\t\t-- Someone" for i in range(5)]
        quotes.append("word " * 150)  # longer than MAX_INPUT_CHARS: dropped
        quotes.append("Filed under two topics.")  # ambiguous: dropped
        if topic == "law":
            quotes.append("my client is *___\b\b\bnot* a murderer")
        files[debian.FORTUNES + topic] = ("\n%\n".join(quotes) + "\n%\n").encode()
    return files


@pytest.fixture
def cache(tmp_path):
    packages = {"wordnet-base": _wordnet_files(), "fortunes": _fortunes(), **freedict_packages()}
    return write_debs(tmp_path, packages)


def test_every_source_reads_its_archive_into_a_task(cache):
    assert {s.package for s in DEBIAN_SOURCES} == set(DEBIAN_ARCHIVES)
    for source in DEBIAN_SOURCES:
        task = load_source(source, ensure_deb(source.package, cache, download=False))
        assert task.task_id == f"{source.package}:{source.name or source.family}"
        assert task.family == source.family
        assert task.train and task.eval and task.description == source.description
        assert source.licence
        for e in task.train + task.eval:
            assert e.input and e.output and len(e.input) <= MAX_INPUT_CHARS


def test_wordnet_antonyms_follow_the_pointers(cache):
    antonyms = examples(cache, "wordnet-base:wordnet")
    assert antonyms["able"].output == "unable" and antonyms["unable"].output == "able"
    assert antonyms["dorsal"].output == "ventral"  # source/target 0202: the second words
    assert antonyms["high"].output == "low"  # the (a) marker is dropped
    assert "active" not in antonyms and "well_known" not in antonyms
    assert all(e.options is None for e in antonyms.values())


def test_fortunes_are_labelled_by_their_file(cache):
    quotes = examples(cache, "fortunes:fortunes")
    first = quotes["A saying about sports number 1. -- Someone"]
    assert first.output == "sports" and first.options == FORTUNE_TOPICS
    assert quotes["my client is *not* a murderer"].output == "law"  # overstrike removed
    assert "Filed under two topics." not in quotes
    assert len(quotes) == 5 * len(FORTUNE_TOPICS) + 1


def test_wordnet_hypernyms_name_the_one_word_parent_of_a_one_sense_noun(cache):
    # not: animal (no hypernym), bank (two senses), furlong and motorcar (a two-word hypernym),
    # excosecant (not in SemCor), tuesday (a name), offensive (also an adjective), cleaning
    # (also the verb clean), bore (the past of bear, in verb.exc)
    assert pairs(cache, "wordnet-base:wordnet_hypernyms") == {
        "larva": "animal",
        "tadpole": "larva",
        "misdemeanor": "crime",
    }


def test_wordnet_parts_of_speech_keep_words_of_one_part(cache):
    words = examples(cache, "wordnet-base:wordnet_part_of_speech")
    nouns = "animal bank crime furlong larva misdemeanor motorcar offence tadpole weekday"
    adjectives = "able unable abaxial dorsal adaxial ventral high low active inactive passive"
    assert {w: e.output for w, e in words.items()} == {
        **dict.fromkeys(nouns.split(), "noun"),  # not bore, cleaning, offensive, tuesday ...
        **dict.fromkeys(["bear", "clean", "engrave", "indict"], "verb"),
        **dict.fromkeys([*adjectives.split(), "unknown"], "adjective"),  # not engraved
        **dict.fromkeys(["quickly", "abroad"], "adverb"),
    }
    assert all(e.options == ("noun", "verb", "adjective", "adverb") for e in words.values())


def test_wordnet_definitions_give_the_one_word_they_define(cache):
    # not: crime (a synonym, offence), motorcar, clean and quickly (the word is in its
    # definition), inactive and passive (one definition, two words), bank (two senses)
    assert pairs(cache, "wordnet-base:wordnet_definitions") == {
        "a living organism": "animal",
        "an immature free-living form of an animal": "larva",
        "a larval frog or toad": "tadpole",
        "a crime less serious than a felony": "misdemeanor",
        "a unit of length equal to 220 yards": "furlong",
        "any day except Sunday": "weekday",
        "bring forth": "bear",
        "carve, cut, or etch into a material or surface": "engrave",
        "accuse formally of a crime": "indict",  # the example sentence dropped
        "having the necessary means": "able",
        "not having the necessary means": "unable",
        "greater than normal": "high",
        "less than normal": "low",
        "busy": "active",
        "not known": "unknown",
        "to or in a foreign country": "abroad",
    }


def test_wordnet_synonyms_are_the_one_other_word_of_a_one_sense_synset(cache):
    # not: linear_unit / length_unit (not one plain word), bank (two senses), motorcar (alone)
    assert pairs(cache, "wordnet-base:wordnet_synonyms") == {
        "crime": "offence",
        "offence": "crime",
        "abaxial": "dorsal",
        "dorsal": "abaxial",
        "adaxial": "ventral",
        "ventral": "adaxial",
    }


def test_wordnet_noun_categories_come_from_the_lexicographer_file(cache):
    # not: animal (noun.Tops), crime (noun.act), furlong (noun.quantity), bore (the past of bear)
    words = examples(cache, "wordnet-base:wordnet_noun_category")
    assert {w: e.output for w, e in words.items()} == {
        "larva": "animal",
        "tadpole": "animal",
        "motorcar": "man-made object",
    }
    assert all(e.options == tuple(wordnet.NOUN_CATEGORIES.values()) for e in words.values())


def test_wordnet_part_of_names_the_one_word_whole(cache):
    # motorcar's whole is motor_vehicle: two words, dropped
    assert pairs(cache, "wordnet-base:wordnet_part_of") == {"weekday": "week", "furlong": "mile"}


def test_wordnet_irregular_verbs_map_a_form_to_its_everyday_base(cache):
    assert pairs(cache, "wordnet-base:wordnet_irregular_verbs") == {
        "bore": "bear",
        "borne": "bear",
    }


def test_wordnet_verb_to_noun_skips_agent_nouns(cache):
    # clean -> cleaner is an agent noun: only cleaning is asked
    assert pairs(cache, "wordnet-base:wordnet_verb_to_noun") == {
        "indict": "indictment",
        "clean": "cleaning",
    }


def test_the_wordnet_tasks_are_one_family_and_the_antonyms_keep_their_id():
    wordnet = [s for s in DEBIAN_SOURCES if s.package == "wordnet-base"]
    assert {s.family for s in wordnet} == {"wordnet"} and len(wordnet) == 9
    assert [s.task_id for s in wordnet if s.name is None] == ["wordnet-base:wordnet"]


def test_splits_follow_the_held_out_rule_and_ids_reload(cache, monkeypatch):
    monkeypatch.setattr(archives, "packages_dir", lambda: cache)  # where ensure_deb looks
    train = list(iter_debian_tasks("train", cache_dir=cache, download=False))
    held = list(iter_debian_tasks("held_out", cache_dir=cache, download=False))
    assert train and held and not {t.family for t in train} & {t.family for t in held}
    assert all(not is_held_out(t.family) for t in train)
    assert all(is_held_out(t.family) for t in held)
    assert len(train) + len(held) == len(DEBIAN_SOURCES) == len({s.task_id for s in DEBIAN_SOURCES})
    again = load_tasks([train[0].task_id, held[0].task_id])  # as the zoo and benchmark reload them
    assert again == [train[0], held[0]]
    only = list(iter_debian_tasks("all", {"wordnet"}, cache_dir=cache, download=False))
    assert [t.task_id for t in only] == [
        "wordnet-base:wordnet",  # the antonyms, as before the family had more tasks
        "wordnet-base:wordnet_definitions",
        "wordnet-base:wordnet_hypernyms",
        "wordnet-base:wordnet_irregular_verbs",
        "wordnet-base:wordnet_noun_category",
        "wordnet-base:wordnet_part_of",
        "wordnet-base:wordnet_part_of_speech",
        "wordnet-base:wordnet_synonyms",
        "wordnet-base:wordnet_verb_to_noun",
    ]
    with pytest.raises(ValueError, match="split must be one of"):
        next(iter_debian_tasks("test", cache_dir=cache, download=False))
    with pytest.raises(KeyError, match="no Debian task"):
        debian_source_for("fortunes:nothing")


def test_a_missing_archive_without_download_names_the_file(tmp_path):
    spec = DEBIAN_ARCHIVES["wordnet-base"]
    with pytest.raises(FileNotFoundError, match=re.escape(spec.filename)) as err:
        ensure_deb("wordnet-base", tmp_path, download=False)
    assert spec.sha256 in str(err.value) and "apt-get download wordnet-base=1:3.0-37" in str(
        err.value
    )


def test_a_download_with_the_wrong_hash_leaves_nothing(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    name = DEBIAN_ARCHIVES["fortunes"].filename
    apt.write_text(f"#!/bin/sh\necho not a deb > '{name}'\n")
    apt.chmod(apt.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="does not match"):
        ensure_deb("fortunes", tmp_path / "cache")
    assert not (tmp_path / "cache" / name).exists()
    apt.write_text("#!/bin/sh\necho 'E: Unable to locate package' >&2\nexit 100\n")
    with pytest.raises(RuntimeError, match="apt-get update"):
        ensure_deb("fortunes", tmp_path / "cache")


def test_the_deb_reader(cache, tmp_path):
    archive = ensure_deb("fortunes", cache, download=False)
    assert list(ar_members(archive)) == ["debian-binary", "control.tar.xz", "data.tar.xz"]
    assert deb_file(archive, "usr/share/doc/fortunes/copyright") == b"License: fake\n"
    with pytest.raises(FileNotFoundError, match="nothing"):
        deb_file(archive, "usr/share/nothing")
    (tmp_path / "plain.deb").write_bytes(b"PK not an ar archive")
    with pytest.raises(ValueError, match="not an ar archive"):
        ar_members(tmp_path / "plain.deb")
    write_deb(tmp_path / "zstd.deb", {"x": b"y"}, data_member="data.tar.zst")
    with pytest.raises(ValueError, match="zstd"):
        deb_file(tmp_path / "zstd.deb", "x")


def test_every_zoo_task_has_eight_user_descriptions_and_held_out_ones_none(cache):
    table = {}
    for path in sorted(DESCRIPTIONS_DIR.glob("debian*.json")):
        table |= json.loads(path.read_text(encoding="utf-8"))
    zoo = {s.task_id for s in DEBIAN_SOURCES if not is_held_out(s.family)}
    assert set(table) == zoo
    for task_id, texts in table.items():
        assert len(texts) >= 8 and len(set(texts)) == len(texts), task_id
        assert not any(TEMPLATED.match(t) for t in texts), task_id
    task = load_debian_task("wordnet-base:wordnet", cache, download=False)
    assert task.descriptions[1:] == tuple(table["wordnet-base:wordnet"])
