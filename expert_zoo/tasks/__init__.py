"""Task sources of the expert zoo: BIG-bench JSON tasks, users' JSONL tasks, synthetic test tasks.

Every source yields :class:`Task` objects (descriptions + train/eval :class:`Example` s);
:func:`is_held_out` is the one place the held-out family rule lives.
"""

from .base import Example, Task, TaskError, is_held_out, split_examples
from .bigbench import iter_bigbench_tasks, list_bigbench_task_ids, load_index
from .bigbench_sdist import default_cache_dir, ensure_extracted, ensure_sdist
from .paraphrase import describe, describe_examples, family_words
from .synthetic import SYNTHETIC_TASK_NAMES, synthetic_tasks
from .user import load_user_task, parse_user_task

__all__ = [
    "SYNTHETIC_TASK_NAMES",
    "Example",
    "Task",
    "TaskError",
    "default_cache_dir",
    "describe",
    "describe_examples",
    "ensure_extracted",
    "ensure_sdist",
    "family_words",
    "is_held_out",
    "iter_bigbench_tasks",
    "list_bigbench_task_ids",
    "load_index",
    "load_user_task",
    "parse_user_task",
    "split_examples",
    "synthetic_tasks",
]
