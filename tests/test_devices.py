"""One device, no mismatches (issue 11 §2): every library function that takes a model and tensors moves its
inputs to the model's device itself, and its results live where its docstring says.

There is no GPU on the CI machine, so these tests run on a **simulated CUDA device**: `FakeCuda`, a
`torch.overrides.TorchFunctionMode` that sees every torch call (functions, tensor methods, ``.device``) and keeps,
for each tensor, the device it would live on (a tag; the data itself stays on the CPU). It applies CUDA's rules:

- the model's parameters and buffers are tagged ``cuda`` (`fake_cuda_model`), so ``device_of(model)`` reports
  ``cuda:0`` and ``x.to(device_of(model))`` / ``x.cuda()`` / ``device=`` factories give ``cuda``-tagged copies;
  ``.cpu()`` / ``.to("cpu")`` give ``cpu``-tagged ones; factories without ``device=`` (``torch.eye(n)``) are ``cpu``;
- any other op that mixes a ``cpu`` and a ``cuda`` tensor raises CUDA's "Expected all tensors to be on the same
  device" (0-dim tensors may mix, as in CUDA; a CUDA tensor may be indexed with CPU indices; ``copy_`` may copy
  across devices); its result takes the inputs' device;
- ``.numpy()`` / ``np.asarray`` of a ``cuda`` tensor raise, as in CUDA;
- ``torch.Generator(device="cuda")`` gives a CPU generator tagged ``cuda``; a random op whose result lives on
  another device than its ``generator=`` raises, as in CUDA ("Expected a 'cuda' device type for generator").

Test inputs are plain ``cpu`` tensors, so a function that forgets ``.to(device_of(model))`` raises on its first
mixed op (the model's forward at the latest), and each test asserts the documented device of the results.
Tensors made by the autograd engine outside any torch call (a parameter's ``.grad``) carry no tag and mix with
anything: the harness can miss a mismatch there, never invent one. Checked to fail: removing the move in
`s2o_lib.attacks.pgd` or `s2o_lib.widgets.epsilon_figure` makes the tests below fail with the mismatch error.

`test_notebook_sources_*` check the notebooks statically (their code cells and the code of their solutions) for
``.numpy()`` without ``.cpu()`` and for tensors built on a hard-coded device.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from s2o_lib.attacks import fgsm, pgd, trades_kl_attack
from s2o_lib.bounds import estimate_bound
from s2o_lib.compare import compare_models
from s2o_lib.defenses import DefenseConfig, adversarial_examples, training_inputs, training_step
from s2o_lib.evaluate import correct_predictions, robust_accuracy
from s2o_lib.laplace import kfac_factors, kronecker_correlation
from s2o_lib.methods import parse_method
from s2o_lib.models import build_model, device_of
from s2o_lib.noise import noisy_accuracy, sigma_search
from s2o_lib.norms import layer_norms
from s2o_lib.s2o import kfac_correlation_penalty, s2o_regulariser, soft_targets
from s2o_lib.sanity import accuracy_vs_eps, sanity_checks

pytestmark = pytest.mark.usefixtures("one_thread")

_TAG = "_s2o_fake_device"
_TensorBase = torch._C.TensorBase
_INDEXING = {"__getitem__", "__setitem__", "index_select", "index_put_", "index_put"}


# ============================================================================================ the harness
def tag(t: torch.Tensor) -> str | None:
    """The simulated device of ``t``: ``"cuda"``, ``"cpu"`` or ``None`` (untracked)."""
    return getattr(t, _TAG, None)


def _set(t: torch.Tensor, device: str) -> torch.Tensor:
    setattr(t, _TAG, device)
    return t


def on_cpu(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Tag test inputs as CPU tensors."""
    return tuple(_set(t, "cpu") for t in ts)


def fake_cuda_model(model: torch.nn.Module) -> torch.nn.Module:
    """Tag every parameter and buffer of ``model`` as living on the (simulated) GPU."""
    for t in [*model.parameters(), *model.buffers()]:
        _set(t, "cuda")
    return model


