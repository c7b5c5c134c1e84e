"""Expert zoo: task sources, expert LoRA training and the zoo store (see issue 3)."""
