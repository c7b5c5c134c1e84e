"""Training of the generator on an expert zoo, and (issue 5) its evaluation harness and benchmarks.

- :mod:`training.data`: ``GeneratorDataModule``, one item per (expert, description) row of a zoo,
  with neighbours retrieved leave-one-out (never the target itself; by default not its family).
- :mod:`training.module`: ``GeneratorModule``, the LightningModule training a
  :class:`hypergen.cvae.LoraCVAE` (reconstruction + annealed KL, optional ΔW loss).
- :mod:`training.cli`: ``hypergen-train --zoo PATH --out DIR``.
"""
