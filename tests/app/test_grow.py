"""The Grow tab: upload validation with line numbers, and an expert trained in the background
into a user zoo (never the shipped one)."""

from __future__ import annotations

import time

import pytest

from app import grow
from app.handlers import AppError
from expert_zoo.train import ExpertTrainConfig
from hypergen.generator import DEFAULT_ZOO
from tests.app.helpers import task_jsonl, tiny_generator


def _upload(tmp_path, data: bytes, name: str = "shout.jsonl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_valid_upload(tmp_path):
    task = grow.read_upload(_upload(tmp_path, task_jsonl()))
    assert task.task_id == "user:shout" and len(task.train) + len(task.eval) == 12
    assert "user:shout" in grow.task_summary(task)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (task_jsonl(bad_line=3), "shout.jsonl line 3: invalid JSON"),
        (task_jsonl(n=4), "4 examples, need at least 10"),
        (b"", "empty file"),
        (b'{"input": "a", "output": "b"}\n', "line 1: the first line must be a header"),
        (b"\xff\xfe\n", "line 1: invalid UTF-8"),
    ],
)
def test_malformed_upload_names_the_line(tmp_path, data, message):
    with pytest.raises(AppError, match=message):
        grow.read_upload(_upload(tmp_path, data))
    assert grow.read_upload(_upload(tmp_path, task_jsonl(), "ok.jsonl"))  # still serving


def test_upload_limits(tmp_path):
    with pytest.raises(AppError, match="Upload a .jsonl task file first"):
        grow.read_upload(None)
    with pytest.raises(AppError, match="did not arrive"):
        grow.read_upload(tmp_path / "missing.jsonl")
    big = _upload(tmp_path, b" " * (grow.MAX_UPLOAD_BYTES + 1))
    with pytest.raises(AppError, match="the limit is 5,242,880"):
        grow.read_upload(big)


def test_refuses_the_shipped_zoo(fake_generator):
    with pytest.raises(ValueError, match="must not be the shipped zoo"):
        grow.Grower(fake_generator, DEFAULT_ZOO)
    with pytest.raises(ValueError, match="must not be the shipped zoo"):
        grow.Grower(fake_generator, DEFAULT_ZOO / "inside")


def _wait(grower: grow.Grower, job_id: str, timeout: float = 300.0) -> list[tuple]:
    seen, start = [], time.monotonic()
    while time.monotonic() - start < timeout:
        seen.append(grower.status(job_id))
        if seen[-1][2]:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {seen[-1]}")


def test_train_an_expert_in_the_background(fake_zoo, tiny_model_dir, tmp_path):
    import shutil

    base = shutil.copytree(tiny_model_dir, tmp_path / "tiny-llama")  # the name the zoo records
    generator = tiny_generator(fake_zoo.root, base)  # its own: Grow changes its zoos
    layout = generator.bank.layout
    config = ExpertTrainConfig(
        steps=2, batch_size=2, max_length=48, eval_examples=2, target_modules=layout.modules
    )
    grower = grow.Grower(generator, tmp_path / "user-zoo", config)
    try:
        assert grower.records_rows() == []
        assert grower.status(None)[2] and grower.status("job-404")[2]
        task = grow.read_upload(_upload(tmp_path, task_jsonl()))
        job_id = grower.submit(task)
        seen = _wait(grower, job_id)
        fraction, text, done = seen[-1]
        assert done and fraction == 1.0 and text.startswith("Added **user__shout**"), text
        assert all(0.0 <= f <= 1.0 for f, _, _ in seen)
        rows = grower.records_rows()
        assert [r[0] for r in rows] == ["user__shout"] and isinstance(rows[0][3], float)
        with pytest.raises(AppError, match="already in the user zoo"):
            grower.submit(task)
        other = grow.read_upload(_upload(tmp_path, task_jsonl(task_id="shout2"), "b.jsonl"))
        assert _wait(grower, grower.submit(other))[-1][1].startswith("Added **user__shout2**")
    finally:
        grower.shutdown()
    # the next Generate retrieves the grown experts, with no restart
    assert "is now in the zoo" in text
    assert {"user__shout", "user__shout2"} <= set(generator.bank.expert_ids)
    made = generator.generate("Repeat the word in capitals.")
    assert made.neighbors[0][0] in {"user__shout", "user__shout2"}
    # and after a restart of the app the user zoo is served from the start
    again = tiny_generator(fake_zoo.root, base)
    grow.Grower(again, tmp_path / "user-zoo", config).shutdown()
    assert len(again.bank) == len(fake_zoo) + 2
