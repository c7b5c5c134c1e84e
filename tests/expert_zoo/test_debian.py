"""Task sources read from Debian packages: tiny .deb files (ar + data.tar.xz) shaped like the
real ones, never downloads."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import tarfile

import pytest

from expert_zoo.tasks import archives, debian, is_held_out
from expert_zoo.tasks.by_id import load_tasks
from expert_zoo.tasks.corpora import MAX_INPUT_CHARS
from expert_zoo.tasks.debian import (
    DEBIAN_ARCHIVES,
    DEBIAN_SOURCES,
    FORTUNE_TOPICS,
    FREEDICT,
    ar_members,
    deb_file,
    debian_source_for,
    ensure_deb,
    iter_debian_tasks,
    load_debian_task,
)
from expert_zoo.tasks.packaged import load_source
from expert_zoo.tasks.user_descriptions import DESCRIPTIONS_DIR

TEMPLATED = re.compile(r"^(task:|an? [\w ]+ task\.)", re.IGNORECASE)


def _tar_xz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)  # dpkg-deb writes ./usr/share/...
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
        out += header.encode("ascii") + data + b"\n" * (len(data) % 2)
    return bytes(out)


def _deb(path, files: dict[str, bytes], data_member: str = "data.tar.xz") -> None:
    control = _tar_xz({"control": b"Package: fake\n"})
    path.write_bytes(
        _ar({"debian-binary": b"2.0\n", "control.tar.xz": control, data_member: _tar_xz(files)})
    )


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
"""


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


B64 = debian.DICTD_B64


def _b64(value: int) -> str:
    digits = ""
    while True:
        digits = B64[value % 64] + digits
        value //= 64
        if not value:
            return digits


def _freedict(lang: str) -> dict[str, bytes]:
    entries = [("00databaseinfo", "00-database-info\nEnglish-X FreeDict Dictionary\n")]
    entries += [(f"w{c}", f"w{c} /w/\nt{c}{lang}, other\n") for c in "abcdefghijklmnop"]
    entries += [
        ("dog", "dog /dɔg/\nchien, clébard\n"),
        ("run", "run /rʌn/\n1. courir\n2. fuite\n"),  # numbered senses: dropped
        ("apple", "apple /æpl/\npomme\n"),  # two entries: dropped
        ("apple", "apple /æpldʒuːs/\njus de pomme\n"),
        ("a lot", "a lot /ə lɒt/\nbeaucoup\n"),  # not one word: dropped
        ("Paris", "Paris /pæɹɪs/\nParis\n"),  # a name: dropped
        ("juggler", "juggler /dʒˈʌɡlə/\nJongleur <masc>, Jongleurin <fem> [art]\n"),
        ("jugglers", "jugglers /dʒˈʌɡləz/\nJongleure <pl>\n"),  # a plural form: dropped
        ("fish", "fishes /fɪʃ/\npoisson\n"),  # another headword: dropped
        ("swim", "swim /swɪm/\nse baigner\n"),  # a two-word translation: dropped
    ]
    data, index = b"", []
    for headword, text in entries:
        raw = text.encode("utf-8")
        index.append(f"{headword}\t{_b64(len(data))}\t{_b64(len(raw))}")
        data += raw
    stem = f"{debian.DICTD}freedict-eng-{lang}"
    return {
        stem + ".index": ("\n".join(sorted(index)) + "\n").encode("utf-8"),
        stem + ".dict.dz": gzip.compress(data),
    }


def _copyright(package: str) -> dict[str, bytes]:
    return {f"usr/share/doc/{package}/copyright": b"License: fake\n"}


@pytest.fixture
def cache(tmp_path):
    files = {
        "wordnet-base": {debian.WORDNET + "data.adj": WORDNET_ADJ.encode()},
        "fortunes": _fortunes(),
        **{f"dict-freedict-eng-{lang}": _freedict(lang) for lang in FREEDICT},
    }
    for package, contents in files.items():
        _deb(tmp_path / DEBIAN_ARCHIVES[package].filename, contents | _copyright(package))
    return tmp_path


