"""The two floors of the library: the subject (`s2o_lib`) never imports the machinery (`s2o_lib.suite`), and
training and evaluation know nothing of torch.distributed (they see `s2o_lib.processes`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "s2o_lib"
SUBJECT = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__main__.py")


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, as an absolute dotted name (relative imports resolved)."""
    package = "s2o_lib" if path.parent == PACKAGE else "s2o_lib.suite"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", SUBJECT, ids=lambda p: p.name)
def test_the_subject_never_imports_the_machinery(path):
    assert not {name for name in _imported(path) if name.startswith("s2o_lib.suite")}, path.name


@pytest.mark.parametrize("name", ["train.py", "s2o.py", "evaluate.py", "processes.py", "defenses.py"])
def test_training_and_evaluation_import_no_torch_distributed(name):
    imported = _imported(PACKAGE / name)
    assert not {n for n in imported if n.startswith("torch.distributed") or n == "torch.nn.parallel"}, name
    assert "torch.distributed" not in (PACKAGE / name).read_text().replace("``torch.distributed``", "")


def test_importing_the_subject_loads_no_machinery():
    modules = ", ".join(f"s2o_lib.{p.stem}" for p in SUBJECT if p.stem != "__init__")
    code = f"import sys, importlib\nfor m in '{modules}'.split(', '): importlib.import_module(m)\n" \
           "print(sorted(m for m in sys.modules if m.startswith('s2o_lib.suite')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_drawing_is_read_right():
    """The check above can fail: the suite's own bundle imports the subject's zoo, and the CLI the suite's runner."""
    assert "s2o_lib.zoo" in _imported(PACKAGE / "suite" / "bundle.py")
    assert "s2o_lib.suite.runner" in _imported(PACKAGE / "suite" / "cli.py")


@pytest.mark.parametrize("path", [*SUBJECT, *sorted((PACKAGE / "suite").glob("*.py"))], ids=lambda p: p.stem)
def test_every_module_declares_what_it_exports(path):
    import importlib

    if path.stem == "__init__":
        return
    module = importlib.import_module(("s2o_lib." if path.parent == PACKAGE else "s2o_lib.suite.") + path.stem)
    exported = getattr(module, "__all__", None)
    assert exported, f"{path.name} has no __all__"
    assert [name for name in exported if not hasattr(module, name)] == []
    assert not [name for name in exported if name.startswith("_")]
