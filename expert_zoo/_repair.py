"""Checking and repairing an expert zoo on disk (the caller holds the zoo lock).

:func:`verify` compares the manifest, the index it names and the expert folders. :func:`repair`
rebuilds manifest and index from the sound expert folders, using their stored embeddings (nothing
is re-encoded): orphans (folders an interrupted add published) are adopted, damaged folders are
moved to ``<root>/quarantine/``, entries whose folder is gone are dropped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from expert_zoo import _folder, _index
from expert_zoo._index import ZooError
from expert_zoo.rejected import FILES as REJECTED_FILES
from expert_zoo.rejected import TMP_PREFIX as REJECTED_TMP

logger = logging.getLogger(__name__)

EXPERTS = "experts"
QUARANTINE = "quarantine"


def verify(root: Path) -> list[str]:
    """Problems found, one line each, prefixed by their kind (see ``ExpertZoo.verify``)."""
    names = _folder_names(root)
    try:
        snap = _index.read_snapshot(root)
    except ZooError as exc:
        return [f"manifest: {exc}"]
    problems, rows = _verify_index(root, snap)
    dim = (snap.header or {}).get("dim")
    for rec in snap.records:
        expert_id, folder = rec["expert_id"], root / EXPERTS / rec["expert_id"]
        if expert_id not in names:
            problems.append(f"missing: expert {expert_id} is in the manifest, {folder} is gone")
            continue
        found, problem = _folder.check_folder(folder, dim)
        if problem:
            problems.append(f"corrupt: {folder}: {problem}")
        elif _json(found) != _json(rec):
            problems.append(f"stale: {folder}/expert.json differs from its manifest entry")
        elif rows is not None:
            start, stop = snap.spans[expert_id]
            if not np.array_equal(rows[start:stop], _folder.read_embeddings(folder)):
                problems.append(f"index: rows of {expert_id} differ from its stored embeddings")
    for name in sorted(names - set(snap.by_id)):
        if _index.id_problem(name):
            problems.append(f"unknown: {root / EXPERTS / name} is not an expert folder")
        else:
            problems.append(
                f"orphan: {root / EXPERTS / name} is not in the manifest (an "
                "interrupted add?); repair adopts it"
            )
    return problems


LOCK = f"{_index.MANIFEST}.lock"


def strays(root: Path) -> list[Path]:
    """Files in the zoo root that the manifest does not name: leftovers of crashed or
    interrupted writers (harmless to readers; the next commit collects index files). The
    previous generation's index is not one: each commit keeps it for readers that read the old
    manifest a moment before."""
    try:
        snap = _index.read_snapshot(root)
    except ZooError:
        return []
    previous = f"index-{snap.generation - 1}.faiss"
    named = {_index.MANIFEST, LOCK, snap.index_name, previous, EXPERTS, QUARANTINE}
    named |= set(REJECTED_FILES)  # the build's record of experts it did not keep
    return [
        path
        for path in sorted(root.iterdir())
        if path.name not in named and not path.name.startswith(REJECTED_TMP)
    ]


def _verify_index(root: Path, snap: _index.Snapshot) -> tuple[list[str], np.ndarray | None]:
    if snap.index_name is None:
        return (
            ["index: the manifest lists experts but names no index"] if snap.records else []
        ), None
    try:
        index = _index.read_index(root, snap.index_name)
        _index.check_index(index, snap, root)
    except ZooError as exc:
        return [f"index: {exc}"], None
    return [], _index.index_rows(index)


def repair(root: Path) -> list[str]:
    """Make the zoo sound again; return what was done (empty: nothing was wrong)."""
    actions = _clean_leftovers(root)
    if not verify(root):
        return actions + _delete_strays(root)
    try:
        snap = _index.read_snapshot(root)
    except ZooError as exc:
        snap = _index.Snapshot()
        actions.append(f"ignored the unreadable manifest ({exc})")
    sound = _sound_folders(root, snap, actions)
    header = snap.header or _majority_header(sound)
    for expert_id in sorted(sound):
        if _index.header_of(sound[expert_id][0], sound[expert_id][1].shape[1]) != header:
            del sound[expert_id]
            actions.append(
                _quarantine(
                    root, expert_id, "encoder, base model, layout or dim differs from the zoo's"
                )
            )
    order = [i for i in snap.by_id if i in sound] + sorted(set(sound) - set(snap.by_id))
    actions += _describe_changes(snap, sound)
    index = _index.new_index(header["dim"]) if order else None
    for expert_id in order:
        index.add(sound[expert_id][1])
    new = _index.commit(root, index, header, [sound[i][0] for i in order])
    actions.append(
        f"committed manifest generation {new.generation}: {len(order)} experts, "
        f"{new.num_rows} rows in {new.index_name}"
    )
    actions += _delete_strays(root)
    for line in actions:
        logger.info("repair %s: %s", root, line)
    return actions


def _sound_folders(
    root: Path, snap: _index.Snapshot, actions: list[str]
) -> dict[str, tuple[dict, np.ndarray]]:
    """``id -> (record, embeddings)`` of every sound folder; quarantine the others."""
    dim = (snap.header or {}).get("dim")
    sound = {}
    for name in sorted(_folder_names(root)):
        folder = root / EXPERTS / name
        problem = _index.id_problem(name)
        record, problem = (
            ({}, problem)
            if problem
            else _folder.check_folder(folder, dim, fallback=snap.by_id.get(name))
        )
        if problem:
            actions.append(_quarantine(root, name, problem))
            continue
        if _record_unreadable(folder):
            _folder.write_record(folder, record)
            actions.append(f"restored {folder}/expert.json from the manifest")
        sound[name] = record, _folder.read_embeddings(folder)
    return sound


def _describe_changes(snap: _index.Snapshot, sound: dict) -> list[str]:
    lines = [f"dropped {i} from the manifest" for i in snap.by_id if i not in sound]
    lines += [f"adopted orphan {i}" for i in sorted(set(sound) - set(snap.by_id))]
    lines += [
        f"updated the manifest entry of {i} from its expert.json"
        for i in snap.by_id
        if i in sound and _json(sound[i][0]) != _json(snap.by_id[i])
    ]
    return lines


def _record_unreadable(folder: Path) -> bool:
    try:
        _folder.read_record(folder)
    except (OSError, ValueError):
        return True
    return False


def _majority_header(sound: dict[str, tuple[dict, np.ndarray]]) -> dict | None:
    """The header most sound folders share (ties: the first by id)."""
    if not sound:
        return None
    keys = [
        json.dumps(_index.header_of(sound[i][0], sound[i][1].shape[1]), sort_keys=True)
        for i in sorted(sound)
    ]
    return json.loads(Counter(keys).most_common(1)[0][0])


def _quarantine(root: Path, name: str, why: str) -> str:
    target = root / QUARANTINE / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    target.parent.mkdir(exist_ok=True)
    os.replace(root / EXPERTS / name, target)
    return f"quarantined {name} ({why}) to {target}"


def discard(folder: Path) -> None:
    """Delete an expert folder: rename it out of sight first, so no half-deleted folder shows."""
    if not folder.exists():
        return
    trash = folder.with_name(f".{folder.name}.removed-{uuid.uuid4().hex[:8]}")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _folder_names(root: Path) -> set[str]:
    """Entries of ``experts/`` except hidden ones (temporary folders of writers)."""
    experts = root / EXPERTS
    if not experts.is_dir():
        return set()
    return {p.name for p in experts.iterdir() if not p.name.startswith(".")}


def restore_interrupted_replace(experts: Path, expert_id: str) -> bool:
    """Put back ``experts/<id>`` if a replace stopped between ``atomic_dir``'s two renames.

    ``atomic_dir`` replaces a folder by moving the old one to ``.<id>.old-*/x``, then renaming
    the new one in; an exception or crash between the two leaves no ``experts/<id>``.
    """
    target = experts / expert_id
    for old in sorted(experts.glob(f".{expert_id}.old-*")):
        if not target.exists() and (old / "x").is_dir():
            logger.warning("restoring %s from %s (an interrupted replace)", target, old)
            os.replace(old / "x", target)
            shutil.rmtree(old, ignore_errors=True)
            return True
    return False


def _delete_strays(root: Path) -> list[str]:
    done = []
    for path in strays(root):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        done.append(f"deleted stray {path}")
    return done


def _clean_leftovers(root: Path) -> list[str]:
    """Delete what interrupted writers left in ``experts/`` (lock held); return restorations."""
    experts, actions = root / EXPERTS, []
    for path in sorted(experts.iterdir()) if experts.is_dir() else ():
        if not path.name.startswith("."):
            continue
        name, _, kind = path.name[1:].rpartition(".")
        if kind.startswith("old-") and restore_interrupted_replace(experts, name):
            actions.append(
                f"restored {experts / name}, which an interrupted replace had moved away"
            )
        logger.info("deleting leftover %s", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return actions


def _json(record: dict) -> str:
    """Canonical JSON text of a record (compares NaN metrics equal, unlike ``==``)."""
    return json.dumps(record, sort_keys=True)
