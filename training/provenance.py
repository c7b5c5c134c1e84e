"""What a generator checkpoint records of its training (``config.json``'s ``extra``): a flat list
of stages, oldest first, each a JSON object with ``"stage"`` (``"reconstruction"`` or
``"end-to-end"``), the zoo it was trained on, where it started (``"warm_start"``: a checkpoint
folder, or ``None`` for a fresh generator) and that stage's own record (recipe, steps, seconds,
validation). A warm start appends to the history of the generator it starts from.
"""

from __future__ import annotations

STAGES = ("reconstruction", "end-to-end")
_NESTING = ("sft", "warm_start", "warm_start_record", "seconds_total", "stages")


def stages(extra: dict) -> list[dict]:
    """The stages recorded in ``extra``, oldest first. Reads the older form too, where each
    warm start nested the previous record under ``warm_start_record`` and the end-to-end stage
    sat under ``sft`` (the shipped generator of 2026-11 has it)."""
    if "stages" in extra:
        return [dict(s) for s in extra["stages"]]
    chain, record = [], extra
    while record:
        chain.append(record)
        record = record.get("warm_start_record") or {}
    out = []
    for record in reversed(chain):
        start = record.get("warm_start")
        if "epochs" in record:
            own = {k: v for k, v in record.items() if k not in _NESTING}
            out.append({"stage": "reconstruction", "warm_start": start, **own})
            start = None  # the end-to-end stage of the same run started from its output
        if "sft" in record:
            out.append({"stage": "end-to-end", "warm_start": start, **record["sft"]})
    return out


def extend(extra: dict, new: list[dict], seconds: float) -> dict:
    """``extra`` for a checkpoint trained from one recording ``extra`` through ``new`` stages."""
    unknown = [s.get("stage") for s in new if s.get("stage") not in STAGES]
    if unknown:
        raise ValueError(f"unknown training stages {unknown}; known: {STAGES}")
    return {"stages": stages(extra) + new, "seconds_total": round(seconds, 1)}