def _kind(device: object) -> str | None:
    if isinstance(device, (str, torch.device)):
        return torch.device(device).type
    return None


def _strong_and_weak(leaves: list) -> tuple[set, set]:
    tensors = [t for t in leaves if isinstance(t, torch.Tensor) and tag(t) is not None]
    return {tag(t) for t in tensors if t.ndim > 0}, {tag(t) for t in tensors if t.ndim == 0}


def _mismatch(name: str, devices: set) -> RuntimeError:
    return RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                        f"{' and '.join(sorted(devices))}! (simulated, in {name})")


class FakeCuda(TorchFunctionMode):
    """Simulated CUDA device: see the module docstring."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name == "__get__" and func.__self__ is _TensorBase.device:
            return torch.device("cuda", 0) if tag(args[0]) == "cuda" else func(*args)
        if name == "__get__" and func.__self__ is _TensorBase.is_cuda:
            return tag(args[0]) == "cuda"
        if name in ("numpy", "__array__") and tag(args[0]) == "cuda":
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first. (simulated)")
        if isinstance(args[0] if args else None, torch.Tensor) and name in ("to", "cuda", "cpu"):
            return self._move(func, name, args, kwargs)
        if name == "__deepcopy__":  # a copy lives where the original does (copy.deepcopy of a model, AWP's proxy)
            out = func(*args, **kwargs)
            return _set(out, tag(args[0])) if tag(args[0]) is not None else out
        target = _kind(kwargs.get("device"))
        if target is not None:  # a factory (or *_like) with device=
            kwargs["device"] = "cpu"
            _check_generator(name, kwargs, target)
            out = func(*args, **kwargs)
            return tree_map(lambda t: _set(t.clone() if any(t is a for a in args) else t, target)
                            if isinstance(t, torch.Tensor) else t, out)
        leaves = tree_flatten((args, kwargs))[0]
        device = self._check(name, leaves)
        _check_generator(name, kwargs, device)
        out = func(*args, **kwargs)
        if name == "copy_":
            return out
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and tag(t) is None and device is not None:
                _set(t, device)
        return out

    @staticmethod
    def _check(name: str, leaves: list) -> str | None:
        """The device of the op's result; raises on a CPU/CUDA mix that CUDA refuses."""
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        if not tensors:
            return "cpu"  # a factory without device=: the default device
        if name in _INDEXING:  # the indexed tensor decides; CPU indices are fine, CUDA ones only on CUDA
            base, rest = tag(tensors[0]), tensors[1:]
            wrong = {tag(t) for t in rest if t.ndim > 0 and tag(t) not in (None, "cpu", base)}
            if name in ("__setitem__", "index_put_") and base is not None and len(leaves) >= 3:
                value = leaves[-1]
                if isinstance(value, torch.Tensor) and value.ndim > 0 and tag(value) not in (None, base):
                    wrong.add(tag(value))
            if wrong and base is not None:
                raise _mismatch(name, wrong | {base})
            return base
        if name == "copy_":
            return None
        strong, weak = _strong_and_weak(leaves)
        if len(strong) > 1:
            raise _mismatch(name, strong)
        if strong:
            return strong.pop()
        return "cuda" if "cuda" in weak else (weak.pop() if weak else None)

    @staticmethod
    def _move(func, name: str, args: tuple, kwargs: dict):
        t = args[0]
        if name == "cuda":
            target = "cuda"
        elif name == "cpu":
            target = "cpu"
        else:
            target = None
            rest = []
            for a in args[1:]:
                if _kind(a) is not None:
                    target = _kind(a)
                    a = "cpu"
                elif isinstance(a, torch.Tensor):
                    target = tag(a)
                rest.append(a)
            if _kind(kwargs.get("device")) is not None:
                target = _kind(kwargs["device"])
                kwargs["device"] = "cpu"
            args = (t, *rest)
        if target is None or target == tag(t):  # no move: torch returns the tensor itself (or a dtype cast)
            out = torch.Tensor.to(*args, **kwargs) if name == "to" else t
            if tag(out) is None and tag(t) is not None:
                _set(out, tag(t))
            return out
        if name == "to":
            return _set(torch.Tensor.to(*args, **{**kwargs, "copy": True}), target)
        return _set(t.to("cpu", copy=True), target)


