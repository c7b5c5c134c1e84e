"""The committed descriptions in users' words: enough per task, not templated, and the zoo's and
the benchmark's kept apart by the held-out rule."""

from __future__ import annotations

import json
import re

from expert_zoo.tasks import is_held_out
from expert_zoo.tasks.debian import DEBIAN_ARCHIVES, debian_source_for
from expert_zoo.tasks.npm import NPM_ARCHIVES, npm_source_for
from expert_zoo.tasks.packaged import source_for
from expert_zoo.tasks.user_descriptions import DESCRIPTIONS_DIR, _table
from training.evaluation.evaluate import USER_DESCRIPTIONS, load_user_descriptions

TEMPLATED = re.compile(r"^(task:|an? [\w ]+ task\.)", re.IGNORECASE)


def _family(task_id: str) -> str:
    if task_id.startswith("bigbench:"):
        return task_id.removeprefix("bigbench:").split("/")[0]
    if task_id.split(":")[0] in DEBIAN_ARCHIVES:
        return debian_source_for(task_id).family
    if task_id.split(":")[0] in NPM_ARCHIVES:
        return npm_source_for(task_id).family
    return source_for(task_id).family


def test_every_zoo_task_has_eight_distinct_untemplated_descriptions():
    table = _table(DESCRIPTIONS_DIR)
    assert len(table) >= 250
    for task_id, texts in table.items():
        assert len(texts) >= 8 and len(set(texts)) == len(texts), task_id
        assert not any(TEMPLATED.match(t) for t in texts), task_id
        assert not is_held_out(_family(task_id)), (
            f"{task_id} is held out: it must not be described for the zoo"
        )


def test_the_held_out_descriptions_cover_only_held_out_tasks_and_never_the_zoos():
    users = load_user_descriptions(USER_DESCRIPTIONS)
    assert len(users) >= 17
    zoo_texts = {t for texts in _table(DESCRIPTIONS_DIR).values() for t in texts}
    for task_id, texts in users.items():
        assert is_held_out(_family(task_id)), task_id
        assert len(texts) == 3 and len(set(texts)) == 3, task_id
        assert not any(TEMPLATED.match(t) for t in texts), task_id
        assert not set(texts) & zoo_texts, task_id
    assert "never for training" in json.loads(USER_DESCRIPTIONS.read_text())["about"]
