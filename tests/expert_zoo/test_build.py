"""The resumable, sharded build and the expert-zoo CLI, on the tiny model and synthetic tasks."""

import os
import signal
import subprocess
import sys
import time

import pytest

from expert_zoo.build import in_shard
from expert_zoo.cli import main
from expert_zoo.store import ExpertZoo
from expert_zoo.tasks import is_held_out, synthetic_tasks

EXPECTED = sorted(t.task_id for t in synthetic_tasks() if not is_held_out(t.family))
TRAIN = ["--steps", "2", "--batch-size", "2", "--eval-examples", "4"]


def _build_cmd(zoo, model_dir, *extra):
    return [
        sys.executable,
        "-m",
        "expert_zoo.cli",
        "--zoo",
        str(zoo),
        "build",
        "--source",
        "synthetic",
        "--base-model",
        str(model_dir),
        *TRAIN,
        *extra,
    ]


def test_shards_partition_the_tasks():
    ids = [f"bigbench:task{i}" for i in range(200)]
    parts = [{t for t in ids if in_shard(t, (i, 3))} for i in range(3)]
    assert set().union(*parts) == set(ids) and sum(len(p) for p in parts) == len(ids)
    with pytest.raises(ValueError):
        in_shard("x", (3, 3))


def test_killed_build_resumes_without_loss_or_duplicates(tmp_path, tiny_model_dir):
    zoo_dir = tmp_path / "zoo"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        _build_cmd(zoo_dir, tiny_model_dir),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not zoo_dir.exists() or len(ExpertZoo(zoo_dir)) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-build: the third expert is being trained or written
    proc.wait()
    partial = len(ExpertZoo(zoo_dir))
    assert 2 <= partial < len(EXPECTED)
    assert subprocess.run(_build_cmd(zoo_dir, tiny_model_dir), env=env).returncode == 0
    zoo = ExpertZoo(zoo_dir)
    assert sorted(r.task_id for r in zoo.records()) == EXPECTED
    assert zoo.verify() == []
    assert all(not is_held_out(r.family) for r in zoo.records())


def test_cli_list_show_search_verify_remove(tmp_path, tiny_model_dir, capsys):
    zoo = str(tmp_path / "zoo")
    assert (
        main(
            [
                "--zoo",
                zoo,
                "build",
                "--source",
                "synthetic",
                "--limit",
                "3",
                "--base-model",
                str(tiny_model_dir),
                *TRAIN,
            ]
        )
        == 0
    )
    assert "added 3" in capsys.readouterr().out
    assert main(["--zoo", zoo, "list"]) == 0
    listing = capsys.readouterr().out
    assert "3 experts" in listing
    first = listing.split()[0]
    assert main(["--zoo", zoo, "show", first]) == 0
    assert '"descriptions"' in capsys.readouterr().out
    assert main(["--zoo", zoo, "search", "reverse the letters of a word", "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and float(lines[0].split()[0]) >= float(lines[1].split()[0])
    assert main(["--zoo", zoo, "verify"]) == 0
    assert main(["--zoo", zoo, "stats"]) == 0
    assert "experts: 3 in" in capsys.readouterr().out
    assert main(["--zoo", zoo, "remove", first]) == 0
    assert "2 experts" in capsys.readouterr().out
    assert main(["--zoo", zoo, "show", "../etc"]) == 2
    assert "error" in capsys.readouterr().err
