"""Settings for the whole test session, unit tests and notebooks alike (``pytest --nbval``).

``pytest`` runs on two workers (pytest-xdist, ``-n 2 --dist loadfile`` in ``pyproject.toml``): each notebook runs
whole on one worker, in its own kernel, while the other worker runs another notebook or the unit tests. Two
workers that each start several intra-op threads fight over the cores and wait for each other at every
operation, so a worker and every kernel or process it starts get one thread. Committed notebook outputs do not
depend on it: the suite passes with ``OMP_NUM_THREADS=1`` as with every core (README, "Tests").
"""

from __future__ import annotations

import os
import sys


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"  # read by torch at import, here and in the kernels it starts
        os.environ["MKL_NUM_THREADS"] = "1"
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