def _examples(cache, task_id: str) -> dict:
    task = load_debian_task(task_id, cache, download=False)
    return {e.input: e for e in task.train + task.eval}


def test_every_source_reads_its_archive_into_a_task(cache):
    assert {s.package for s in DEBIAN_SOURCES} == set(DEBIAN_ARCHIVES)
    for source in DEBIAN_SOURCES:
        task = load_source(source, ensure_deb(source.package, cache, download=False))
        assert task.task_id == f"{source.package}:{source.family}" and task.family == source.family
        assert task.train and task.eval and task.description == source.description
        assert source.licence
        for e in task.train + task.eval:
            assert e.input and e.output and len(e.input) <= MAX_INPUT_CHARS


def test_wordnet_antonyms_follow_the_pointers(cache):
    antonyms = _examples(cache, "wordnet-base:wordnet")
    assert antonyms["able"].output == "unable" and antonyms["unable"].output == "able"
    assert antonyms["dorsal"].output == "ventral"  # source/target 0202: the second words
    assert antonyms["high"].output == "low"  # the (a) marker is dropped
    assert "active" not in antonyms and "well_known" not in antonyms
    assert all(e.options is None for e in antonyms.values())


def test_fortunes_are_labelled_by_their_file(cache):
    quotes = _examples(cache, "fortunes:fortunes")
    first = quotes["A saying about sports number 1. -- Someone"]
    assert first.output == "sports" and first.options == FORTUNE_TOPICS
    assert quotes["my client is *not* a murderer"].output == "law"  # overstrike removed
    assert "Filed under two topics." not in quotes
    assert len(quotes) == 5 * len(FORTUNE_TOPICS) + 1


def test_freedict_keeps_one_word_one_sense_entries(cache):
    words = _examples(cache, "dict-freedict-eng-fra:freedict_eng_fra")
    assert words["dog"].output == "chien" and words["wc"].output == "tcfra"
    assert words["juggler"].output == "Jongleur"  # tags and labels stripped
    for dropped in ("run", "apple", "a lot", "Paris", "jugglers", "fish", "swim"):
        assert dropped not in words
    assert not any(w.startswith("00") for w in words)
    assert _examples(cache, "dict-freedict-eng-deu:freedict_eng_deu")["wa"].output == "tadeu"


def test_splits_follow_the_held_out_rule_and_ids_reload(cache, monkeypatch):
    monkeypatch.setattr(archives, "packages_dir", lambda: cache)  # where ensure_deb looks
    train = list(iter_debian_tasks("train", cache_dir=cache, download=False))
    held = list(iter_debian_tasks("held_out", cache_dir=cache, download=False))
    assert train and held and not {t.family for t in train} & {t.family for t in held}
    assert all(not is_held_out(t.family) for t in train)
    assert all(is_held_out(t.family) for t in held)
    assert len(train) + len(held) == len(DEBIAN_SOURCES) == len({s.family for s in DEBIAN_SOURCES})
    again = load_tasks([train[0].task_id, held[0].task_id])  # as the zoo and benchmark reload them
    assert again == [train[0], held[0]]
    only = list(iter_debian_tasks("all", {"wordnet"}, cache_dir=cache, download=False))
    assert [t.task_id for t in only] == ["wordnet-base:wordnet"]
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
    _deb(tmp_path / "zstd.deb", {"x": b"y"}, data_member="data.tar.zst")
    with pytest.raises(ValueError, match="zstd"):
        deb_file(tmp_path / "zstd.deb", "x")


def test_every_zoo_task_has_eight_user_descriptions_and_held_out_ones_none(cache):
    table = json.loads((DESCRIPTIONS_DIR / "debian.json").read_text(encoding="utf-8"))
    zoo = {s.task_id for s in DEBIAN_SOURCES if not is_held_out(s.family)}
    assert set(table) == zoo
    for task_id, texts in table.items():
        assert len(texts) >= 8 and len(set(texts)) == len(texts), task_id
        assert not any(TEMPLATED.match(t) for t in texts), task_id
    task = load_debian_task("wordnet-base:wordnet", cache, download=False)
    assert task.descriptions[1:] == tuple(table["wordnet-base:wordnet"])
