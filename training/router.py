"""Train a :class:`hypergen.router.NeighbourRouter` end to end, resumable.

``python -m training.router --zoo ZOO --out DIR`` draws, each step, ``--tasks-per-step``
training experts with one of their descriptions and ``--examples`` of their training examples
(the end-to-end stage's draw, :meth:`training.e2e.EndToEnd.draw`, a function of ``(seed,
step)``); each description's ``k`` leave-one-out neighbours (its own family never retrieved)
are mixed with the router's weights into one exact rank-``k·r`` adapter, and the loss is the
label-smoothed answer cross-entropy through the frozen base model. Step 0 is the top-k merge.

Validation (every ``--val-every`` steps) uses the end-to-end stage's family split and
family-weighted loss, so its numbers sit beside ``hypergen-train``'s: ``val_loss`` (the
router's adapter), ``val_loss_other`` (each task scored with the next validation task's
adapter: the other-description control), and how far the router moved the weights from the
merge's (``tv_from_merge``: total variation per task; ``scale``: ``exp(gamma)``).

Resuming: ``<state>/checkpoint`` holds the router, the AdamW moments and the record
(safetensors + JSON), written every ``--save-every-s`` seconds and at the end; a run with the
same settings continues from it, and ``--steps`` may grow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hypergen._fs import atomic_dir
from hypergen.base_model import load_base_model
from hypergen.layout import Weights
from hypergen.router import NeighbourRouter, record_gain
from training.data import GeneratorDataModule, load_bank
from training.e2e import EndToEnd
from training.e2e_config import E2EConfig
from training.e2e_state import _pack_optimizer, _unpack_optimizer, append_metrics, read_metrics
from training.e2e_tasks import matching, zoo_tasks
from training.evaluation.baselines import zoo_records
from training.module import new_model

logger = logging.getLogger(__name__)

STATE_FORMAT = 1


def expert_gains(zoo, bank) -> torch.Tensor:
    """``(E,)`` each expert's :func:`~hypergen.router.record_gain`, in ``bank``'s order."""
    records = {r["expert_id"]: r for r in zoo_records(zoo)}
    return torch.tensor([record_gain(records.get(e, {})) for e in bank.expert_ids])


def mixed_adapters(weights: Weights, modules, idx: torch.Tensor, w: torch.Tensor) -> Weights:
    """The exact rank-``k·r`` adapters ``Σ_j w_j B_j A_j`` of ``n`` rows: ``idx (n, k)``
    neighbour experts into ``weights`` (stacked ``(E, L, r, in)`` / ``(E, L, out, r)``), ``w
    (n, k)`` their weights (differentiable). ``A`` carries the weight, ``B`` is the expert's."""
    out = {}
    for m in modules:
        a, b = weights[f"{m}.A"][idx], weights[f"{m}.B"][idx]  # (n, k, L, r, in), (n, k, L, out, r)
        a = a * w[:, :, None, None, None]
        out[f"{m}.A"] = a.permute(0, 2, 1, 3, 4).flatten(2, 3)  # (n, L, k·r, in)
        out[f"{m}.B"] = b.permute(0, 2, 3, 1, 4).flatten(3, 4)  # (n, L, out, k·r)
    return out


class RouterStage:
    """The router, the zoo and the end-to-end stage's draw, loss and validation split."""

    def __init__(self, router: NeighbourRouter, stage: EndToEnd, gains: torch.Tensor):
        self.router, self.stage = router, stage
        bank = stage.bank
        self.weights = bank.gather(torch.arange(len(bank)))
        self.emb = bank.expert_embeddings
        self.query = torch.from_numpy(bank.embeddings)
        self.idx = torch.from_numpy(np.asarray(stage.data.idx)).long()
        self.sims = torch.from_numpy(np.asarray(stage.data.sims)).float()
        self.gains = gains
        self.modules = bank.layout.modules

    def mixture(self, rows) -> torch.Tensor:
        rows = torch.as_tensor(list(rows))
        idx = self.idx[rows]
        return self.router(self.query[rows], self.emb[idx], self.sims[rows], self.gains[idx])

    def adapters(self, rows, w: torch.Tensor | None = None) -> Weights:
        w = self.mixture(rows) if w is None else w
        return mixed_adapters(self.weights, self.modules, self.idx[torch.as_tensor(list(rows))], w)

    def merge_weights(self, rows) -> torch.Tensor:
        return torch.softmax(self.sims[torch.as_tensor(list(rows))] / self.router.tau, dim=-1)

    def step_loss(self, step: int) -> torch.Tensor:
        s = self.stage
        rows, examples, owner = s.draw(step)
        self.router.train()
        return s.lm_loss(self.adapters(rows), examples, owner, s.config.label_smoothing)

    @torch.no_grad()
    def validate(self) -> dict:
        s = self.stage
        rows = s.val_rows()
        if not rows:
            return {}
        self.router.eval()
        w = self.mixture(rows)
        out = s.val_losses(self.adapters(rows, w), rows)
        scale = float(self.router.gamma.exp())
        tv = 0.5 * (w / scale - self.merge_weights(rows)).abs().sum(-1)
        out.update(
            scale=round(scale, 4),
            sharpness=round(float(self.router.beta.exp()), 4),
            tv_from_merge=round(float(tv.mean()), 4),
            tv_from_merge_by_task=[round(float(x), 4) for x in tv],
        )
        return out


