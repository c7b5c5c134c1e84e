"""Tiny fake Debian packages for the Debian and FreeDict task tests, never downloads: ``.deb``
files (ar + data.tar.xz) shaped like the real ones, FreeDict dictionaries in dictd format, and
the loaders that read the tasks back from such a cache folder."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from expert_zoo.tasks.debian import DEBIAN_ARCHIVES, load_debian_task
from expert_zoo.tasks.freedict import (
    DICTD,
    DICTD_B64,
    FREEDICT,
    FREEDICT_PAIRS,
    FREEDICT_TO_ENGLISH,
)


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


def write_deb(path, files: dict[str, bytes], data_member: str = "data.tar.xz") -> None:
    control = _tar_xz({"control": b"Package: fake\n"})
    path.write_bytes(
        _ar({"debian-binary": b"2.0\n", "control.tar.xz": control, data_member: _tar_xz(files)})
    )


B64 = DICTD_B64


def _b64(value: int) -> str:
    digits = ""
    while True:
        digits = B64[value % 64] + digits
        value //= 64
        if not value:
            return digits


def _freedict_to_english(lang: str) -> dict[str, bytes]:
    """A fake ``dict-freedict-<lang>-eng``: a word of ``lang`` -> English."""
    entries = [("00databaseinfo", "00-database-info\nX-English FreeDict Dictionary\n")]
    entries += [(f"x{c}", f"x{c}\nword{c}\n") for c in "abcdefghijklmnop"]
    entries += [
        ("kirsebær", "kirsebær /ˈkʰiɐ̯səˌb̥æɐ̯ˀ/\ncherry\u2010tree\n"),  # U+2010: a plain hyphen
        ("fugl", "fugl\nbird, fowl\n"),
        ("mikro", "mikro\nmicro#Englanti\n"),  # a wiki link left in: dropped
        ("hej", "hej\nhello!\n"),  # not a plain word: dropped
        ("stor", "stor\n1. big\n2. tall\n"),  # numbered senses: dropped
    ]
    return _dictd_files(f"freedict-{lang}-eng", entries)


def _dictd_files(name: str, entries: list[tuple[str, str]]) -> dict[str, bytes]:
    data, index = b"", []
    for headword, text in entries:
        raw = text.encode("utf-8")
        index.append(f"{headword}\t{_b64(len(data))}\t{_b64(len(raw))}")
        data += raw
    stem = f"{DICTD}{name}"
    return {
        stem + ".index": ("\n".join(sorted(index)) + "\n").encode("utf-8"),
        stem + ".dict.dz": gzip.compress(data),
    }


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
        ("acerb", "acerb /ˈasɜːb/\n1. acı, sert.\n"),  # a lone 1.: one sense in eng-tur only
        ("acedia", "acedia /ɐsˈiːdiə/\n1. halsizlik.\n"),
        ("ace", "ace /ˈeɪs/\n1. as, birli\n2. zerre\n"),  # two senses: dropped everywhere
        ("spice", "spice /spaɪs/\nfûszer\n"),  # eng-hun's Latin-1 û for ű
    ]
    return _dictd_files(f"freedict-eng-{lang}", entries)


def _freedict_pair(pair: str) -> dict[str, bytes]:
    """A fake ``dict-freedict-<x>-<y>``, neither language English (WikDict's layout: a gloss in
    the source language under the translation)."""
    entries = [("00databaseinfo", "00-database-info\nX-Y FreeDict Dictionary\n")]
    entries += [(f"y{c}", f"y{c} /y/ <n>\nz{c}\nein Wort\n") for c in "abcdefghijklmnop"]
    entries += [
        ("zögern", "zögern /ˈtsøːɡɐn/\n1. esitare, titubare\n"),  # a lone sense, numbered
        ("wollen", "wollen /ˈvɔlən/ <v>\nvouloir\nden Wunsch haben\n"),
        ("perforatrice", "perforatrice /pɛʁ.fɔ.ʁa.tʁis/ <n, fem>\nrei’ittäjä\n"),
        ("temperatuur", "temperatuur /tɛmpəraˈtyr/ <n>\n [1. grootheid] temperatura\n"),
        ("hund", "Hund /hʊnt/ <n, masc>\nchien\n"),  # a capitalised noun: dropped
        ("kubik", "kubik /kuˈbiːk/\nKubik-\n"),  # a word part: dropped
        ("ingen", "ingen /ˈɪŋən/\ningen…alls\n"),  # not a plain word: dropped
        ("mentir", "mentir /mẽˈtiɾ/\nlügen#Deutsch\n"),  # a wiki link left in: dropped
        ("schnell", "schnell /ʃnɛl/\n1. rapide\n2. vite\n"),  # two senses: dropped
        ("regen", "regen /ˈreːɣə(n)/\npluie battante\n"),  # two words: dropped
    ]
    return _dictd_files(f"freedict-{pair}", entries)


def _copyright(package: str) -> dict[str, bytes]:
    return {f"usr/share/doc/{package}/copyright": b"License: fake\n"}


def freedict_packages() -> dict[str, dict[str, bytes]]:
    """package -> the files of a fake of every pinned ``dict-freedict-*`` package."""
    return {
        **{f"dict-freedict-eng-{lang}": _freedict(lang) for lang in FREEDICT},
        **{f"dict-freedict-{lang}-eng": _freedict_to_english(lang) for lang in FREEDICT_TO_ENGLISH},
        **{f"dict-freedict-{pair}": _freedict_pair(pair) for pair in FREEDICT_PAIRS},
    }


def write_debs(folder: Path, packages: dict[str, dict[str, bytes]]) -> Path:
    """Write each package's fake ``.deb`` (with a copyright file) under its pinned file name."""
    for package, contents in packages.items():
        write_deb(folder / DEBIAN_ARCHIVES[package].filename, contents | _copyright(package))
    return folder


def examples(cache: Path, task_id: str) -> dict:
    task = load_debian_task(task_id, cache, download=False)
    return {e.input: e for e in task.train + task.eval}


def pairs(cache: Path, task_id: str) -> dict[str, str]:
    return {e.input: e.output for e in examples(cache, task_id).values()}
