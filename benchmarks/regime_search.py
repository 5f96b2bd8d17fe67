"""Search for a smoke-sized regime (digits, small CNN, CPU) in which S²O and AWP can be seen — or not.

Issue 13 §2. Methods that claim to improve robust *generalisation* can only show an effect where there is a
robust generalisation gap to close. This script trains small-cnn on small training subsets of the digits for
many epochs, follows test/validation/train robust accuracy over epochs (robust overfitting), evaluates the
final (and the best-on-validation) model on the WHOLE digits test split with PGD-20 and CW∞-20 (optionally
AutoAttack "fast"), and stores per-image outcomes so that paired models (same seed, same images) can be
compared with McNemar's exact test and across seeds with a t-interval.

Sub-commands (every number of benchmarks/REGIME.md comes from one of these command lines, listed there)::

    python benchmarks/regime_search.py run --round explore1 --subsets 100 200 400 --epochs 40 80 \\
        --methods standard at --seeds 0 1
    python benchmarks/regime_search.py report --round explore1
    python benchmarks/regime_search.py report --round confirm --plan     # REGIME.md's analysis (benchmarks/regime.py)
    python benchmarks/regime_search.py time --subset 200 --epochs 40 --threads 2

``report`` reads the committed copies in ``benchmarks/results/regime/`` (``--dir runs/regime`` for a round being
run); ``report --plan`` carries out REGIME.md's pre-registered analysis with `benchmarks/regime.py` / `s2o_lib.stats`.
``run`` appends one JSON line per finished (regime, method, seed) to ``runs/regime/<round>.jsonl`` and skips
runs already there; a run that is cut off resumes from its checkpoint folder (``fit`` resumes exactly) and
its partial curve (``curve.jsonl`` beside the checkpoint). Run it at low priority on one thread
(``nice -n 19``; the script sets one thread itself unless ``--threads`` says otherwise).

What is fixed and why:
- data: ``load_dataset("digits", ...)``, 1437 train / 360 test; the training subset is drawn once per regime
  (``--data-seed``, default 0) and is the same for every training seed, as a notebook would use it;
  ``stratified`` takes n/10 images per class, ``random`` is the library's ``load_dataset(subset=n)``.
  A validation set (``--val-n`` images of the training split outside the subset) picks the "best" epoch, so
  early stopping is not selected on the test images it is scored on.
- attack settings: the smoke profile's (training PGD-5, ε = 0.15, step 0.05; evaluation ε = 0.15, step 0.02).
- per-epoch curve: clean and PGD-10 (step 0.02) on the training subset, the validation set and the test split.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# `run` uses one thread (set before torch is imported): it runs beside other jobs, at low priority.
if sys.argv[1:2] == ["run"]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.regime import METHOD_ORDER, RESULTS_DIR, analyse_regime, load_results
from s2o_lib.bounds import estimate_bound
from s2o_lib.config import get_profile, seed_everything
from s2o_lib.data import load_dataset, make_loader, tensors
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import build_model
from s2o_lib.norms import mean_abs_correlation
from s2o_lib.settings import fit_options
from s2o_lib.stats import paired_test, signed_rank_test, t_interval, t_test
from s2o_lib.train import fit

OUT_DIR = Path("runs/regime")
SMOKE = get_profile("smoke")
CURVE_ATTACKS = ("clean", "pgd10")
FINAL_ATTACKS = ("clean", "pgd20", "cw20")
#: The pre-specified pairs: (baseline, treatment).
PAIRS: tuple[tuple[str, str], ...] = (
    ("at", "at+s2o"), ("trades", "trades+s2o"), ("at", "at+awp"), ("mart", "mart+s2o"),
    ("at", "at+ls"), ("trades", "trades+ls"), ("mart", "mart+ls"),
    ("at+ls", "at+s2o"), ("trades+ls", "trades+s2o"), ("mart+ls", "mart+s2o"),
)


# ============================================================================================ regime
@dataclass(frozen=True)
class Regime:
    """One training regime: the data subset and the schedule (attack settings are smoke's)."""

    subset: int
    epochs: int
    subset_kind: str = "stratified"
    data_seed: int = 0
    schedule: str = "piecewise"
    milestone_fracs: tuple[float, ...] = (0.5, 0.75)
    lr: float = SMOKE.lr
    batch_size: int = SMOKE.batch_size
    awp_gamma: float = 1e-2
    awp_warmup: int = 0

    @property
    def milestones(self) -> tuple[int, ...]:
        """Milestone epochs (×0.1 from each on), from the fractions of the total."""
        if self.schedule == "constant":
            return ()
        return tuple(max(1, round(f * self.epochs)) for f in self.milestone_fracs)

    @property
    def key(self) -> str:
        """The regime's name without its AWP settings (those belong to the AWP methods' labels)."""
        sched = "const" if self.schedule == "constant" else "pw" + "-".join(str(m) for m in self.milestones)
        return f"n{self.subset}{self.subset_kind[0]}{self.data_seed}-e{self.epochs}-{sched}-lr{self.lr:g}-b{self.batch_size}"

    def label(self, method: str) -> str:
        """``method``, with the AWP settings appended for AWP methods (e.g. ``at+awp[g0.01,w0]``)."""
        return f"{method}[g{self.awp_gamma:g},w{self.awp_warmup}]" if "awp" in method.split("+") else method


def subsets(regime: Regime, *, val_n: int) -> tuple[TensorDataset, TensorDataset]:
    """The training subset and a disjoint validation set from the rest of the digits training split."""
    x, y = tensors(load_dataset("digits", "train"))
    # The same permutation as load_dataset(subset=n, seed=data_seed): "random" is the library's own subset.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(regime.data_seed))
    if regime.subset_kind == "random":
        train_idx = order[: regime.subset]
    elif regime.subset_kind == "stratified":
        per_class = regime.subset // 10
        train_idx = torch.cat([order[y[order] == k][:per_class] for k in range(10)])
    else:
        raise SystemExit(f"--subset-kind must be 'random' or 'stratified', got {regime.subset_kind!r}")
    used = set(train_idx.tolist())
    rest = [i for i in order.tolist() if i not in used][:val_n]
    return TensorDataset(x[train_idx].clone(), y[train_idx].clone()), TensorDataset(x[rest].clone(), y[rest].clone())


# ============================================================================================ training
def train_epochs(model: torch.nn.Module, train: TensorDataset, *, regime: Regime, method: str, seed: int,
                 epochs: int, folder: Path) -> list[float]:
    """Train ``model`` up to ``epochs`` (resuming from ``folder``); the one place that calls `fit`.

    Returns the wall seconds of each epoch trained so far (``History.seconds``, training only).
    """
    history = fit(
        model, make_loader(train, batch_size=regime.batch_size, shuffle=True, seed=seed), method=method,
        **fit_options(epochs=epochs, lr=regime.lr, schedule=regime.schedule, milestones=regime.milestones,
                      eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=SMOKE.attack_steps,
                      awp_gamma=regime.awp_gamma, awp_warmup=regime.awp_warmup,
                      checkpoint_dir=folder, resume=True, progress=False),
    )
    return list(history.seconds)


def evaluate(model: torch.nn.Module, data: TensorDataset, attacks: tuple[str, ...], *,
             autoattack: bool = False) -> tuple[dict[str, float], dict[str, str]]:
    """Accuracies and per-image outcomes (``"0101..."``) at the smoke evaluation settings (ε 0.15, step 0.02)."""
    attacks = (*attacks, "autoattack") if autoattack else attacks
    result = robust_accuracy(model, tensors(data), attacks=attacks, eps=SMOKE.eval_eps, alpha=SMOKE.eval_alpha,
                             autoattack_version="fast", seed=0, return_per_sample=True)
    bits = {k: "".join("1" if b else "0" for b in v.tolist()) for k, v in result.per_sample.items()}
    return {k: round(float(v), 6) for k, v in result.items()}, bits


#: What `last_layer_statistics` keeps of `estimate_bound`'s report.
BOUND_FIELDS = ("m", "gamma", "robust_margin_loss", "robust_train_acc", "R_fro", "R_spectral", "R_logdet", "R_dim",
                "jin_S_spectral", "jin_neg_logdet", "sigma_isotropic", "sigma_correlated", "sigma_jin",
                "log10_spectral_product", "log10_bound_independent", "log10_bound_correlated", "log10_bound_jin")


def last_layer_statistics(model: torch.nn.Module, train: TensorDataset, test: TensorDataset) -> dict[str, Any]:
    """What S²O is meant to change, measured on one trained model (the ``stats`` of a record).

    - ``head_rho``: Jin et al. 2020's ρ of the last layer (mean |cos| between its class vectors);
    - ``logit_corr``: the mean |off-diagonal| of the correlation matrix of M = ZᵀZ, the clean test logits'
      second moment (what the released regulariser builds its targets from);
    - ``head_shape``: (C, D) of the last layer;
    - the `BOUND_FIELDS` of `estimate_bound` on the training subset (CW-PGD-10, seed 0; σ search with the
      softmax shift projected out): ‖R‖_F, −ln det R, Jin et al.'s −Σ ln det S_i, the tolerated σ, the bound.
    """
    x_test, _ = tensors(test)
    with torch.no_grad():
        z = torch.cat([model(x_test[i:i + 256]) for i in range(0, len(x_test), 256)]).double()
    second = z.T @ z
    scale = second.diagonal().sqrt()
    corr = second / torch.outer(scale, scale)
    c = corr.shape[0]
    report = estimate_bound(model, tensors(train), eps=SMOKE.eps, steps=10, n=512, seed=0)
    return {"head_rho": mean_abs_correlation(model.head.weight),
            "logit_corr": float((corr.abs().sum() - corr.diagonal().abs().sum()) / (c * (c - 1))),
            "head_shape": list(model.head.weight.shape),
            **{name: float(getattr(report, name)) for name in BOUND_FIELDS}}


def _curve_point(model: torch.nn.Module, sets: dict[str, TensorDataset], epoch: int) -> dict[str, Any]:
    point: dict[str, Any] = {"epoch": epoch}
    for name, data in sets.items():
        acc, _ = evaluate(model, data, CURVE_ATTACKS)
        point.update({f"{name}_{k}": acc[k] for k in CURVE_ATTACKS})
    return point


def run_one(regime: Regime, method: str, seed: int, *, round_name: str, curve_points: int, val_n: int,
            autoattack: bool, stats: bool = False) -> dict[str, Any]:
    """Train one model with a curve over epochs, then evaluate the last and the best-on-validation weights
    (and, with ``stats``, measure the last model's `last_layer_statistics`).

    The curve has about ``curve_points`` points (every ``epochs // curve_points`` epochs, and the last);
    ``standard`` gets the last point only (its robust accuracy is 0 throughout).
    """
    train, val = subsets(regime, val_n=val_n)
    test = load_dataset("digits", "test")
    folder = OUT_DIR / "ckpt" / round_name / regime.key / f"{regime.label(method)}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    curve_file = folder / "curve.jsonl"
    curve = [json.loads(line) for line in curve_file.read_text().splitlines()] if curve_file.exists() else []
    seed_everything(seed)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    # Without images left for validation (the full training split) the "best" epoch is picked on the test split.
    sets = {"train": train, **({"val": val} if len(val) else {}), "test": test}
    select = "val_pgd10" if len(val) else "test_pgd10"
    every = max(1, regime.epochs // curve_points) if curve_points and method != "standard" else regime.epochs
    marks = sorted({*range(every, regime.epochs + 1, every), regime.epochs})
    seconds: list[float] = []
    for epoch in marks:
        seconds = train_epochs(model, train, regime=regime, method=method, seed=seed, epochs=epoch, folder=folder)
        if any(p["epoch"] == epoch for p in curve):
            continue
        point = _curve_point(model, sets, epoch)
        best = max((p[select] for p in curve), default=-1.0)
        if point[select] > best:
            torch.save(model.state_dict(), folder / "best_val.pt")
        curve.append(point)
        with curve_file.open("a") as f:
            f.write(json.dumps(point) + "\n")
    best_epoch = max(curve, key=lambda p: (p[select], -p["epoch"]))["epoch"]
    final: dict[str, Any] = {}
    last_test, last_bits = evaluate(model.eval(), test, FINAL_ATTACKS, autoattack=autoattack)
    last_train, _ = evaluate(model, train, ("clean", "pgd20"))
    final["last"] = {"test": last_test, "test_bits": last_bits, "train": last_train}
    if stats:
        final["last"]["stats"] = last_layer_statistics(model, train, test)
    model.load_state_dict(torch.load(folder / "best_val.pt", weights_only=True))
    best_test, best_bits = evaluate(model.eval(), test, FINAL_ATTACKS)
    best_train, _ = evaluate(model, train, ("clean", "pgd20"))
    final["best"] = {"epoch": best_epoch, "test": best_test, "test_bits": best_bits, "train": best_train}
    return {"round": round_name, "regime": asdict(regime), "key": regime.key, "milestones": regime.milestones,
            "method": method, "label": regime.label(method), "seed": seed, "val_n": len(val),
            "best_selected_on": select, "train_seconds": round(sum(seconds), 3),
            "curve": curve, "final": final, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "host": platform.node(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    """Every JSON line of the given result files."""
    records: list[dict[str, Any]] = []
    for path in paths:
        if path.exists():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in records:  # lines written before the AWP settings moved from the key to the label
        regime = Regime(**{**r["regime"], "milestone_fracs": tuple(r["regime"]["milestone_fracs"])})
        r["key"], r["label"] = regime.key, regime.label(r["method"])
    return records


def cmd_run(args: argparse.Namespace) -> None:
    out = OUT_DIR / f"{args.round}.jsonl"
    done = {(r["key"], r["label"], r["seed"]) for r in load_records([out])}
    for subset in args.subsets:
        for epochs in args.epochs:
            regime = Regime(subset=subset, epochs=epochs, subset_kind=args.subset_kind, data_seed=args.data_seed,
                            schedule=args.schedule, milestone_fracs=tuple(args.milestone_fracs), lr=args.lr,
                            batch_size=args.batch_size, awp_gamma=args.awp_gamma, awp_warmup=args.awp_warmup)
            for seed in args.seeds:
                for method in args.methods:
                    if (regime.key, regime.label(method), seed) in done:
                        continue
                    t0 = time.perf_counter()
                    record = run_one(regime, method, seed, round_name=args.round, curve_points=args.curve_points,
                                     val_n=args.val_n, autoattack=args.autoattack, stats=args.stats)
                    record["wall_seconds"] = round(time.perf_counter() - t0, 1)
                    with out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    last, best = record["final"]["last"], record["final"]["best"]
                    print(f"{regime.key} {regime.label(method):12s} seed {seed}: test pgd20 {last['test']['pgd20']:.3f} "
                          f"(best@{best['epoch']} {best['test']['pgd20']:.3f}) train pgd20 "
                          f"{last['train']['pgd20']:.3f} clean {last['test']['clean']:.3f} "
                          f"[{record['train_seconds']:.0f}s train, {record['wall_seconds']:.0f}s wall]", flush=True)


# ============================================================================================ statistics
def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the two-sided t-interval of the mean (`stats.t_interval`)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return (mean, sd, *t_interval(values, confidence=level))


def mcnemar(bits_a: str, bits_b: str) -> tuple[int, int, float]:
    """McNemar's exact test on paired per-image outcomes (`stats.paired_test`): (b = only A right, c = only B
    right, two-sided p)."""
    test = paired_test([c == "1" for c in bits_a], [c == "1" for c in bits_b])
    return test.b, test.c, test.p_value


def paired_tests(diffs: list[float]) -> tuple[float, float]:
    """Two-sided p-values of the one-sample t-test (primary) and the Wilcoxon signed-rank test on ``diffs``."""
    if len(diffs) < 2 or all(d == diffs[0] for d in diffs):
        return float("nan"), float("nan")
    return float(t_test(diffs)), signed_rank_test(diffs)


def _pct(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100 * x:.1f}"


def _p(x: float) -> str:
    return "—" if math.isnan(x) else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


# ============================================================================================ report
def _group(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """``{regime key: {label: {seed: record}}}`` (a later line for the same run replaces an earlier one)."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        out[r["key"]][r["label"]][r["seed"]] = r
    return out


def _ms(values: list[float]) -> str:
    mean, sd, _, _ = mean_ci(values)
    return f"{100 * mean:.1f}" + ("" if math.isnan(sd) else f" ± {100 * sd:.1f}")


def method_table(by_method: dict[str, dict[int, dict[str, Any]]], *, which: str = "last",
                 regime: str | None = None) -> list[str]:
    """Mean ± sd over seeds of the accuracies, the robust gap and robust overfitting, one row per method.

    With ``regime`` every row starts with that regime's name (and AutoAttack is left out), for a summary table.
    """
    has_aa = regime is None and any("autoattack" in r["final"]["last"]["test"] for runs in by_method.values()
                                    for r in runs.values())
    head = [*(["regime"] if regime else []), "method", "seeds", "clean", "PGD-20", "CW-20", *(["AA-fast"] if has_aa else []), "worst",
            "train PGD-20", "gap", "best ep. (val)", "PGD-20 @best", "last − best", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, runs in by_method.items():
        rs = [runs[s] for s in sorted(runs)]
        fin = [r["final"][which] for r in rs]
        test = {k: [f["test"][k] for f in fin] for k in fin[0]["test"]}
        gap = [f["train"]["pgd20"] - f["test"]["pgd20"] for f in fin]
        drop = [r["final"]["last"]["test"]["pgd20"] - r["final"]["best"]["test"]["pgd20"] for r in rs]
        epochs = sorted(r["final"]["best"]["epoch"] for r in rs)
        row = [*([regime] if regime else []), method, str(len(rs)), _ms(test["clean"]), _ms(test["pgd20"]), _ms(test["cw20"]),
               *([_ms(test.get("autoattack", [float("nan")]))] if has_aa else []), _ms(test["worst_case"]),
               _ms([f["train"]["pgd20"] for f in fin]), _ms(gap), ",".join(map(str, epochs)),
               _ms([r["final"]["best"]["test"]["pgd20"] for r in rs]), _ms(drop),
               f"{sum(r['train_seconds'] for r in rs) / len(rs):.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def pair_table(by_method: dict[str, dict[int, dict[str, Any]]], *, attacks: tuple[str, ...],
               which: str = "last", per_seed: bool = True) -> list[str]:
    """Paired differences (treatment − baseline, points) per seed with McNemar, and across seeds."""
    lines: list[str] = []
    for base, treat in ((b, t) for b, tr in PAIRS for t in by_method if t == tr or t.startswith(tr + "[")):
        if base not in by_method:
            continue
        seeds = sorted(set(by_method[base]) & set(by_method[treat]))
        for attack in attacks:
            diffs, cells = [], []
            for s in seeds:
                a, b = by_method[base][s]["final"][which], by_method[treat][s]["final"][which]
                if attack not in a["test_bits"] or attack not in b["test_bits"]:
                    continue
                only_a, only_b, p = mcnemar(a["test_bits"][attack], b["test_bits"][attack])
                diffs.append(b["test"][attack] - a["test"][attack])
                cells.append(f"s{s}: {100 * diffs[-1]:+.1f} ({only_a}/{only_b}, p={_p(p)})")
            if not diffs:
                continue
            mean, _, lo, hi = mean_ci(diffs)
            t_p, w_p = paired_tests(diffs)
            wins = sum(d > 0 for d in diffs)
            lines.append(f"| {treat} − {base} | {attack} | {len(diffs)} | {100 * mean:+.2f} | "
                         f"[{_pct(lo)}, {_pct(hi)}] | {_p(t_p)} | {_p(w_p)} | {wins}/{len(diffs)} |"
                         + (f" {'; '.join(cells)} |" if per_seed else ""))
    if not lines:
        return []
    head = ("| pair | attack | seeds | mean diff (pts) | 95% t-CI | t-test p | Wilcoxon p | seeds up |"
            + (" per seed: diff (only-base/only-treat, McNemar p) |" if per_seed else ""))
    return [head, "|" + "---|" * (head.count("|") - 1), *lines]


def curve_table(by_method: dict[str, dict[int, dict[str, Any]]], methods: list[str]) -> list[str]:
    """Mean over seeds of train/val/test PGD-10 accuracy at each curve epoch."""
    lines = ["| epoch | " + " | ".join(f"{m} train / val / test" for m in methods) + " |",
             "|" + "---|" * (len(methods) + 1)]
    epochs = sorted({p["epoch"] for m in methods for r in by_method[m].values() for p in r["curve"]})
    for e in epochs:
        cells = []
        for m in methods:
            pts = [p for r in by_method[m].values() for p in r["curve"] if p["epoch"] == e]
            cells.append(" / ".join(f"{100 * sum(p.get(f'{k}_pgd10', math.nan) for p in pts) / len(pts):.1f}"
                                    for k in ("train", "val", "test")) if pts else "")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return lines


def cmd_report(args: argparse.Namespace) -> None:
    if args.plan:
        records = [r for name in args.round for r in load_results(name, directory=args.dir)]
        text = analyse_regime(records).to_markdown()
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return
    records = load_records([Path(args.dir) / f"{r}.jsonl" for r in args.round])
    out: list[str] = []
    groups = {k: v for k, v in sorted(_group(records).items()) if not args.key or k in args.key}
    if args.summary:
        rows = [line for key, by in groups.items() for line in method_table(by, which=args.which, regime=key)]
        out = [rows[0], rows[1], *(r for r in rows if not r.startswith(("| regime", "|---")))]
        groups = {}
    for key, by_method in groups.items():
        rank = METHOD_ORDER
        order = sorted(by_method, key=lambda m: (rank.index(m.split("[")[0]) if m.split("[")[0] in rank else 99, m))
        by_method = {m: by_method[m] for m in order}
        out += [f"### {key} (milestones {next(iter(next(iter(by_method.values())).values()))['milestones']})", "",
                f"Final model ({args.which} epoch), whole test split (360), accuracies in %, mean ± sd over seeds:",
                "", *method_table(by_method, which=args.which), ""]
        attacks = ("pgd20", "cw20", "worst_case", "autoattack")
        pairs = pair_table(by_method, attacks=attacks, which=args.which, per_seed=not args.no_per_seed)
        if pairs:
            out += ["Paired differences (treatment − baseline):", "", *pairs, ""]
        if args.curves:
            out += ["Robust accuracy (PGD-10, %) over epochs, mean over seeds:", "",
                    *curve_table(by_method, [m for m in args.curves if m in by_method]), ""]
    text = "\n".join(out)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


# ============================================================================================ timing
def cmd_time(args: argparse.Namespace) -> None:
    """Seconds to train one model of each method in a regime (run it under the CPU lock, 2 threads)."""
    torch.set_num_threads(args.threads)
    regime = Regime(subset=args.subset, epochs=args.epochs, subset_kind=args.subset_kind, data_seed=args.data_seed,
                    schedule=args.schedule, milestone_fracs=tuple(args.milestone_fracs), lr=args.lr,
                    batch_size=args.batch_size, awp_gamma=args.awp_gamma, awp_warmup=args.awp_warmup)
    train, _ = subsets(regime, val_n=0)
    rows = []
    for method in args.methods:
        folder = OUT_DIR / "timing" / f"{regime.key}-{method}-{time.time_ns()}"
        seed_everything(0)
        model = build_model("small-cnn", num_classes=10, in_channels=1)
        t0 = time.perf_counter()
        train_epochs(model, train, regime=regime, method=method, seed=0, epochs=regime.epochs, folder=folder)
        rows.append({"method": method, "seconds": round(time.perf_counter() - t0, 2), "key": regime.key,
                     "threads": torch.get_num_threads()})
        print(json.dumps(rows[-1]), flush=True)
        for f in folder.glob("*.pt"):
            f.unlink()
        folder.rmdir()
    with (OUT_DIR / "timing.jsonl").open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


# ============================================================================================ command line
def _regime_args(p: argparse.ArgumentParser, *, many: bool) -> None:
    if many:
        p.add_argument("--subsets", type=int, nargs="+", required=True, help="training subset sizes")
        p.add_argument("--epochs", type=int, nargs="+", required=True, help="total epochs (each with each subset)")
    else:
        p.add_argument("--subset", type=int, required=True, help="training subset size")
        p.add_argument("--epochs", type=int, required=True, help="total epochs")
    p.add_argument("--subset-kind", choices=("stratified", "random"), default="stratified",
                   help="n/10 images per class, or the library's load_dataset(subset=n) (default: stratified)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the subset draw (default 0)")
    p.add_argument("--schedule", choices=("piecewise", "constant"), default="piecewise", help="learning-rate schedule")
    p.add_argument("--milestone-fracs", type=float, nargs="*", default=[0.5, 0.75],
                   help="×0.1 from these fractions of the epochs on (default 0.5 0.75, the paper's 100/150 of 200)")
    p.add_argument("--lr", type=float, default=SMOKE.lr, help=f"initial learning rate (default smoke's {SMOKE.lr})")
    p.add_argument("--batch-size", type=int, default=SMOKE.batch_size, help="batch size (default smoke's 64)")
    p.add_argument("--awp-gamma", type=float, default=1e-2, help="AWP γ (default 1e-2, the AWP authors' AT script)")
    p.add_argument("--awp-warmup", type=int, default=0, help="AWP warm-up epochs (default 0, the AT script)")
    p.add_argument("--methods", nargs="+", default=["standard", "at", "at+s2o", "at+awp", "trades", "trades+s2o"],
                   help="training methods")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate a grid (appends to runs/regime/<round>.jsonl)")
    run.add_argument("--round", required=True, help="name of the round (its results file)")
    _regime_args(run, many=True)
    run.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds")
    run.add_argument("--curve-points", type=int, default=20,
                     help="points of the curve over epochs (every epochs//k epochs; 0: the last epoch only)")
    run.add_argument("--val-n", type=int, default=300, help="validation images (outside the subset)")
    run.add_argument("--autoattack", action="store_true", help="also AutoAttack 'fast' on the last model")
    run.add_argument("--stats", action="store_true",
                     help="also record the last model's last-layer statistics and bound terms")
    run.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    rep = sub.add_parser("report", help="markdown tables from one or more rounds")
    rep.add_argument("--round", nargs="+", required=True, help="rounds to read")
    rep.add_argument("--dir", default=str(RESULTS_DIR),
                     help="where the round files are (default: the committed benchmarks/results/regime; "
                          "runs/regime for a round being run)")
    rep.add_argument("--plan", action="store_true",
                     help="the pre-registered analysis of REGIME.md (benchmarks/regime.py): primary t-tests with Holm, "
                          "secondary Wilcoxon/McNemar/CW/AutoAttack/best checkpoint")
    rep.add_argument("--key", nargs="*", help="only these regime keys")
    rep.add_argument("--which", choices=("last", "best"), default="last", help="last epoch or best-on-validation")
    rep.add_argument("--curves", nargs="*", help="methods whose over-epochs curve to print")
    rep.add_argument("--summary", action="store_true", help="one table, one row per (regime, method)")
    rep.add_argument("--no-per-seed", action="store_true", help="omit the per-seed McNemar cells")
    rep.add_argument("--out", help="also write the markdown here")
    tim = sub.add_parser("time", help="training seconds per method in one regime (use under flock, 2 threads)")
    _regime_args(tim, many=False)
    tim.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as the notebooks run)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if args.command == "run":
        torch.set_num_threads(args.threads)
        cmd_run(args)
    elif args.command == "report":
        cmd_report(args)
    else:
        cmd_time(args)


if __name__ == "__main__":
    main()
