"""LoRA layout: which modules of a base model carry LoRA, with what rank and alpha, and the exact
shape of every tensor; conversion between PEFT state dicts and the stacked form.

The stacked form holds, for each target module ``m``, two tensors over all layers::

    weights[f"{m}.A"]  (num_layers, rank, in_features)    # PEFT's lora_A, stacked
    weights[f"{m}.B"]  (num_layers, out_features, rank)   # PEFT's lora_B, stacked

and the update of layer ``l`` is ``ΔW = (alpha / rank) · B[l] @ A[l]``, shape ``(out, in)``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hypergen.errors import AdapterError, LayoutError

DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")
_PEFT_KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<ab>[AB])\.weight$")
_LAYER = re.compile(r"\.(\d+)\.")

Weights = dict[str, torch.Tensor]
"""The stacked form: ``{"q_proj.A": (L, r, in), "q_proj.B": (L, out, r), ...}``."""


@dataclass(frozen=True)
class LoraLayout:
    """Where LoRA sits in a base model and the shape of each of its tensors."""

    num_layers: int
    """Number of transformer blocks carrying LoRA (every block, numbered 0..num_layers-1)."""
    shapes: dict[str, tuple[int, int]]
    """``module -> (out_features, in_features)`` of the adapted ``nn.Linear``."""
    paths: dict[str, str]
    """``module -> path template`` in the base model, e.g. ``model.layers.{layer}.self_attn.q_proj``."""
    rank: int = 8
    """LoRA rank r (docs/design.md, "The pipeline": r=8 on q_proj, v_proj is 460,800 parameters
    on SmolLM2-135M)."""
    alpha: float = 16.0
    """LoRA alpha; the update is scaled by alpha / rank."""
    modules: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", tuple(sorted(self.shapes)))
        object.__setattr__(self, "shapes", {m: tuple(s) for m, s in self.shapes.items()})
        if self.rank < 1 or self.num_layers < 1 or self.alpha <= 0:
            raise LayoutError(f"rank, num_layers and alpha must be positive, got {self}")
        if set(self.shapes) != set(self.paths) or not self.shapes:
            raise LayoutError(f"shapes and paths must name the same modules, got {self}")

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        target_modules=DEFAULT_TARGET_MODULES,
        rank: int = 8,
        alpha: float = 16.0,
    ) -> LoraLayout:
        """Find every ``target_modules`` linear layer of ``model`` and build its layout."""
        found: dict[str, dict[int, tuple[str, tuple[int, int]]]] = {m: {} for m in target_modules}
        for name, module in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in found and isinstance(module, nn.Linear) and (hit := _LAYER.search(name)):
                template = name[: hit.start()] + ".{layer}." + name[hit.end() :]
                found[leaf][int(hit.group(1))] = (
                    template,
                    (module.out_features, module.in_features),
                )
        missing = [m for m, layers in found.items() if not layers]
        if missing:
            raise LayoutError(
                f"modules {missing} are not linear layers inside numbered blocks of this model"
            )
        return cls(**_merge_layers(found), rank=rank, alpha=alpha)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def num_params(self) -> int:
        return sum(self.num_layers * self.rank * (o + i) for o, i in self.shapes.values())

    def expected_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Shape of every tensor of the stacked form."""
        out = {}
        for m, (o, i) in self.shapes.items():
            out[f"{m}.A"] = (self.num_layers, self.rank, i)
            out[f"{m}.B"] = (self.num_layers, o, self.rank)
        return out

    def peft_key(self, module: str, layer: int, ab: str) -> str:
        """PEFT's on-disk key, e.g. ``base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight``."""
        return f"base_model.model.{self.paths[module].format(layer=layer)}.lora_{ab}.weight"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "modules"}

    @classmethod
    def from_dict(cls, data: dict) -> LoraLayout:
        try:
            return cls(**data)
        except TypeError as exc:
            raise LayoutError(f"not a LoRA layout: {exc}") from exc

    def check_matches(self, other: LoraLayout, what: str = "adapter") -> None:
        """Raise :class:`LayoutError` naming the first field where ``other`` differs from self."""
        for name in ("rank", "alpha", "num_layers", "shapes", "paths"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                raise LayoutError(
                    f"{what} layout mismatch in {name}: expected {mine}, found {theirs}"
                )

    # --- conversion -------------------------------------------------------------------------
    def to_peft_state_dict(self, weights: Weights) -> dict[str, torch.Tensor]:
        """Stacked form -> PEFT state dict (keys as written by ``get_peft_model_state_dict``)."""
        self.validate(weights)
        sd = {}
        for m in self.modules:
            for layer in range(self.num_layers):
                for ab in "AB":
                    sd[self.peft_key(m, layer, ab)] = weights[f"{m}.{ab}"][layer].contiguous()
        return sd

    def from_peft_state_dict(self, sd: dict[str, torch.Tensor]) -> Weights:
        """PEFT state dict -> stacked form; unknown, missing or misshapen keys raise AdapterError."""
        expected = {
            self.peft_key(m, layer, ab): (m, layer, ab)
            for m in self.modules
            for layer in range(self.num_layers)
            for ab in "AB"
        }
        unknown = sorted(set(sd) - set(expected))
        if unknown:
            raise AdapterError(
                f"unknown tensor {unknown[0]} (and {len(unknown) - 1} more): "
                f"this layout has modules {list(self.modules)} in {self.num_layers} layers"
            )
        missing = sorted(set(expected) - set(sd))
        if missing:
            raise AdapterError(f"missing tensor {missing[0]} (and {len(missing) - 1} more)")
        for key, (m, _, ab) in expected.items():
            want = self.expected_shapes()[f"{m}.{ab}"][1:]
            if tuple(sd[key].shape) != want:
                raise AdapterError(
                    f"tensor {key}: expected shape {want}, found {tuple(sd[key].shape)}"
                )
        return {
            f"{m}.{ab}": torch.stack(
                [sd[self.peft_key(m, layer, ab)] for layer in range(self.num_layers)]
            )
            for m in self.modules
            for ab in "AB"
        }

    @classmethod
    def from_peft_state_dict_keys(
        cls, sd: dict[str, torch.Tensor], rank: int, alpha: float
    ) -> LoraLayout:
        """Infer the layout of a PEFT state dict from its keys and tensor shapes."""
        found: dict[str, dict[int, tuple[str, tuple[int, int]]]] = {}
        for key, tensor in sd.items():
            match = _PEFT_KEY.match(key)
            hit = _LAYER.search(match.group("path")) if match else None
            if hit is None:
                raise AdapterError(f"tensor {key} is not a LoRA weight of a numbered layer")
            path = match.group("path")
            module, layer = path.rsplit(".", 1)[-1], int(hit.group(1))
            template = path[: hit.start()] + ".{layer}." + path[hit.end() :]
            out_in = found.setdefault(module, {}).get(layer, (template, [None, None]))[1]
            if match.group("ab") == "A":
                out_in[1] = tensor.shape[-1]
            else:
                out_in[0] = tensor.shape[0]
            found[module][layer] = (template, out_in)
        return cls(**_merge_layers(found), rank=rank, alpha=alpha)

    # --- validation -------------------------------------------------------------------------
    def validate(self, weights: Weights) -> None:
        """Check names, shapes, dtype and finiteness of a stacked form; raise AdapterError."""
        expected = self.expected_shapes()
        unknown = sorted(set(weights) - set(expected))
        if unknown:
            raise AdapterError(
                f"unknown tensor {unknown[0]}: this layout expects {sorted(expected)}"
            )
        for name, shape in expected.items():
            if name not in weights:
                raise AdapterError(f"missing tensor {name} (expected shape {shape})")
            t = weights[name]
            if tuple(t.shape) != shape:
                raise AdapterError(f"tensor {name}: expected shape {shape}, found {tuple(t.shape)}")
            if not t.dtype.is_floating_point:
                raise AdapterError(f"tensor {name}: expected a floating dtype, found {t.dtype}")
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise AdapterError(f"tensor {name} has {bad} non-finite values (NaN or inf)")


def _merge_layers(found: dict[str, dict[int, tuple[str, tuple[int, int]]]]) -> dict:
    """Check each module covers layers 0..L-1 with one template and one shape; return fields."""
    counts = {m: len(layers) for m, layers in found.items()}
    if len(set(counts.values())) != 1:
        raise LayoutError(f"modules cover different numbers of layers: {counts}")
    num_layers = next(iter(counts.values()))
    shapes, paths = {}, {}
    for m, layers in found.items():
        if sorted(layers) != list(range(num_layers)):
            raise LayoutError(
                f"module {m} is not in every layer 0..{num_layers - 1}: {sorted(layers)}"
            )
        kinds = {(t, tuple(s)) for t, s in layers.values()}
        if len(kinds) != 1:
            raise LayoutError(
                f"module {m} differs in path or shape across layers: {sorted(kinds)[:2]}"
            )
        ((paths[m], shapes[m]),) = kinds
    return {"num_layers": num_layers, "shapes": shapes, "paths": paths}


def delta_weights(layout: LoraLayout, weights: Weights) -> dict[str, torch.Tensor]:
    """``module -> ΔW`` of shape ``(L, out, in)``, including the alpha / rank scaling."""
    return {m: layout.scaling * weights[f"{m}.B"] @ weights[f"{m}.A"] for m in layout.modules}
