"""The machinery around the lectures, which the subject (every module of `s2o_lib` above) never imports.

`cli` (``python -m s2o_lib``), `runner` (executes the notebooks headless) with its `report`, `bundle` (pretrained
runs packed and fetched: `bundle.use_published_bundles` lets `s2o_lib.zoo.trained_model` take a run from one),
and `project` (the project's metadata and `project.set_up`, the notebooks' set-up cell). Imports run one way:
from here into the subject, never back.
"""
