"""s2o_lib: the library behind the S²O tutorials (adversarial training with second-order statistics).

Modules: `config`, `errors`, `checks`, `data`, `models`, `attacks`, `s2o`, `laplace`, `defenses`, `checkpoint`,
`lock`, `train`, `distributed`, `fast`, `zoo`, `bundle`, `evaluate`, `sanity`, `stats`, `compare`, `regime`,
`norms`, `bounds`, `presets`, `plots`, `widgets`, `project`, `runner`, `report`, `cli`. See CONTRIBUTING.md for
how they fit.
"""

__version__ = "0.1.0"