def _check_generator(name: str, kwargs: dict, device: str | None) -> None:
    generator = kwargs.get("generator")
    if generator is None or device is None:
        return
    kind = getattr(generator, _TAG, generator.device.type)
    if kind != device:
        raise RuntimeError(f"Expected a '{device}' device type for generator but found '{kind}' (simulated, in {name})")


class _CpuGenerator(torch.Generator):
    """``torch.Generator(device="cuda")`` without CUDA: a CPU generator tagged with the device asked for."""

    def __new__(cls, device: object = "cpu"):
        return super().__new__(cls, "cpu")

    def __init__(self, device: object = "cpu") -> None:
        setattr(self, _TAG, _kind(device) or "cpu")


_deepcopy_parameter = torch.nn.Parameter.__deepcopy__


def _deepcopy_tagged_parameter(self: torch.nn.Parameter, memo: dict) -> torch.nn.Parameter:
    """`nn.Parameter.__deepcopy__` makes its copy outside any torch call: give it the original's device."""
    out = _deepcopy_parameter(self, memo)
    return _set(out, tag(self)) if tag(self) is not None else out


@pytest.fixture
def fake_cuda(monkeypatch):
    """Run the test under the simulated CUDA device."""
    monkeypatch.setattr(torch, "Generator", _CpuGenerator)
    monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", _deepcopy_tagged_parameter)
    with FakeCuda():
        yield


@pytest.fixture
def model():
    torch.manual_seed(0)
    return fake_cuda_model(build_model("small-cnn", num_classes=10, in_channels=1).eval())


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return on_cpu(torch.rand(6, 1, 16, 16), torch.randint(0, 10, (6,)))


# ============================================================================================ the harness can fail
def test_harness_refuses_a_cpu_batch_for_a_cuda_model(fake_cuda, model, batch):
    x, y = batch
    with pytest.raises(RuntimeError, match="same device"):
        model(x)
    moved = x.to(device_of(model))
    assert device_of(model).type == "cuda" and tag(moved) == "cuda" and tag(x) == "cpu"
    logits = model(moved)
    assert tag(logits) == "cuda" and tag(logits.cpu()) == "cpu" and tag(logits) == "cuda"
    with pytest.raises(RuntimeError, match="same device"):
        torch.nn.functional.cross_entropy(logits, y)


def test_harness_refuses_numpy_of_cuda_and_cpu_factories_beside_cuda(fake_cuda, model, batch):
    logits = model(batch[0].to(device_of(model)))
    with pytest.raises(TypeError, match="cpu"):
        logits.numpy()
    with pytest.raises(TypeError, match="cpu"):
        np.asarray(logits)
    assert logits.detach().cpu().numpy().shape == (6, 10)
    with pytest.raises(RuntimeError, match="same device"):
        logits @ torch.eye(10)
    assert tag(logits @ torch.eye(10, device=logits.device)) == "cuda"
    assert tag(logits * torch.tensor(2.0)) == "cuda"  # a CPU scalar may join a CUDA op, as in CUDA
    assert tag(logits[torch.arange(3)]) == "cuda"  # CPU indices into a CUDA tensor, as in CUDA
    copied = copy.deepcopy(model)
    assert {tag(t) for t in [*copied.parameters(), *copied.buffers()]} == {"cuda"}
    with pytest.raises(RuntimeError, match="generator"):
        torch.empty_like(logits).uniform_(generator=torch.Generator().manual_seed(0))
    assert tag(torch.empty_like(logits).uniform_(generator=torch.Generator(device=logits.device))) == "cuda"


