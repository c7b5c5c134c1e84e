"""Handlers of the Grow tab: validate an uploaded JSONL task and train an expert on it into a
user zoo, in the background, one job at a time.

Upload validation is :func:`expert_zoo.tasks.user.parse_user_task` (its errors name the line);
training is :func:`expert_zoo.build.add_task` (the same recipe as the shipped zoo) on a base model
of the trainer's own, so training never touches the model the "try it" box uses. The shipped zoo
is never written: the user zoo is a separate folder. No gradio here.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.handlers import AppError
from expert_zoo.build import add_task
from expert_zoo.store import ExpertRecord, ExpertZoo, expert_id_for
from expert_zoo.tasks import Task, TaskError
from expert_zoo.tasks.user import parse_user_task
from expert_zoo.train import ExpertTrainConfig
from hypergen.base_model import BaseModel, load_base_model
from hypergen.generator import DEFAULT_ZOO

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
"""Largest JSONL upload the app accepts."""
MAX_JOBS_KEPT = 100
"""Finished jobs remembered for their status (oldest forgotten first)."""


def read_upload(path: str | Path | None) -> Task:
    """Validate an uploaded JSONL task; :class:`AppError` carries the line-numbered problem."""
    if path is None:
        raise AppError("Upload a .jsonl task file first.")
    path = Path(path)
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        raise AppError("The upload did not arrive; try again.")
    if size > MAX_UPLOAD_BYTES:
        raise AppError(f"The file has {size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,}.")
    try:
        return parse_user_task(path.read_bytes(), name=path.name)
    except TaskError as exc:
        raise AppError(str(exc)) from exc


def task_summary(task: Task) -> str:
    """Markdown describing a valid task."""
    extra = len(task.descriptions) - 1
    return (
        f"Valid: **{task.task_id}** (family `{task.family}`): {len(task.train)} training and "
        f"{len(task.eval)} eval examples.\n\n> {task.descriptions[0]}\n\n"
        f"({extra} paraphrased descriptions added.)"
    )


@dataclass
class GrowJob:
    """One expert being trained; its fields are read by the page while the worker writes them."""

    job_id: str
    task_id: str
    phase: str = "queued"
    """``queued``, ``loading``, ``training``, ``done`` or ``failed``."""
    message: str = "waiting for the trainer"
    started: float = 0.0
    """``time.monotonic()`` when training started."""
    record: ExpertRecord | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")


class Grower:
    """Trains experts into a user zoo on one background thread (jobs queue up).

    Args:
        generator: the app's generator; its bank fixes the LoRA layout, its encoder embeds the
            descriptions and its ``base_model_source`` names the base model to train on.
        root: the user zoo folder (created on the first job); never the shipped zoo.
        config: the training recipe (default: the generator's layout, 32 steps, ≤ 120 s).
    """

    def __init__(self, generator, root: str | Path, config: ExpertTrainConfig | None = None):
        self.root = Path(root).expanduser().resolve()
        if self.root.is_relative_to(DEFAULT_ZOO.resolve()):
            raise ValueError(f"the user zoo must not be the shipped zoo {DEFAULT_ZOO}")
        layout = generator.bank.layout
        self.config = config or ExpertTrainConfig(
            steps=32,
            max_seconds=120.0,
            eval_examples=40,
            rank=layout.rank,
            alpha=layout.alpha,
            target_modules=tuple(layout.modules),
        )
        self._generator = generator
        self.base_zoos = [p for p in generator.zoo_paths if Path(p).resolve() != self.root]
        """The zoos the generator served before the user zoo joined them."""
        if self._has_experts():  # the user zoo of an earlier run is served from the start
            generator.use_zoos([*self.base_zoos, self.root])
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypergen-grow")
        self._jobs: dict[str, GrowJob] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._base: BaseModel | None = None

    def zoo(self) -> ExpertZoo:
        return ExpertZoo(self.root)

    def _has_experts(self) -> bool:
        return (self.root / "manifest.json").is_file() and len(self.zoo()) > 0

    def submit(self, task: Task) -> str:
        """Queue ``task`` for training; returns the job id to poll with :meth:`status`."""
        if self.root.is_dir() and expert_id_for(task.task_id) in self.zoo():
            raise AppError(
                f"{task.task_id} is already in the user zoo: give the task another "
                '"id" in its header line.'
            )
        with self._lock:
            job = GrowJob(f"job-{next(self._ids)}", task.task_id)
            self._jobs[job.job_id] = job
            self._forget_old()
        self._executor.submit(self._run, job, task)
        return job.job_id

    def status(self, job_id: str | None) -> tuple[float, str, bool]:
        """``(fraction done, markdown, finished)`` of a job."""
        job = self._jobs.get(job_id or "")
        if job is None:
            return 0.0, "No training job: validate a task and press *Train*.", True
        if job.phase == "queued":
            return 0.0, f"{job.task_id}: {self._queue_text(job)}", False
        if job.phase == "loading":
            return 0.05, f"Working on {job.task_id}: loading the base model for training", False
        if job.phase == "training":
            fraction, text = self._training_progress(job)
            return fraction, f"Working on {job.task_id}: {text}", False
        return 1.0, job.message, True

    def records_rows(self) -> list[list]:
        """``[expert id, family, description, gain, flagged]`` of the user zoo's experts."""
        if not (self.root / "manifest.json").is_file():
            return []
        return [
            [r.expert_id, r.family, r.descriptions[0], r.metrics.get("gain"), r.flagged]
            for r in self.zoo().records()
        ]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # --- worker ---------------------------------------------------------------------------------
    def _run(self, job: GrowJob, task: Task) -> None:
        try:
            job.phase = "loading"
            base = self._load_base()
            job.started, job.phase = time.monotonic(), "training"
            record = add_task(
                self.zoo(), base, self._generator.encoder, task, self.config, progress=False
            )
            job.record = record
            self._generator.use_zoos([*self.base_zoos, self.root])
            gain = record.metrics.get("gain", 0.0)
            flag = " (flagged: it does not beat the base model)" if record.flagged else ""
            job.message = (
                f"Added **{record.expert_id}** to the user zoo {self.root}: eval gain "
                f"{gain:+.3f} over the base model in {time.monotonic() - job.started:.0f} s{flag}."
                f" Your expert `{record.expert_id}` is now in the zoo: the next Generate "
                "retrieves from it."
            )
            job.phase = "done"
        except Exception as exc:  # shown in the page; the worker keeps serving
            logger.exception("training %s failed", task.task_id)
            job.message, job.phase = f"**Error:** training {task.task_id} failed: {exc}", "failed"

    def _load_base(self) -> BaseModel:
        if self._base is None:
            self._base = load_base_model(getattr(self._generator, "base_model_source", None))
        return self._base

    def _training_progress(self, job: GrowJob) -> tuple[float, str]:
        """An estimate from the time budget: the trainer reports no steps while it runs."""
        budget = self.config.max_seconds or 1.5 * self.config.steps
        elapsed = time.monotonic() - job.started
        text = f"training and scoring, {elapsed:.0f} s of about {budget:.0f} s (plus scoring)"
        return min(0.1 + 0.85 * elapsed / budget, 0.95), text

    def _queue_text(self, job: GrowJob) -> str:
        with self._lock:
            ahead = [j for j in self._jobs.values() if not j.finished and j is not job]
            order = list(self._jobs)
        before = [j for j in ahead if order.index(j.job_id) < order.index(job.job_id)]
        return f"queued, {len(before)} job(s) ahead"

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.finished]
        for key in finished[: max(0, len(self._jobs) - MAX_JOBS_KEPT)]:
            del self._jobs[key]