# --- the resumable loop ----------------------------------------------------------------------
def _save(state: Path, router: NeighbourRouter, opt, record: dict, settings: dict) -> None:
    packed, groups = _pack_optimizer(opt)
    with atomic_dir(state / "checkpoint", overwrite=True) as tmp:
        sd = {k: v.detach().cpu().contiguous() for k, v in router.state_dict().items()}
        save_file(sd, str(tmp / "router.safetensors"), metadata={"format": "pt"})
        save_file(packed, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
        meta = {
            "format": STATE_FORMAT,
            "settings": settings,
            "record": record,
            "param_groups": groups,
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def _load(state: Path, router: NeighbourRouter, opt, settings: dict) -> dict | None:
    folder = state / "checkpoint"
    if not (folder / "state.json").is_file():
        return None
    meta = json.loads((folder / "state.json").read_text())
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{folder} has router state format {meta.get('format')}, not {STATE_FORMAT}"
        )
    if meta["settings"] != settings:
        changed = sorted(
            k for k in {*settings, *meta["settings"]} if settings.get(k) != meta["settings"].get(k)
        )
        raise ValueError(
            f"{state} holds a router run with other settings (differing: {', '.join(changed)}); "
            "resume with the same ones or pass another --state"
        )
    router.load_state_dict(load_file(str(folder / "router.safetensors")))
    opt.load_state_dict(_unpack_optimizer(load_file(str(folder / "optimizer.safetensors")), meta))
    kept = [m for m in read_metrics(state) if m["step"] <= meta["record"]["step"]]
    (state / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))
    return meta["record"]


def param_groups(
    router: NeighbourRouter, lr: float, pair_lr: float | None = None, fixed_scale: bool = False
) -> list[dict]:
    """The optimiser's parameter groups: the pair scorer at ``pair_lr`` (default ``lr``), the
    sharpness and the overall scale at ``lr``. With ``fixed_scale`` the scale stays at 1
    (``gamma`` frozen at 0): the router may only redistribute the merge's weight."""
    router.gamma.requires_grad_(not fixed_scale)
    if pair_lr is None and not fixed_scale:
        return [{"params": list(router.parameters()), "lr": lr}]
    scalars = [router.beta] + ([] if fixed_scale else [router.gamma])
    return [
        {"params": list(router.pair.parameters()), "lr": lr if pair_lr is None else pair_lr},
        {"params": scalars, "lr": lr},
    ]


def train_router(
    rs: RouterStage,
    state: Path,
    settings: dict,
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    val_every: int = 25,
    save_every_s: float = 300.0,
    progress: bool = True,
    pair_lr: float | None = None,
    fixed_scale: bool = False,
) -> dict:
    """Train ``rs.router`` to ``steps`` steps in all (resuming from ``state``); it ends holding
    the best validated weights (step 0, the merge, included). Returns the record. ``pair_lr``
    and ``fixed_scale``: :func:`param_groups`."""
    router = rs.router
    opt = torch.optim.AdamW(
        param_groups(router, lr, pair_lr, fixed_scale), lr=lr, weight_decay=weight_decay
    )
    record = _load(state, router, opt, settings)
    if record is None:
        record = {"step": 0, "seconds": 0.0, "best": None}
        state.mkdir(parents=True, exist_ok=True)
        line = {"step": 0, **rs.validate()}
        append_metrics(state, line, reset=True)
        record["best"] = {"step": 0, "val_loss": line.get("val_loss")}
        router.save_pretrained(state / "best", extra={"step": 0})
        _save(state, router, opt, record, settings)
    else:
        logger.info("resuming the router at step %d from %s", record["step"], state)
    last_save = time.monotonic()
    bar = tqdm(total=steps, initial=record["step"], desc="router", disable=not progress)
    while record["step"] < steps:
        step = record["step"] + 1
        began = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = rs.step_loss(step)
        loss.backward()
        grad = float(torch.nn.utils.clip_grad_norm_(router.parameters(), 1.0))
        opt.step()
        line = {"step": step, "loss": round(float(loss.detach()), 6), "grad_norm": round(grad, 6)}
        if step % val_every == 0 or step == steps:
            line.update(rs.validate())
            best = record["best"]
            if line.get("val_loss") is not None and (
                best["val_loss"] is None or line["val_loss"] < best["val_loss"]
            ):
                record["best"] = {"step": step, "val_loss": line["val_loss"]}
                router.save_pretrained(state / "best", extra={"step": step})
        line["step_s"] = round(time.perf_counter() - began, 2)
        record["step"], record["seconds"] = step, record["seconds"] + line["step_s"]
        append_metrics(state, line)
        bar.update(1)
        bar.set_postfix(
            loss=f"{line['loss']:.3f}",
            best=f"{record['best']['val_loss']}@{record['best']['step']}",
        )
        if time.monotonic() - last_save > save_every_s or step == steps:
            _save(state, router, opt, record, settings)
            last_save = time.monotonic()
    bar.close()
    best = NeighbourRouter.from_pretrained(state / "best")
    router.load_state_dict(best.state_dict())
    return record


