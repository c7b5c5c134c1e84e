"""Exceptions raised by hypergen: each names the bad value and the way out."""


class HypergenError(Exception):
    """Base class of every error hypergen raises on purpose."""


class BaseModelError(HypergenError, ValueError):
    """A base model path is missing, unreadable, or not a causal language model."""


class DescriptionError(HypergenError, ValueError):
    """A task description is empty, not text, or too long to encode."""


class LayoutError(HypergenError, ValueError):
    """A LoRA layout does not fit a base model, or two layouts do not match."""


class AdapterError(HypergenError, ValueError):
    """An adapter folder or state dict is missing, malformed, or does not fit its layout."""
