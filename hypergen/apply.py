"""Put adapters into a base model: attach, hot-swap and merge, without reloading the base."""

from __future__ import annotations

from peft import PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from hypergen.adapter_io import LoraAdapter
from hypergen.errors import AdapterError
from hypergen.layout import LoraLayout


def apply_adapter(
    model: PreTrainedModel, adapter: LoraAdapter, adapter_name: str = "default"
) -> PeftModel:
    """Wrap ``model`` (modified in place) in a ``PeftModel`` carrying ``adapter``, unmerged.

    Raises :class:`~hypergen.errors.LayoutError` when the adapter was made for other shapes.
    """
    expected = LoraLayout.for_model(
        model, adapter.layout.modules, adapter.layout.rank, adapter.layout.alpha
    )
    expected.check_matches(adapter.layout, what="adapter")
    config = adapter.peft_config()
    config.base_model_name_or_path = model.name_or_path  # what peft would rename it to, silently
    peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    _load_weights(peft_model, adapter, adapter_name)
    return peft_model.eval()


def swap_adapter(
    peft_model: PeftModel, adapter: LoraAdapter, adapter_name: str = "default"
) -> None:
    """Replace the weights of ``adapter_name`` in place with ``adapter``'s.

    Works whether the adapter is merged (it is unmerged, swapped and merged again) or not; the
    base weights are never reloaded.
    """
    if adapter_name not in peft_model.peft_config:
        raise AdapterError(
            f"no adapter named {adapter_name!r}; loaded: {list(peft_model.peft_config)}"
        )
    config, layout = peft_model.peft_config[adapter_name], adapter.layout
    have = (config.r, config.lora_alpha, sorted(config.target_modules))
    want = (layout.rank, layout.alpha, sorted(layout.modules))
    if have != want:
        raise AdapterError(
            f"cannot swap: slot {adapter_name!r} has (rank, alpha, modules) {have}, adapter has {want}"
        )
    merged = is_merged(peft_model)
    if merged:
        peft_model.unmerge_adapter()
    _load_weights(peft_model, adapter, adapter_name)
    if merged:
        peft_model.merge_adapter()


def is_merged(peft_model: PeftModel) -> bool:
    """Whether any LoRA layer of ``peft_model`` has its update merged into the base weight."""
    return any(m.merged for m in peft_model.modules() if isinstance(m, LoraLayer))


def merge_into_base(peft_model: PeftModel) -> PreTrainedModel:
    """Merge the active adapter into the base weights and drop the LoRA layers (``merge_and_unload``)."""
    return peft_model.merge_and_unload()


def _load_weights(peft_model: PeftModel, adapter: LoraAdapter, adapter_name: str) -> None:
    sd = adapter.to_peft_state_dict()
    device = next(peft_model.parameters()).device
    sd = {k: v.to(device) for k, v in sd.items()}
    result = set_peft_model_state_dict(peft_model, sd, adapter_name=adapter_name)
    missing = [k for k in result.missing_keys if "lora_" in k and f".{adapter_name}." in k]
    if result.unexpected_keys or missing:
        raise AdapterError(
            f"adapter does not fit the model: unexpected {result.unexpected_keys[:3]}, missing {missing[:3]}"
        )