# --- command line ------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.router",
        description="Train a router over the retrieved experts end to end (resumable; step 0 is "
        "the top-k merge). See hypergen/router.py.",
    )
    p.add_argument("--zoo", type=Path, required=True, help="zoo folder or export file")
    p.add_argument("--out", type=Path, required=True, help="where the best router is written")
    p.add_argument("--state", type=Path, help="resumable state folder (default: OUT-state)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="train and validate on the experts whose task id matches (fnmatch; "
        "repeatable); the others are neighbours only",
    )
    p.add_argument("--k", type=int, default=8, help="neighbours per description")
    p.add_argument("--tau", type=float, default=0.1, help="the merge's similarity temperature")
    p.add_argument("--hidden", type=int, default=32, help="width of the pair scorer")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--tasks-per-step", type=int, default=8)
    p.add_argument("--examples", type=int, default=2, help="examples per task per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--pair-lr",
        type=float,
        default=None,
        help="learning rate of the pair scorer (default --lr; its output layer starts at zero "
        "and moves slowly)",
    )
    p.add_argument(
        "--fixed-scale",
        action="store_true",
        help="keep the overall scale exp(gamma) at 1: the router only redistributes the "
        "merge's weight over the neighbours",
    )
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument(
        "--val-split",
        choices=("family", "expert"),
        default="family",
        help="validation takes whole families (default) or single experts",
    )
    p.add_argument("--val-every", type=int, default=25)
    p.add_argument("--val-examples", type=int, default=8)
    p.add_argument("--save-every-s", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--base-model", default=None, help="transformers folder or .gguf (default SmolLM2)"
    )
    p.add_argument("--base-dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.steps < 0 or args.val_every < 1:
        print("error: need --steps >= 0 and --val-every >= 1", file=sys.stderr)
        return 2
    try:
        bank = load_bank(args.zoo)
        eligible = matching(args.zoo, bank, args.only) if args.only else None
        data = GeneratorDataModule(
            bank,
            args.k,
            args.tasks_per_step,
            args.val_fraction,
            args.seed,
            True,
            split_by_family=args.val_split == "family",
            eligible=eligible,
        )
        tasks, recipe = zoo_tasks(args.zoo, bank, args.only)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = E2EConfig(
        steps=args.steps,
        tasks_per_step=args.tasks_per_step,
        examples_per_task=args.examples,
        label_smoothing=args.label_smoothing,
        trainable="gates",
        val_examples=args.val_examples,
        family_weighted_val=True,
        only=list(args.only),
        max_length=recipe.max_length,
        base_dtype=args.base_dtype,
        seed=args.seed,
        warmup_steps=0,
        anchor_weight=0.0,
    )
    data.setup()
    plumbing = new_model(bank, data.train_experts, k=args.k, tau=args.tau)  # draw and split only
    stage = EndToEnd(plumbing, bank, load_base_model(args.base_model), tasks, data, config)
    torch.manual_seed(args.seed)
    router = NeighbourRouter(bank.dim, args.k, args.tau, args.hidden)
    settings = {
        "zoo_experts_sha256": hashlib.sha256("\n".join(bank.expert_ids).encode()).hexdigest(),
        "val_experts": data.val_experts.tolist(),
        **{
            k: v
            for k, v in vars(args).items()
            if k not in ("zoo", "out", "state", "steps", "quiet", "val_every", "save_every_s")
        },
    }
    for key, off in (("pair_lr", None), ("fixed_scale", False)):
        if settings[key] == off:  # runs from before these options keep their settings
            del settings[key]
    settings = json.loads(json.dumps(settings, default=str))
    state = args.state or args.out.with_name(f"{args.out.name}-state")
    rs = RouterStage(router, stage, expert_gains(args.zoo, bank))
    try:
        record = train_router(
            rs,
            state,
            settings,
            args.steps,
            args.lr,
            args.weight_decay,
            args.val_every,
            args.save_every_s,
            progress=not args.quiet,
            pair_lr=args.pair_lr,
            fixed_scale=args.fixed_scale,
        )
    finally:
        stage.close()
    router.save_pretrained(args.out, extra={"record": record, "settings": settings})
    print(
        f"wrote {args.out}: best validation {record['best']} after {record['step']} steps "
        f"({record['seconds'] / 3600:.2f} h); metrics in {state / 'metrics.jsonl'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
