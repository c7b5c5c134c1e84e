"""The Gradio app: describe a task, see the nearest zoo experts, get a LoRA adapter, try it against
the base model, download it; browse the zoo; grow a user zoo.

``create_app(generator) -> gr.Blocks`` (in :mod:`app.ui`) is a thin shell over the handlers in
:mod:`app.handlers`, :mod:`app.zoo` and :mod:`app.grow`, which are plain functions over the public
hypergen API and import no gradio. ``python -m app`` launches it (see :mod:`app.__main__`).
"""

from __future__ import annotations

import hypergen  # noqa: F401  (first: it sets HF_HUB_OFFLINE before transformers is imported)

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":  # imported lazily so the handlers work without gradio
        from app.ui import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
