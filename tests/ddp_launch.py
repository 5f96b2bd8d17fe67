"""`python -m s2o_lib` for the torchrun tests of test_distributed.py, with two faults a test can inject.

- ``S2O_TEST_KILL_AT=STEP``: rank 1 dies (``os._exit(1)``, no clean-up) as it starts its STEP-th training step
  (counted from 1 over the whole run), as a crashed or pre-empted process would.
- ``S2O_TEST_OUT_PER_RANK=1``: each rank appends ``-rank<RANK>`` to ``--out`` (ranks that disagree about it).
"""

from __future__ import annotations

import os
import sys

from s2o_lib import train
from s2o_lib.suite.cli import main


def _kill_at(step: int) -> None:
    real = train.training_step
    calls = [0]

    def step_or_die(*args, **kwargs):
        calls[0] += 1
        if calls[0] == step and os.environ["RANK"] == "1":
            os._exit(1)
        return real(*args, **kwargs)

    train.training_step = step_or_die


if __name__ == "__main__":
    argv = sys.argv[1:]
    if os.environ.get("S2O_TEST_KILL_AT"):
        _kill_at(int(os.environ["S2O_TEST_KILL_AT"]))
    if os.environ.get("S2O_TEST_OUT_PER_RANK"):
        at = argv.index("--out") + 1
        argv[at] = f"{argv[at]}-rank{os.environ['RANK']}"
    sys.exit(main(argv))
