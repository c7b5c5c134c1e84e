"""Fault injection: SIGKILL at random points, many times, in ``expert-zoo build``, in concurrent
adds and in ``hypergen-train``; real write errors (a file-size limit, as a full disk gives) in the
store's writer. After every kill the zoo verifies clean but for at most the one orphan an
interrupted add may leave (invisible to readers; the next add of it or ``repair`` adopts it), no
expert is lost or half-added, and the run resumes. Only processes these tests start are killed.

``HYPERGEN_KILL_ROUNDS`` scales the number of rounds (default 1).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from expert_zoo.store import ExpertZoo, expert_id_for
from expert_zoo.tasks import is_held_out, synthetic_tasks
from hypergen.cvae import LoraCVAE
from hypergen.layout import LoraLayout
from tests.conftest import tiny_llama
from tests.expert_zoo.helpers import (
    check_readable,
    ids,
    start_process,
    start_writer,
    wait_ready,
)

ROUNDS = int(os.environ.get("HYPERGEN_KILL_ROUNDS", "1"))
STATS: Counter = Counter()
EXPECTED = sorted(t.task_id for t in synthetic_tasks() if not is_held_out(t.family))
RUN_MAIN = "import sys\nfrom {module} import main\nsys.exit(main(ARGV))\n"


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\nfault injection: {dict(sorted(STATS.items()))}")


def _run(module: str, argv: list[str]):
    """``module.main(argv)`` in a fresh process (from the preloaded forkserver)."""
    return start_process(exec, RUN_MAIN.format(module=module), {"ARGV": argv})


def _kill_after(proc, seconds: float) -> bool:
    """SIGKILL ``proc`` unless it ends within ``seconds``; True when it was killed (a process
    that exits on its own between the check and the signal was not)."""
    proc.join(seconds)
    if not proc.is_alive():
        return False
    proc.kill()
    proc.join()
    assert proc.exitcode in (0, -signal.SIGKILL), proc.exitcode
    return proc.exitcode == -signal.SIGKILL


def _check_after_kill(
    zoo: ExpertZoo, before: set[str], allowed: set[str], max_orphans: int = 1
) -> None:
    """Nothing lost, nothing foreign, at most one orphan per killed add, every listed expert
    whole."""
    after = set(ids(zoo))
    assert before <= after <= allowed
    problems = zoo.verify()
    orphans = [p for p in problems if p.startswith("orphan:")]
    assert len(orphans) <= max_orphans and len(orphans) == len(problems), problems
    assert all(any(f"/{a} " in p for a in allowed) for p in orphans), problems  # killed adds only
    check_readable(zoo)


# --- expert-zoo build ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_build_killed_at_random_points_resumes_without_loss(tmp_path, tiny_model_dir):
    root, rng = tmp_path / "zoo", random.Random(0)
    argv = ["--zoo", str(root), "build", "--source", "synthetic"]
    argv += ["--base-model", str(tiny_model_dir), "--steps", "2", "--batch-size", "2"]
    argv += ["--eval-examples", "4"]
    expected = {expert_id_for(t) for t in EXPECTED}
    kills = 0
    for _ in range(60):
        before = set(ids(ExpertZoo(root)))
        proc = _run("expert_zoo.cli", argv)
        if not _kill_after(proc, _next_kill(root, proc, len(before), rng)):
            assert proc.exitcode == 0
            break
        kills += 1
        _check_after_kill(ExpertZoo(root), before, expected)
    zoo = ExpertZoo(root)
    assert sorted(r.task_id for r in zoo.records()) == EXPECTED and zoo.verify() == []
    assert kills >= 1, "the build finished before any kill landed"
    STATS["build kills survived"] += kills


def _next_kill(root: Path, proc, count: int, rng: random.Random) -> float:
    """Seconds to let a build run before the kill: a third of the time during start-up, else a
    random moment after its next expert lands (so kills spread over training, writing and
    committing whatever the machine's speed)."""
    if rng.random() < 1 / 3:
        return rng.uniform(0.05, 1.5)
    while proc.is_alive() and len(ExpertZoo(root)) <= count:
        time.sleep(0.02)
    return rng.uniform(0.0, 0.4)


# --- concurrent adds ----------------------------------------------------------------------------
@pytest.mark.slow
def test_adds_killed_at_random_points_while_another_writer_runs(tmp_path):
    layout, root, rng = LoraLayout.for_model(tiny_llama()), tmp_path / "zoo", random.Random(1)
    zoo, done, in_flight = ExpertZoo(root), set(), set()
    steady = start_writer(root, layout, "steady", 30, tmp_path / "steady.log")
    for n in range(12 * ROUNDS):
        log = tmp_path / f"victim{n}.log"
        victim = start_writer(root, layout, f"v{n}", 1000, log)
        wait_ready(log)
        assert _kill_after(victim, rng.uniform(0.02, 0.6))
        finished = log.read_text().split()[1:]
        done |= set(finished)
        in_flight.add(f"v{n}_{len(finished)}")
        assert done <= set(ids(zoo))  # every add that returned survived the kill
        STATS["add kills survived"] += 1
    steady.join(120)
    assert steady.exitcode == 0
    steady_ids = {f"steady_{i}" for i in range(30)}
    # each killed victim may leave its one in-flight expert as an orphan (until repair adopts it)
    _check_after_kill(zoo, done | steady_ids, done | in_flight | steady_ids, len(in_flight))
    zoo.repair()
    assert (
        zoo.verify() == [] and done | steady_ids <= set(ids(zoo)) <= done | in_flight | steady_ids
    )
    check_readable(zoo)


# --- hypergen-train ----------------------------------------------------------------------------
def _train_argv(zoo: Path, out: Path, *extra: str) -> list[str]:
    args = ["--zoo", str(zoo), "--out", str(out), "--epochs", "4", "--batch-size", "4"]
    args += ["--hidden-dim", "32", "--latent-dim", "4", "--k", "3", "--val-fraction", "0.25"]
    return [*args, "--accelerator", "cpu", "--quiet", *extra]


def _generator_state(out: Path) -> str:
    """``absent`` or ``complete``; anything half-written fails to load and fails the test."""
    if not out.exists():
        return "absent"
    LoraCVAE.from_pretrained(out)
    return "complete"


@pytest.mark.slow
def test_training_killed_at_random_points_never_leaves_a_half_written_generator(fake_zoo, tmp_path):
    out, rng = tmp_path / "gen", random.Random(2)
    start = time.monotonic()
    proc = _run("training.cli", [*_train_argv(fake_zoo.root, out), "--save-dtype", "float32"])
    assert not _kill_after(proc, 600) and proc.exitcode == 0
    duration, kills = time.monotonic() - start, 0  # kills land from start-up to the save
    for _ in range(6 * ROUNDS):
        proc = _run("training.cli", _train_argv(fake_zoo.root, out, "--overwrite"))
        killed = _kill_after(proc, rng.uniform(0.2, 0.8 * duration))
        kills += killed
        old = [p / "x" for p in tmp_path.glob(".gen.old-*")]  # a kill between the two renames
        assert _generator_state(out) == "complete" or [_generator_state(p) for p in old]
    proc = _run("training.cli", _train_argv(fake_zoo.root, out, "--overwrite"))
    assert not _kill_after(proc, 600) and proc.exitcode == 0  # and the next run goes through
    assert _generator_state(out) == "complete"
    assert kills >= 1
    STATS["training kills survived"] += kills


KILL_WHILE_SAVING = """
import os, signal, hypergen.cvae_config
hypergen.cvae_config.save_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_training_killed_while_saving_publishes_nothing_and_reruns(fake_zoo, tmp_path):
    out = tmp_path / "gen"
    code = KILL_WHILE_SAVING + RUN_MAIN.format(module="training.cli")
    proc = start_process(exec, code, {"ARGV": _train_argv(fake_zoo.root, out)})
    proc.join(600)
    assert proc.exitcode == -signal.SIGKILL and _generator_state(out) == "absent"
    STATS["training kills survived"] += 1
    proc = _run("training.cli", _train_argv(fake_zoo.root, out))
    proc.join(600)
    assert proc.exitcode == 0 and _generator_state(out) == "complete"


# --- write errors (a full disk) -----------------------------------------------------------------
LIMITED = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
try:
    exec(WRITER, globals())
except Exception as exc:
    with open(ERROR, "w") as f:
        f.write(f"{type(exc).__name__}: {exc}")
    raise SystemExit(3)
"""


@pytest.mark.parametrize(
    "limit", [300, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 14000]
)
def test_a_write_error_in_the_store_leaves_the_zoo_as_it_was(tmp_path, limit):
    """Each file-size limit makes a different write of one add fail (or none)."""
    layout = LoraLayout.for_model(tiny_llama())
    zoo = ExpertZoo(tmp_path / "zoo")
    start_writer(zoo.root, layout, "base", 8, tmp_path / "base.log").join(60)
    before_ids, before_rows = ids(zoo), zoo.embeddings()[0]
    error = tmp_path / "error"
    proc = start_writer(
        zoo.root, layout, "full", 1, tmp_path / "log", wrap=LIMITED, LIMIT=limit, ERROR=str(error)
    )
    proc.join(60)
    if proc.exitcode == 0:
        assert ids(zoo) == sorted([*before_ids, "full_0"]) and zoo.verify() == []
        STATS["write limits that let the add through"] += 1
        return
    assert proc.exitcode == 3, "the add died of something else than its write error"
    assert "too large" in error.read_text().lower(), error.read_text()
    assert ids(zoo) == before_ids
    np.testing.assert_array_equal(zoo.embeddings()[0], before_rows)
    problems = zoo.verify()
    assert len(problems) <= 1 and all(p.startswith("orphan:") for p in problems), problems
    check_readable(zoo)
    zoo.repair()
    assert zoo.verify() == [] and set(before_ids) <= set(ids(zoo))
    STATS["write errors injected, zoo intact"] += 1
    STATS["... of which after the folder was published (orphan)"] += len(problems)
