"""s2o_lib: the library behind the S²O tutorials (adversarial training with second-order statistics).

Modules: `config`, `errors`, `checks`, `data`, `models`, `attacks`, `s2o`, `laplace`, `defenses`, `checkpoint`,
`train`, `fast`, `zoo`, `evaluate`, `sanity`, `compare`, `norms`, `bounds`, `presets`, `plots`, `widgets`,
`runner`, `report`, `cli`. See CONTRIBUTING.md for how they fit.
"""

__version__ = "0.1.0"
