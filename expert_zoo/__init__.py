"""Expert zoo: task sources, expert LoRA training and the zoo store (see docs/design.md)."""
