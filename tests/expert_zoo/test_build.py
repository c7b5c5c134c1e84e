"""The resumable, sharded build and the expert-zoo CLI, on the tiny model and synthetic tasks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    # shards nest: shard 1/2's tasks are exactly those of 1/4 and 3/4 (README: rebalancing)
    assert all(in_shard(t, (1, 2)) == (in_shard(t, (1, 4)) or in_shard(t, (3, 4))) for t in ids)


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


def test_build_only_trains_the_tasks_its_patterns_match(tmp_path, tiny_model_dir, capsys):
    zoo = str(tmp_path / "zoo")
    only = ["--only", "synthetic:c*", "--only", "synthetic:parity"]
    argv = ["--zoo", zoo, "build", "--source", "synthetic", "--base-model", str(tiny_model_dir)]
    assert main([*argv, *TRAIN, *only]) == 0
    assert "added 3" in capsys.readouterr().out
    got = sorted(r.task_id for r in ExpertZoo(zoo).records())
    assert got == ["synthetic:copy_first_word", "synthetic:count_letters", "synthetic:parity"]
    assert main([*argv, *TRAIN, "--only", "synthetic:no_such_task"]) == 2
    assert "no task of --source synthetic matches" in capsys.readouterr().err


def _write_task(path, name: str, n: int = 12):
    import json

    lines = [{"description": f"Answer the {name} question with yes or no.", "id": name}]
    lines += [
        {
            "input": f"{name} question {i}?",
            "output": "yes" if i % 2 else "no",
            "options": ["yes", "no"],
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_two_concurrent_cli_adds_both_land(tmp_path, tiny_model_dir):
    zoo_dir = tmp_path / "zoo"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "expert_zoo.cli",
                "--zoo",
                str(zoo_dir),
                "add",
                "--task",
                str(_write_task(tmp_path / f"t{i}.jsonl", f"task{i}")),
                "--base-model",
                str(tiny_model_dir),
                *TRAIN,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    zoo = ExpertZoo(zoo_dir)
    assert sorted(r.task_id for r in zoo.records()) == ["user:task0", "user:task1"]
    assert zoo.verify() == []


def test_add_reports_a_bad_task_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"description": "d"}\n{"input": 3, "output": "x"}\n')
    assert main(["--zoo", str(tmp_path / "zoo"), "add", "--task", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_build_reads_its_recipe_file_under_the_command_line(tmp_path, monkeypatch, capsys):
    from expert_zoo import cli as zoo_cli

    seen = {}
    monkeypatch.setitem(zoo_cli.COMMANDS, "build", lambda zoo, args: seen.update(vars(args)) or 0)
    shipped = Path(zoo_cli.__file__).parent / "recipes" / "zoo-v2.toml"
    argv = ["--zoo", str(tmp_path / "zoo"), "build", "--config", str(shipped), "--steps", "3"]
    assert zoo_cli.main(argv) == 0
    assert seen["source"] == "all" and seen["retrain_flagged"] is True
    assert seen["val_examples"] == 32 and seen["max_seconds"] == 600.0
    assert seen["base_dtype"] == "bfloat16" and seen["drop_flagged"] is True
    assert seen["steps"] == 3  # the command line wins
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    with pytest.raises(SystemExit):
        zoo_cli.main(["--zoo", str(tmp_path / "zoo"), "build", "--config", str(bad)])
    assert "unknown option 'stepz'" in capsys.readouterr().err
