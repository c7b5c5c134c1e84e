"""The end-to-end stage (:mod:`training.e2e`) in several processes on one machine: each step's
tasks are dealt to the processes (task ``i`` to process ``i mod n``), their gradients summed
with ``torch.distributed`` (gloo, so CPU cores; one process per core is what makes a
two-core machine train one run about twice as fast), and the first process validates, saves the
state and logs. The state is the single-process one, so a run may be resumed with another
number of processes: the same run statistically, not bit for bit (each process draws its own
dropout masks; the latent noise is one draw per step, dealt like the tasks). ``hypergen-train --sft-processes N`` runs it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hypergen.base_model import load_base_model
from hypergen.cvae import CVAEConfig, LoraCVAE
from training.data import GeneratorDataModule, load_bank
from training.e2e import EndToEnd, train_e2e
from training.e2e_config import E2EConfig
from training.e2e_extra import ExtraTasks
from training.e2e_tasks import matching, zoo_tasks


@dataclass
class Job:
    """What every process rebuilds the stage from (sent to the processes by pickling)."""

    zoo: str
    generator_config: dict
    generator_state: dict
    """The starting generator's state dict (after any reconstruction epochs)."""
    recipe: dict
    state: str
    settings: dict
    base_model: str | None
    val_fraction: float
    seed: int
    exclude_same_family: bool
    split_by_family: bool = False
    progress: bool = False
    extra: ExtraTasks | None = None
    """The tasks without an expert, built once by the caller (their rows, embeddings and
    neighbours), so every process trains on the same rows without loading the encoder."""


def run(job: Job, processes: int) -> dict:
    """Train with ``processes`` processes; returns the run's record (from the saved state)."""
    if processes < 2:
        raise ValueError(f"run the stage in one process without this module (got {processes})")
    with tempfile.TemporaryDirectory() as tmp:
        rendezvous = str(Path(tmp) / "rendezvous")
        mp.spawn(_worker, args=(processes, rendezvous, job), nprocs=processes, join=True)
    return json.loads((Path(job.state) / "checkpoint" / "state.json").read_text())["record"]


def _worker(rank: int, world: int, rendezvous: str, job: Job) -> None:
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        bank = load_bank(job.zoo)
        model = LoraCVAE(CVAEConfig.from_dict(job.generator_config))
        model.load_state_dict(job.generator_state)
        config = E2EConfig.from_dict(job.recipe)
        data = GeneratorDataModule(
            bank,
            model.config.k,
            1,
            job.val_fraction,
            job.seed,
            job.exclude_same_family,
            split_by_family=job.split_by_family,
            eligible=matching(job.zoo, bank, config.only) if config.only else None,
        )
        tasks, _ = zoo_tasks(job.zoo, bank, config.only)
        base = load_base_model(job.base_model)
        stage = EndToEnd(model.train(), bank, base, tasks, data, config, job.extra)
        try:
            train_e2e(stage, Path(job.state), job.settings, progress=job.progress)
        finally:
            stage.close()
    finally:
        dist.destroy_process_group()
