"""Training of the generator, evaluation harness and benchmarks (see issues 4 and 5)."""
