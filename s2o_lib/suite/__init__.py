"""The machinery around the lectures, which the subject (the modules of `s2o_lib` itself) never imports.

`cli` (``python -m s2o_lib``); `runner`, which executes the notebooks headless, and its `report`; `bundle`,
pretrained runs packed and fetched (`bundle.use_published_bundles` lets `s2o_lib.zoo.trained_model` take a run
from one); `torchrun`, which joins torch's process group and fills in the subject's seam `s2o_lib.processes`;
`project`, the project's metadata; `notebook_setup`, the set-up cell's `set_up`. Imports run one way: from here
into the subject, never back.
"""
