"""Stand-in for Colab's google.colab: drive.mount records where it was asked to mount.

The Colab pass of CI (`.ci/colab/run`) puts it into its venv, and tests/test_setup_cell.py onto its Python's
path, where Colab has its own google-colab.
"""

from typing import ClassVar


class drive:
    calls: ClassVar[list[str]] = []

    @staticmethod
    def mount(mountpoint, **kwargs):
        drive.calls.append(mountpoint)
