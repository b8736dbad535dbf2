"""The attribution report card (``python -m lit_xai report``): every method × evaluation family on the same images,
with per-image scores, mean ± SE, paired differences, ranks with ties within noise, and one HTML/PNG/CSV/JSON view.

Modules: :mod:`~lit_xai.report.config` (parser, families, validation), :mod:`~lit_xai.report.cells` (cached
per-image scores per method × metric × chunk), :mod:`~lit_xai.report.statistics` (bootstrap CI, pairwise
differences, ranks), :mod:`~lit_xai.report.html` (the page and its files), :mod:`~lit_xai.report.command` (``main``).
"""
