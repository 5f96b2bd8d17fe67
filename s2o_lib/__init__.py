"""s2o_lib: the library behind the S²O tutorials (adversarial training with second-order statistics).

Modules: `config`, `data`, `models`, `attacks`, `s2o`, `laplace`, `defenses`, `train`, `checkpoint`,
`evaluate`, `compare`, `bounds`, `plots`, `widgets`, `runner`, `cli`. See CONTRIBUTING.md for how they fit.
"""

__version__ = "0.1.0"
