"""After the Colab pass's notebooks (`run`): did each kernel run as on Colab? Standard library only.

    python check_kernels.py KERNELS_LOG CONTENT RUNS NOTEBOOKS

Each kernel wrote one line to KERNELS_LOG (`kernel_startup.py`). It must have run in
``CONTENT/<notebook>/s2o-tutorials/notebooks``, the clone its set-up cell made, with that clone's ``s2o_lib``;
there must be one such kernel per notebook, and models must have been trained into the model cache RUNS,
which was empty at the start. Prints the versions the kernels ran with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def problems(kernels: list[dict], content: Path, runs: Path, notebooks: int) -> list[str]:
    found = []
    if len(kernels) != notebooks:
        found.append(f"{len(kernels)} kernels reported for {notebooks} notebooks")
    for kernel in kernels:
        cwd, module = Path(kernel["cwd"]).resolve(), Path(kernel["s2o_lib"]).resolve()
        clone = cwd.parent
        if cwd.name != "notebooks" or clone.name != "s2o-tutorials" or clone.parent.parent != content.resolve():
            found.append(f"a kernel ran in {cwd}, not in a clone made in its content folder")
        elif not module.is_relative_to(clone / "s2o_lib"):
            found.append(f"the kernel in {cwd} imported {module}, not its clone's s2o_lib")
    if not [path for path in runs.glob("*/*") if path.is_dir()]:
        found.append(f"no model was trained into the model cache {runs}")
    return found


def main(argv: list[str]) -> int:
    log, content, runs, notebooks = Path(argv[0]), Path(argv[1]), Path(argv[2]), int(argv[3])
    kernels = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    found = problems(kernels, content, runs, notebooks)
    for problem in found:
        print("colab:", problem, file=sys.stderr)
    if found:
        return 1
    trained = sum(1 for path in runs.glob("*/*") if path.is_dir())
    print(f"colab: {notebooks} kernels, each with its own clone's s2o_lib; {trained} models trained from an empty cache")
    versions = {key: value for key, value in kernels[-1].items() if key not in ("cwd", "s2o_lib")}
    print("colab: the kernels ran", ", ".join(f"{key} {value}" for key, value in versions.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
