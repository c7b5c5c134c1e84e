"""Everything offline around the generator, in three rooms and a cupboard:

- ``training`` itself: training the generator on an expert zoo.
  :mod:`training.data` (description rows with leave-one-out neighbours), :mod:`training.module`
  (stage 1, reconstruction of the zoo's weights, a LightningModule), :mod:`training.e2e` (stage 2,
  end to end through the frozen base model, resumable), :mod:`training.cli` (``hypergen-train``),
  and ``recipes/`` (the TOML recipe of each shipped artifact).
- :mod:`training.evaluation`: the held-out quality benchmark (``hypergen-eval``): the methods,
  the baselines' adapters, paired intervals, the report, the comparison of two runs and the
  confidence calibration.
- :mod:`training.benchmarks`: speed and scale (``hypergen-bench``).
- :mod:`training.scripts`: one-off diagnostics run by hand (``python -m training.scripts.…``).
"""