# ============================================================================================ attacks
@pytest.mark.parametrize("kwargs", [dict(), dict(norm="l2"), dict(loss="cw", init="gaussian", restarts=2)])
def test_pgd_moves_inputs_and_returns_on_the_model_device(fake_cuda, model, batch, kwargs):
    x, y = batch
    x_adv = pgd(model, x, y, eps=0.1, alpha=0.05, steps=2, generator=torch.Generator(device=device_of(model)),
                **kwargs)
    assert tag(x_adv) == "cuda" and x_adv.shape == x.shape


def test_fgsm_and_trades_attack_move_inputs(fake_cuda, model, batch):
    x, y = batch
    assert tag(fgsm(model, x, y, eps=0.1)) == "cuda"
    assert tag(trades_kl_attack(model, x, eps=0.1, alpha=0.05, steps=2)) == "cuda"
    logits_clean = model(x.to(device_of(model))).cpu()
    assert tag(trades_kl_attack(model, x, eps=0.1, alpha=0.05, steps=1, logits_clean=logits_clean)) == "cuda"


# ============================================================================================ evaluation
def test_evaluation_moves_batches_and_returns_cpu_results(fake_cuda, model, batch):
    x, y = batch
    assert tag(correct_predictions(model, x, y, batch_size=4)) == "cpu"
    result = robust_accuracy(model, (x, y), attacks=("clean", "fgsm", "pgd2", "cw2"), eps=0.1, batch_size=4,
                             return_per_sample=True)
    assert all(isinstance(v, float) for v in result.values())
    assert {tag(v) for v in result.per_sample.values()} == {"cpu"}


def test_sanity_checks_move_batches(fake_cuda, model, batch):
    torch.manual_seed(2)
    surrogate = fake_cuda_model(build_model("small-cnn", num_classes=10, in_channels=1).eval())
    report = sanity_checks(model, batch, eps=0.1, n=6, surrogate=surrogate, eps_grid=[0.05], steps=(1, 2),
                           restarts=2, autoattack_version=None, batch_size=4)
    assert [c.name for c in report.checks] == ["eps_monotone", "large_eps", "more_steps", "more_restarts",
                                               "whitebox_beats_transfer", "attack_ordering", "ce_cw_agreement",
                                               "zero_gradients"]


def test_compare_moves_batches(fake_cuda, model, batch):
    table = compare_models({"at": model, "at+s2o": model}, batch, eps=0.1, attacks=("clean", "pgd2"), batch_size=4)
    assert {tag(v) for r in table.runs.values() for run in r.values() for v in run.per_sample.values()} == {"cpu"}
    accs = accuracy_vs_eps(model, batch, eps_values=[0.0, 0.1], steps=2, batch_size=4)
    assert len(accs) == 2 and all(isinstance(a, float) for a in accs)


# ============================================================================================ bounds and norms
def test_bounds_move_batches(fake_cuda, model, batch):
    x, y = batch
    assert isinstance(noisy_accuracy(model, x, y, sigma=0.1, draws=2, batch_size=4), float)
    assert isinstance(sigma_search(model, x, y, draws=1, iters=2, batch_size=4), float)
    report = estimate_bound(model, batch, eps=0.1, steps=2, n=6, power_iters=2, sigma_draws=1, sigma_iters=2,
                            batch_size=4)
    assert isinstance(report.log10_bound_correlated, float)


def test_layer_norms_moves_the_example(fake_cuda, model, batch):
    norms = layer_norms(model, batch[0][:1], iters=2)
    assert [n.kind for n in norms] == ["conv", "conv", "conv", "linear", "linear"]


