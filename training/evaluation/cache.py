"""What makes a stopped or repeated benchmark run cheap: per method and task results cached by
everything they depend on (:class:`ScoreCache`), and the run's finished tasks
(:class:`Progress`)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from expert_zoo.tasks import Example, Task
from training.evaluation import report

if TYPE_CHECKING:
    from training.evaluation.methods import Harness

logger = logging.getLogger("hypergen.eval")

GENERATOR_FREE = ("base", "base+description", "base+user-description", "in-context")
"""Methods whose results depend on neither the generator nor the zoo."""

NEIGHBOUR_FREE = ("nearest", "multitask", "oracle")
"""Methods that depend on the zoo but not on how many neighbours are merged (``k``) or how they
are weighted (``tau``): the nearest expert, and adapters trained on the zoo's tasks or recipe."""

TRAINED = ("multitask", "oracle")
"""Methods that train an adapter (with the zoo's recipe, in ``--train-dtype`` where given)."""


class ScoreCache:
    """``<folder>/<method>/<sha256>.json``: each method's result on a task, keyed by everything
    it depends on (the hypergen methods also by ``generator_sha256``), so a run with another
    generator (or a rerun after a change to hypergen only) scores just the hypergen methods
    again. Small JSON files, meant to be committed with the run."""

    def __init__(
        self,
        folder: Path,
        common: dict,
        zoo_sha256: str,
        read: bool = True,
        generator_sha256: str | None = None,
    ):
        self.folder, self.common, self.zoo, self.read = folder, common, zoo_sha256, read
        self.generator = generator_sha256

    def key(self, h: Harness, method: str, task: Task, examples: list[Example]) -> str:
        data = json.dumps([(e.input, e.output, e.options) for e in (*task.train, *examples)])
        parts = {**self.common, "method": method, "task_id": task.task_id}
        parts["examples_sha256"] = hashlib.sha256(data.encode()).hexdigest()
        parts["descriptions"] = list(h.descriptions(task))
        parts["users"] = list(h.user_descriptions.get(task.task_id, ()))
        if method not in GENERATOR_FREE:
            parts["zoo"] = self.zoo
            if method not in NEIGHBOUR_FREE:
                parts.update(k=h.k, tau=h.tau)
        if method.startswith("hypergen"):
            parts["generator_sha256"] = self.generator
        if method.startswith("router"):
            parts["router_sha256"] = h.router_sha256
        if method in TRAINED and h.train_dtype is not None:  # the other methods do not train
            parts["train_dtype"] = h.train_dtype
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, method: str, key: str) -> dict | None:
        path = self.folder / method / f"{key}.json"
        if not self.read:
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, method: str, key: str, result: dict) -> None:
        path = self.folder / method / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, default=report.jsonable))
        tmp.replace(path)


SCORING = 4
"""Version of what a finished task records; 2: every method's answer loss (and choice loss);
3: per-example results, greedy answers on multiple-choice tasks, held-out tasks re-split to
their --eval-examples (:func:`benchmark_split`), shared-prompt option scoring; 4: greedy
answers decoded from the shared prompt's cache, long prompts cut as in likelihood scoring."""


# --- resuming a stopped run ------------------------------------------------------------------
class Progress:
    """``<out>/progress.jsonl``: the run's key on the first line, then one finished task a line.

    The key holds every setting that changes a number (methods, examples, seeds, budgets, k,
    tau) and fingerprints of the models, the generator checkpoint and the zoo's experts; a file
    with another key is set aside (renamed ``progress.jsonl.old``) and the run starts over.
    """

    def __init__(self, out: Path, key: dict, fresh: bool = False):
        self.path, self.key = out / "progress.jsonl", key
        self.done: dict[str, dict] = {}
        if not fresh:
            self.done = self._read()
        if self.done:
            logger.info("resuming: %d finished tasks read from %s", len(self.done), self.path)
        else:
            if self.path.exists():
                self.path.replace(self.path.with_name("progress.jsonl.old"))
            out.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"key": key}, sort_keys=True) + "\n")

    def _read(self) -> dict[str, dict]:
        try:
            lines = self.path.read_text().splitlines()
            if not lines or json.loads(lines[0]).get("key") != self.key:
                return {}
        except (OSError, json.JSONDecodeError, AttributeError):
            return {}
        done, whole = {}, 1
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that task runs again
                break
            done[entry["task_id"]] = entry  # a task finished twice (two runs at once): the last
            whole += 1
        if whole < len(lines):  # drop a cut-short tail so the next append starts a new line
            self.path.write_text("".join(line + "\n" for line in lines[:whole]))
        return done

    def add(self, entry: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(entry, default=report.jsonable) + "\n")
            f.flush()


def fingerprint(path: Path) -> str:
    """sha256 over a file or a folder's files (names and bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
