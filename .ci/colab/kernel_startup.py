"""IPython start-up file of the Colab pass's kernels (`run` copies it into ``$IPYTHONDIR/profile_default/startup``).

Colab's kernel has imported ``google.colab`` before the first cell runs, which is how the set-up cell and
`s2o_lib.suite.notebook_setup.on_colab` know they are on Colab; the stand-in (``google/colab`` beside this file, which `run`
puts into the venv's site-packages where Colab has its own) is imported here the same way. After the first cell
that leaves ``s2o_lib`` imported (the set-up cell) the kernel writes one line to ``$S2O_COLAB_LOG``: where
``s2o_lib`` came from and the versions it runs with, which `run` checks and prints.
"""

import json
import os
import sys
from importlib import metadata

import google.colab  # noqa: F401  (as Colab's kernel does at start)

_LOGGED = []
_VERSIONS = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "ipython", "ipykernel", "ipywidgets",
             "pyautoattack")


def _log(result=None):
    module = sys.modules.get("s2o_lib")
    if module is None or _LOGGED:
        return
    _LOGGED.append(True)
    versions = {}
    for name in _VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    entry = {"cwd": os.getcwd(), "s2o_lib": module.__file__, "python": sys.version.split()[0], **versions}
    with open(os.environ["S2O_COLAB_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")


get_ipython().events.register("post_run_cell", _log)  # noqa: F821  (IPython's start-up files have it)