def test_tensor_only_functions_stay_on_their_inputs_device(fake_cuda, model, batch):
    x, y = batch
    logits = model(x.to(device_of(model)))
    assert tag(soft_targets(logits, y)) == "cuda"
    assert tag(s2o_regulariser(logits, logits, y)) == "cuda"
    features = torch.randn(6, 8, device=logits.device)
    A, G = kfac_factors(features, logits.softmax(1))
    assert {tag(t) for t in (A, G, *kronecker_correlation(A, G))} == {"cuda"}
    assert tag(kfac_correlation_penalty(features, logits)) == "cuda"


# ============================================================================================ plots and widgets
def test_plots_and_widgets_accept_cuda_and_cpu_tensors(fake_cuda, model, batch):
    import matplotlib.pyplot as plt

    from s2o_lib.plots import correlation_heatmap, image_grid
    from s2o_lib.widgets import epsilon_figure

    x, y = batch
    x_cuda = x.to(device_of(model))
    image_grid({"clean": x_cuda, "perturbation": x_cuda - 0.5})
    correlation_heatmap(torch.eye(3, device=x_cuda.device))
    for eps in (0.0, 0.1):
        epsilon_figure(model, x, y, eps=eps, n=3)
    plt.close("all")


# ============================================================================================ training
@pytest.mark.parametrize("method", ["standard", "at", "trades", "mart+s2o", "at+awp+s2o-kfac", "avmixup"])
def test_training_step_moves_the_batch(fake_cuda, model, batch, method):
    from s2o_lib.awp import AWP

    x, y = batch
    config = DefenseConfig(eps=0.1, alpha=0.05, steps=1).for_method(method)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    awp = AWP(model, gamma=0.01) if parse_method(method).awp else None
    result = training_step(model, x, y, method=method, config=config, optimizer=optimizer, awp=awp)
    assert tag(result.loss) == "cuda"
    inputs = training_inputs(model, x, y, method=parse_method(method), config=config)
    assert tag(inputs.x) == "cuda" and tag(inputs.y) == "cuda"
    x_adv = adversarial_examples(model, x, y, method=parse_method(method), config=config)
    assert x_adv is None or tag(x_adv) == "cuda"


# ============================================================================================ notebooks (static)
_SOURCES = sorted((Path(__file__).resolve().parents[1] / "notebooks" / "src").glob("*.py"))
_NUMPY = re.compile(r"\.numpy\(\)")
_FIXED_DEVICE = re.compile(r"""device\s*=\s*["'](cpu|cuda)|\.to\(\s*["'](cpu|cuda)|\.cuda\(""")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """The code of a jupytext percent source: code cells (comments dropped) and the ```python blocks of its
    markdown (solutions a student runs)."""
    lines, fenced = [], False
    for i, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if text.startswith("# ```"):
            fenced = text == "# ```python"
        elif fenced:
            lines.append((i, line.removeprefix("#")))
        elif text and not text.startswith("#"):
            lines.append((i, line))
    return lines


def test_notebook_sources_call_numpy_only_after_cpu():
    """``t.numpy()`` fails on a CUDA tensor: the notebooks write ``t.cpu().numpy()`` (or ``.detach().cpu()``)."""
    assert _SOURCES, "no notebook sources found"
    offenders = [f"{p.name}:{i}: {line.strip()}" for p in _SOURCES for i, line in _code_lines(p)
                 if any(not line[: m.start()].endswith(".cpu()") for m in _NUMPY.finditer(line))]
    assert not offenders, "`.numpy()` without `.cpu()` first (fails on a GPU):\n" + "\n".join(offenders)


def test_notebook_sources_hard_code_no_device():
    """Tensors and models go to ``device`` (the profile's) or to a model's device, never to a fixed one."""
    offenders = [f"{p.name}:{i}: {line.strip()}" for p in _SOURCES for i, line in _code_lines(p)
                 if _FIXED_DEVICE.search(line)]
    assert not offenders, "a hard-coded device (use `device` or `device_of(model)`):\n" + "\n".join(offenders)
