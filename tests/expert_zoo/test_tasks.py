"""Tests of the task sources: a tiny fake BIG-bench sdist, user JSONL files, synthetic tasks."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from pathlib import Path

import pytest

from expert_zoo.tasks import (
    Example,
    Task,
    TaskError,
    bigbench_sdist,
    describe,
    family_words,
    is_held_out,
    iter_bigbench_tasks,
    list_bigbench_task_ids,
    load_user_task,
    parse_user_task,
    pypi_fetch,
    split_examples,
    synthetic_tasks,
    user,
)

# ---------------------------------------------------------------- base


def _family(stem: str, held_out: bool) -> str:
    """The first ``f"{stem}{i}"`` whose held-out status is ``held_out``."""
    return next(f"{stem}{i}" for i in range(1000) if is_held_out(f"{stem}{i}") == held_out)


def test_is_held_out_is_the_sha256_rule():
    for family in ["multiemo", "winowhy", "arithmetic", "x", ""]:
        digest = int(hashlib.sha256(family.encode()).hexdigest()[:8], 16)
        assert is_held_out(family) == (digest % 5 == 0)
    assert is_held_out("winowhy") and not is_held_out("multiemo")  # pinned real families
    share = sum(is_held_out(f"family{i}") for i in range(5000)) / 5000
    assert 0.17 < share < 0.23


def test_split_examples_is_deterministic_and_capped():
    examples = [Example(str(i), str(i)) for i in range(1000)]
    train, eval_ = split_examples(examples, eval_max=50, train_max=300, seed="0:t")
    assert (len(train), len(eval_)) == (300, 50)
    assert split_examples(examples, eval_max=50, train_max=300, seed="0:t") == (train, eval_)
    assert split_examples(examples, eval_max=50, train_max=300, seed="1:t") != (train, eval_)
    assert not set(train) & set(eval_)
    small_train, small_eval = split_examples(examples[:10])
    assert (len(small_train), len(small_eval)) == (8, 2)


def test_example_output_must_be_an_option():
    with pytest.raises(TaskError, match="not one of the options"):
        Example("q", "c", ("a", "b"))


# ---------------------------------------------------------------- fake BIG-bench sdist

MC = _family("mc", held_out=False)
GEN = _family("gen", held_out=False)
PARENT = _family("parent", held_out=False)
SHORT = _family("short", held_out=False)
LONG = _family("long", held_out=False)
WIDE = _family("wide", held_out=False)
PROG = _family("prog", held_out=False)
BROKEN = _family("broken", held_out=False)
HELD = _family("held", held_out=True)


def _mc_examples(n: int) -> list[dict]:
    return [
        {"input": f"Is {i} even?", "target_scores": {"yes": int(i % 2 == 0), "no": int(i % 2)}}
        for i in range(n)
    ]


def _gen_examples(n: int, length: int = 10) -> list[dict]:
    return [{"input": f"{i:0{length}d}", "target": [f"out{i}", "alt"]} for i in range(n)]


def _task(description: str, examples: list[dict] | None, **extra) -> bytes:
    data = {"name": "t", "description": description, "keywords": [], **extra}
    if examples is not None:
        data["examples"] = examples
    return json.dumps(data).encode()


def _fake_members() -> dict[str, bytes]:
    gen_examples = _gen_examples(110) + [{"input": "", "target": "x"}, {"input": "y", "target": ""}]
    tie = {"input": "tie", "target_scores": {"first": 1, "second": 1, "third": 0}}
    return {
        f"{MC}/task.json": _task(
            "In this task, you will  tell\n whether a number is even.", _mc_examples(119) + [tie]
        ),
        f"{GEN}/task.json": _task(
            "Copy digits.",
            gen_examples,
            example_input_prefix="\nIn: ",
            example_output_prefix="\nOut: ",
        ),
        f"{PARENT}/task.json": _task("A parent of subtasks.", None),
        f"{PARENT}/sub_a/task.json": _task("", _gen_examples(105)),
        f"{PARENT}/sub_b/task.json": _task("Too short.", _gen_examples(20)),
        f"{SHORT}/task.json": _task("Too few examples.", _mc_examples(99)),
        f"{LONG}/task.json": _task("Long inputs.", _gen_examples(120, length=700)),
        f"{WIDE}/task.json": _task(
            "Too many options.",
            [
                {"input": f"q{i}", "target_scores": {f"o{j}": int(j == 0) for j in range(30)}}
                for i in range(120)
            ],
        ),
        f"{PROG}/task.py": b"class Task: pass\n",
        f"{BROKEN}/task.json": b"{not json",
        f"{HELD}/task.json": _task("A held-out task.", _mc_examples(100)),
    }


def _write_fake_sdist(cache_dir: Path, extra: dict[str, bytes] | None = None) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / bigbench_sdist.SDIST_NAME
    members = {
        f"bigbench-1.0.0/bigbench/benchmark_tasks/{k}": v for k, v in _fake_members().items()
    }
    members["bigbench-1.0.0/setup.py"] = b"# not a task\n"
    members.update(extra or {})
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


_REAL_DOWNLOAD = bigbench_sdist._download_sdist  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tests must never download the BIG-bench sdist")

    monkeypatch.setattr(bigbench_sdist, "_download_sdist", refuse)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    _write_fake_sdist(tmp_path / "bigbench")
    return tmp_path / "bigbench"


def test_default_split_lists_usable_tasks_sorted_without_held_out(cache):
    ids = list_bigbench_task_ids(cache)
    assert ids == sorted([f"bigbench:{GEN}", f"bigbench:{MC}", f"bigbench:{PARENT}/sub_a"])


def test_held_out_and_all_splits(cache):
    assert list_bigbench_task_ids(cache, split="held_out") == [f"bigbench:{HELD}"]
    assert set(list_bigbench_task_ids(cache, split="all")) == {
        f"bigbench:{GEN}",
        f"bigbench:{MC}",
        f"bigbench:{PARENT}/sub_a",
        f"bigbench:{HELD}",
    }
    with pytest.raises(ValueError, match="split must be one of"):
        list_bigbench_task_ids(cache, split="test")


def test_skipped_tasks_are_logged_with_reasons(cache, caplog):
    with caplog.at_level(logging.INFO, logger="expert_zoo.tasks.bigbench"):
        list_bigbench_task_ids(cache)
    messages = {r.getMessage(): r.levelno for r in caplog.records}

    def level_of(task: str, reason: str) -> int:
        (level,) = [lv for m, lv in messages.items() if f"bigbench:{task}:" in m and reason in m]
        return level

    assert level_of(SHORT, "99 usable examples < 100") == logging.INFO
    assert level_of(f"{PARENT}/sub_b", "20 usable examples") == logging.INFO
    assert level_of(LONG, "median input 700 chars > 600") == logging.INFO
    assert level_of(WIDE, "median 30 options > 20") == logging.INFO
    assert level_of(PROG, "programmatic") == logging.INFO
    assert level_of(PARENT, "no examples") == logging.INFO
    assert level_of(BROKEN, "not valid JSON") == logging.WARNING
    assert not any(HELD in m for m in messages)  # other splits are filtered silently


def test_multiple_choice_task(cache):
    (task,) = iter_bigbench_tasks(cache, families=[MC])
    assert task.task_id == f"bigbench:{MC}" and task.family == MC and task.is_multiple_choice
    assert len(task.train) + len(task.eval) == 120 and len(task.eval) == 24
    by_input = {e.input: e for e in task.train + task.eval}
    assert by_input["Is 4 even?"] == Example("Is 4 even?", "yes", ("yes", "no"))
    assert by_input["Is 3 even?"].output == "no"
    assert by_input["tie"].output == "first"  # ties go to the first option
    assert task.descriptions[0] == "In this task, you will tell whether a number is even."
    assert "Tell whether a number is even." in task.descriptions
    assert any(d.endswith("Pick the correct option.") for d in task.descriptions)  # tie: 3 options
    (held,) = iter_bigbench_tasks(cache, split="held_out")
    assert "A held-out task. Choose one of: yes, no." in held.descriptions


def test_generative_task_applies_prefixes_and_drops_unusable_examples(cache):
    (task,) = iter_bigbench_tasks(cache, families=[GEN])
    assert not task.is_multiple_choice
    examples = task.train + task.eval
    assert len(examples) == 110  # the empty input and the empty target are dropped
    assert Example("In: 0000000007\nOut:", "out7") in examples  # first target of a list


def test_subtask_with_empty_description_falls_back_to_family_words(cache):
    (task,) = iter_bigbench_tasks(cache, families=[PARENT])
    assert task.task_id == f"bigbench:{PARENT}/sub_a" and task.family == PARENT
    assert task.descriptions[0] == f"{family_words(PARENT).capitalize()} sub a."
    assert any(f"{family_words(PARENT)} sub a task." in d for d in task.descriptions)
    assert len(task.descriptions) >= 3


def test_iteration_is_deterministic_and_seeded(cache):
    first = list(iter_bigbench_tasks(cache, split="all"))
    assert first == list(iter_bigbench_tasks(cache, split="all"))
    assert [t.task_id for t in first] == sorted(t.task_id for t in first)
    other = list(iter_bigbench_tasks(cache, split="all", seed=1))
    assert [t.train for t in other] != [t.train for t in first]


def test_caps_limit_and_filters(cache):
    tasks = list(iter_bigbench_tasks(cache, max_train=30, max_eval=5, limit=2))
    assert len(tasks) == 2
    assert all(len(t.train) == 30 and len(t.eval) == 5 for t in tasks)
    assert list_bigbench_task_ids(cache, min_examples=20) == sorted(
        [
            f"bigbench:{GEN}",
            f"bigbench:{MC}",
            f"bigbench:{PARENT}/sub_a",
            f"bigbench:{PARENT}/sub_b",
            f"bigbench:{SHORT}",
        ]
    )


def test_extraction_is_cached_and_the_tar_is_read_once(cache):
    list_bigbench_task_ids(cache)
    (cache / bigbench_sdist.SDIST_NAME).unlink()
    assert len(list_bigbench_task_ids(cache)) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".tasks")]  # no temp left


def test_an_index_without_the_sdist_is_one_clear_error_naming_where_to_put_it(
    tmp_path, monkeypatch
):
    def index_lacks_it(project, version, sha256, dest_dir):
        raise RuntimeError("pip download ... failed:\nERROR: No matching distribution found")

    monkeypatch.setattr(bigbench_sdist, "fetch_sdist", index_lacks_it)
    target = tmp_path / bigbench_sdist.SDIST_NAME
    with pytest.raises(TaskError, match="No matching distribution") as raised:
        _REAL_DOWNLOAD(tmp_path, target)
    assert str(target) in str(raised.value) and bigbench_sdist.SDIST_SHA256 in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no file and no temporary folder left


def test_missing_sdist_without_download_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="sha256"):
        list_bigbench_task_ids(tmp_path, download=False)


def test_unsafe_tar_members_are_ignored(tmp_path):
    evil = {"bigbench-1.0.0/bigbench/benchmark_tasks/../../../evil/task.json": b"{}"}
    _write_fake_sdist(tmp_path / "bb", extra=evil)
    extracted = bigbench_sdist.ensure_extracted(tmp_path / "bb")
    assert not (tmp_path / "evil").exists()
    assert all(".." not in p for p in bigbench_sdist.read_manifest(extracted)["task_json"])


def _fake_pip(payload: bytes, fail_first: bool = False):
    calls = []

    def fake(requirement, dest_dir, pip=None):
        calls.append(pip)
        if fail_first and len(calls) == 1:
            raise RuntimeError("pip refuses direct URL dependencies")
        assert requirement == "pkg==1.0"
        (dest_dir / "pkg-1.0.tar.gz").write_bytes(payload)

    return fake, calls


def test_fetch_sdist_checks_the_pinned_hash(tmp_path, monkeypatch):
    fake, _ = _fake_pip(b"payload")
    monkeypatch.setattr(pypi_fetch, "_pip_download", fake)
    (tmp_path / "a").mkdir()
    good = hashlib.sha256(b"payload").hexdigest()
    assert pypi_fetch.fetch_sdist("pkg", "1.0", good, tmp_path / "a").read_bytes() == b"payload"
    (tmp_path / "b").mkdir()
    with pytest.raises(RuntimeError, match="does not match the pinned"):
        pypi_fetch.fetch_sdist("pkg", "1.0", "0" * 64, tmp_path / "b")


def test_fetch_sdist_falls_back_to_old_pip(tmp_path, monkeypatch):
    fake, calls = _fake_pip(b"from old pip", fail_first=True)
    monkeypatch.setattr(pypi_fetch, "_pip_download", fake)
    monkeypatch.setattr(pypi_fetch, "_fallback_pip", lambda work: ["python", "pip.whl/pip"])
    digest = hashlib.sha256(b"from old pip").hexdigest()
    assert pypi_fetch.fetch_sdist("pkg", "1.0", digest, tmp_path).read_bytes() == b"from old pip"
    assert calls == [None, ["python", "pip.whl/pip"]]


# ---------------------------------------------------------------- paraphrases


def test_describe_is_deterministic_with_paraphrases():
    out = describe("  The task is to  sort\nthe list ", "list_functions")
    assert out == describe("  The task is to  sort\nthe list ", "list_functions")
    assert out[0] == "The task is to sort the list"
    assert "Sort the list." in out
    assert "A list functions task. The task is to sort the list." in out
    assert len(out) >= 3 and len(set(out)) == len(out)


def test_describe_mentions_answer_format_and_falls_back_to_family():
    mc = describe("Guess.", "emoji_movie", multiple_choice=True, labels=["a", "b"])
    assert mc[0] == "Guess." and "Guess. Choose one of: a, b." in mc
    assert "An emoji movie task. Guess." in mc
    assert describe("", "logicalDeduction-3")[0] == "Logical deduction 3."
    assert "Task: Guess." in describe("Guess.", "x")


# ---------------------------------------------------------------- user tasks

HEADER = {"id": "my_task", "description": "Say the colour."}


def _jsonl(rows: list) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def _good_rows(n: int = 12) -> list:
    return [HEADER] + [
        {"input": f"sky {i}", "output": "blue", "options": ["blue", "red"]} for i in range(n)
    ]


def test_valid_user_task(tmp_path):
    path = tmp_path / "colours.jsonl"
    path.write_text(_jsonl(_good_rows()), encoding="utf-8")
    task = load_user_task(path)
    assert isinstance(task, Task) and task.task_id == "user:my_task" and task.family == "my_task"
    assert task.is_multiple_choice and len(task.train) + len(task.eval) == 12
    assert task.descriptions[0] == "Say the colour." and len(task.descriptions) >= 3
    assert load_user_task(path) == task


def test_user_task_defaults_and_extra_descriptions(tmp_path):
    rows = [{"descriptions": ["Echo.", "Repeat it."]}] + [
        {"input": f"w{i}", "output": f"w{i}"} for i in range(10)
    ]
    path = tmp_path / "echo task.jsonl"
    path.write_text(_jsonl(rows), encoding="utf-8")
    task = load_user_task(path)
    assert task.task_id == "user:echo_task" and not task.is_multiple_choice
    assert task.descriptions[:2] == ("Echo.", "Repeat it.")


def _with(line: int, row) -> list:
    rows = _good_rows()
    rows[line - 1] = row
    return rows


BAD_INPUTS = {
    "invalid json": (_with(3, '{"input": "a",'), "line 3: invalid JSON"),
    "missing output": (_with(4, {"input": "a"}), "line 4: missing key 'output'"),
    "output not a string": (
        _with(7, {"input": "a", "output": 3}),
        "line 7: 'output' must be a string, got int",
    ),
    "empty input": (_with(5, {"input": "  ", "output": "blue"}), "line 5: 'input' must not be"),
    "output not in options": (
        _with(6, {"input": "a", "output": "green", "options": ["blue", "red"]}),
        "line 6: 'output' 'green' is not one of 'options'",
    ),
    "options not a list": (
        _with(6, {"input": "a", "output": "b", "options": "b"}),
        "line 6: 'options' must be a list",
    ),
    "unknown key": (_with(2, {"input": "a", "ouput": "b"}), "line 2: unknown key(s) ['ouput']"),
    "not an object": (_with(8, "[1, 2]"), "line 8: expected a JSON object, got list"),
    "header is an example": (_with(1, {"input": "a", "output": "b"}), "line 1: the first line"),
    "header without description": (_with(1, {"id": "x"}), "line 1: missing key 'description'"),
    "too few examples": (_good_rows(9), "9 examples, need at least 10"),
    "id with nothing usable": (
        _with(1, {"id": "../..", "description": "d"}),
        "line 1: 'id': '../..' has no usable characters",
    ),
}


@pytest.mark.parametrize("rows, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_user_task_errors_name_file_and_line(tmp_path, rows, message):
    path = tmp_path / "examples.jsonl"
    path.write_text(_jsonl(rows), encoding="utf-8")
    with pytest.raises(TaskError) as err:
        load_user_task(path)
    assert message in str(err.value) and "examples.jsonl" in str(err.value)


def test_user_task_invalid_utf8_names_the_line():
    data = _jsonl(_good_rows()).encode().replace(b"sky 2", b"sky \xff")
    with pytest.raises(TaskError, match=r"examples.jsonl line 4: invalid UTF-8"):
        parse_user_task(data, "examples.jsonl")


def test_user_task_file_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(user, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.jsonl"
    path.write_text(_jsonl(_good_rows()), encoding="utf-8")
    with pytest.raises(TaskError, match="big.jsonl: .* over the 100 byte limit"):
        load_user_task(path)


def test_user_task_ids_are_sanitised():
    rows = _with(1, {"id": "../../etc/pass wd", "description": "d", "family": "a/b"})
    task = parse_user_task(_jsonl(rows))
    assert task.task_id == "user:etc_pass_wd" and task.family == "a_b"


# ---------------------------------------------------------------- synthetic tasks


def test_synthetic_tasks_are_deterministic_and_varied():
    tasks = synthetic_tasks(n_train=16, n_eval=4, seed=0)
    assert tasks == synthetic_tasks(n_train=16, n_eval=4, seed=0)
    assert tasks != synthetic_tasks(n_train=16, n_eval=4, seed=1)
    assert len(tasks) >= 8 and len({t.task_id for t in tasks}) == len(tasks)
    assert len({t.family for t in tasks}) >= 4
    assert any(is_held_out(t.family) for t in tasks) and not all(
        is_held_out(t.family) for t in tasks
    )
    assert sum(t.is_multiple_choice for t in tasks) >= 3
    for task in tasks:
        assert task.task_id.startswith("synthetic:") and len(task.descriptions) >= 3
        assert (len(task.train), len(task.eval)) == (16, 4)


def test_synthetic_answers_are_correct():
    tasks = {t.task_id: t for t in synthetic_tasks(n_train=20, n_eval=0)}
    for e in tasks["synthetic:add_numbers"].train:
        a, b = e.input.split(" + ")
        assert int(e.output) == int(a) + int(b)
    for e in tasks["synthetic:reverse_word"].train:
        assert e.output == e.input[::-1]
    for e in tasks["synthetic:larger_number"].train:
        assert e.output in e.options and int(e.output) == max(map(int, e.options))


def test_family_round_robin_covers_families_first():
    from expert_zoo.tasks.bigbench import IndexEntry, family_round_robin

    fields = {f: None for f in IndexEntry.__dataclass_fields__ if f not in ("task_id", "family")}
    entries = [
        IndexEntry(task_id=f"bigbench:{fam}/{i}", family=fam, **fields)
        for fam, n in (("a", 3), ("b", 1), ("c", 2))
        for i in range(n)
    ]
    order = [e.task_id for e in family_round_robin(entries)]
    assert order == [
        "bigbench:a/0",
        "bigbench:b/0",
        "bigbench:c/0",
        "bigbench:a/1",
        "bigbench:c/1",
        "bigbench:a/2",
    ]
