"""s2o_lib: the library behind the S²O tutorials (adversarial training with second-order statistics).

The subject, what the lectures teach and call: `config`, `errors`, `checks`, `data`, `models`, `attacks`, `s2o`,
`laplace`, `methods`, `defenses`, `awp`, `settings`, `checkpoint`, `lock`, `processes`, `train`, `fast`, `zoo`,
`evaluate`, `sanity`, `stats`, `seeds`, `compare`, `noise`, `norms`, `bounds`, `presets`, `plots`, `widgets`.
The machinery around it (command line, notebook runner and report, bundles, torchrun, project metadata) is
`s2o_lib.suite`, which the subject never imports. See CONTRIBUTING.md for how they fit.
"""

__version__ = "0.1.0"
