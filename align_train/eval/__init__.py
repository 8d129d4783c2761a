"""``align-train eval``: per-language scores of a model on held-out parallel groups.

:mod:`~align_train.eval.evaluate` runs an evaluation (loss of the reference answers, greedy generations
from :mod:`~align_train.eval.generate`, answers read by :mod:`~align_train.eval.scoring`);
:mod:`~align_train.eval.report` turns the per-row results into per-language metrics and report files.
"""
