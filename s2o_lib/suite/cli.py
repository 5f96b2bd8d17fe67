"""Command line: ``python -m s2o_lib {train,evaluate,run-notebooks,presets,download,zoo} ...``.

Examples::

    python -m s2o_lib train --method at+s2o --dataset digits --arch small-cnn --epochs 6 --out runs/at_s2o
    python -m s2o_lib train --preset paper-at-prn18 --out runs/paper-at-prn18
    python -m s2o_lib evaluate runs/at_s2o/checkpoint.pt --attacks clean,pgd20,cw20,autoattack --n 500 --json eval.json
    python -m s2o_lib run-notebooks --profile smoke --out build/
    python -m s2o_lib run-notebooks --profile class --dry-run
    python -m s2o_lib zoo pack --profile class --out s2o-class.tar
    torchrun --nproc_per_node=2 -m s2o_lib train --preset paper-trades-wrn --out runs/trades-wrn

Errors are printed as one line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import S2OError

__all__ = [
    "CLI_WAY_OUT", "build_parser", "check_output_folder", "main",
]



def _train_settings(args: argparse.Namespace, profile: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What to train (arch, dataset, method, batch size) and `fit`'s settings: the profile's (the same mapping
    as the notebooks', `s2o_lib.zoo.fit_settings`), then the preset's, then the flags given."""
    from ..presets import get_preset
    from ..zoo import fit_settings

    what = {"arch": profile.arch, "dataset": profile.dataset, "method": "standard", "batch_size": profile.batch_size}
    flat: dict[str, Any] = {}
    if args.preset:
        preset = get_preset(args.preset)
        what.update(arch=preset.arch, dataset=preset.dataset, method=preset.method, batch_size=preset.batch_size)
        flat.update(preset.fit)
        flat.update(eval_eps=preset.eval["eps"], eval_alpha=preset.eval["alpha"], eval_steps=preset.eval["steps"])
    for key in ("arch", "dataset", "method", "batch_size"):
        what[key] = what[key] if getattr(args, key) is None else getattr(args, key)
    for key in ("epochs", "lr", "eps", "alpha", "attack_steps"):
        if getattr(args, key) is not None:
            flat[key] = getattr(args, key)
    if args.eval_window is not None:
        flat["eval_window"] = _window(args.eval_window)
    return what, fit_settings(profile, **flat)


def _window(text: str) -> tuple[int, int] | None:
    """``--eval-window``: ``"100-110"`` → ``(100, 110)``; ``"any"`` → ``None`` (every epoch may become best.pt)."""
    if text.strip().lower() == "any":
        return None
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise S2OError(f"--eval-window takes FIRST-LAST (e.g. 100-110) or 'any', not {text!r}")
    return int(first), int(last)


def _with_process_group(command: Any) -> Any:
    """Run ``command(args, launch)`` inside torchrun's process group when torchrun started this process
    (``launch`` is then a `s2o_lib.suite.torchrun.Launch`), else with ``launch=None``: one process, as before."""

    def run(args: argparse.Namespace) -> int:
        from .torchrun import start, stop

        launch = start(backend=args.backend, device=args.device)
        try:
            return command(args, launch)
        finally:
            stop()

    return run


def check_output_folder(path: Path, *, flag: str) -> None:
    """Raise `S2OError` unless ``path`` is a folder this process can write into (created if missing).

    Args:
        path: the output folder.
        flag: the option that named it, for the message (e.g. ``"--out"``).
    """
    if path.exists() and not path.is_dir():
        raise S2OError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise S2OError(f"cannot create {flag} {path} ({err.strerror}); choose another {flag}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise S2OError(f"{flag} {path} is not writable; choose another {flag}")


def _check_train_args(args: argparse.Namespace, what: dict[str, Any], settings: dict[str, Any]) -> None:
    """Every flag of ``train`` that can be checked before any data is read."""
    from ..checks import check_int
    from ..settings import check_fit_options

    check_fit_options(method=what["method"], **settings)
    check_int(what["batch_size"], "--batch-size", minimum=1)
    check_int(args.workers, "--workers", minimum=0)
    check_int(args.seed, "--seed", minimum=0)
    if args.subset is not None:
        check_int(args.subset, "--subset", minimum=1)
    check_output_folder(Path(args.out), flag="--out")


#: How a command-line user gets out of a run whose folder holds other settings.
CLI_WAY_OUT = "pass --no-resume to start over there, or another --out"


def _train(args: argparse.Namespace, launch: Any = None) -> int:
    from ..config import get_profile
    from ..lock import FolderBusy, folder_lock
    from ..settings import SettingsChanged

    profile = get_profile(args.profile)
    what, settings = _train_settings(args, profile)
    _check_train_args(args, what, settings)
    try:
        with folder_lock(Path(args.out)):
            return _train_locked(args, profile, what, settings, launch)
    except SettingsChanged as err:
        raise err.retold(CLI_WAY_OUT) from None
    except FolderBusy as err:
        raise S2OError(f"--out {err.folder} is in use by another run ({err.holder}); wait for it to finish, "
                       "or choose another --out") from None


def _train_locked(args: argparse.Namespace, profile: Any, what: dict[str, Any], settings: dict[str, Any],
                  launch: Any = None) -> int:
    import torch

    from ..checkpoint import load_checkpoint
    from ..config import get_device, seed_everything
    from ..data import dataset_info, load_dataset
    from ..models import build_model
    from ..zoo import train_run

    dataset, arch = what["dataset"], what["arch"]
    if launch is not None:
        from .torchrun import check_shared_output_folder, per_process_batch

        per_process_batch(what["batch_size"], launch.world_size)
        check_shared_output_folder(args.out)
    seed_everything(args.seed)
    device = get_device(args.device) if launch is None else launch.device
    info = dataset_info(dataset)
    train = load_dataset(dataset, "train", root=args.data, download=args.download, subset=args.subset, seed=args.seed)
    test = load_dataset(dataset, "test", root=args.data, download=args.download)
    model = build_model(arch, num_classes=info.num_classes, in_channels=info.in_channels).to(device)
    out = Path(args.out)
    loader = None
    if launch is not None:
        model, loader = _data_parallel(args, launch, model, train, what["batch_size"])
    history = train_run(model, train, test, method=what["method"], folder=out, settings=settings, seed=args.seed,
                        batch_size=what["batch_size"], loader=loader, device_loader=args.device_loader,
                        num_workers=args.workers, resume=not args.no_resume,
                        progress=not args.no_progress and (launch is None or launch.is_main),
                        metadata={"dataset": dataset, "subset": args.subset, "profile": profile.name,
                                  "preset": args.preset})
    saved = load_checkpoint(out / "checkpoint.pt")["meta"] if (out / "checkpoint.pt").is_file() else {}
    metrics = {
        "method": history.method, "arch": arch, "dataset": dataset, "seed": args.seed, "subset": args.subset,
        "batch_size": what["batch_size"], "profile": profile.name, "preset": args.preset, "device": str(device),
        "torch": torch.__version__, "settings": saved.get("settings"), "history": history.as_dict(),
        "final": history.last(), "best_epoch": history.best_epoch, "best_robust": history.best_robust,
    }
    if launch is not None:
        if not launch.is_main:
            return 0
        metrics.update(world_size=launch.world_size, backend=launch.backend, sync_bn=args.sync_bn)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    last = history.last()
    print(f"trained {history.method} on {dataset} ({arch}) for {len(history.epoch)} epochs -> {out / 'checkpoint.pt'}")
    if last.get("eval_clean") is not None:
        print(f"last epoch: clean {last['eval_clean']:.4f}, PGD {last['eval_robust']:.4f}; best PGD "
              f"{history.best_robust:.4f} at epoch {history.best_epoch}")
    return 0


def _data_parallel(args: argparse.Namespace, launch: Any, model: Any, train: Any, batch_size: int) -> tuple[Any, Any]:
    """The DDP model and this process's DistributedSampler loader (B / N images), each rank seeded apart."""
    from ..config import seed_everything
    from ..processes import rank_seed
    from .torchrun import distributed_loader, wrap_model

    loader = distributed_loader(train, batch_size=batch_size, seed=args.seed, num_workers=args.workers)
    seed_everything(rank_seed(args.seed, launch.rank))  # the same initial weights, distinct attack starts
    return wrap_model(model, launch=launch, sync_bn=args.sync_bn), loader


def _autoattack_radius(args: argparse.Namespace, profile: Any, eps: float) -> float:
    """AutoAttack's radius: ``--aa-eps``, else ``--eps`` when given (one radius for all), else the profile's."""
    if args.aa_eps is not None:
        return float(args.aa_eps)
    return eps if args.eps is not None else profile.autoattack_eps


def _evaluate(args: argparse.Namespace, launch: Any = None) -> int:
    from ..checkpoint import load_model
    from ..config import get_device, get_profile
    from ..data import load_dataset
    from ..evaluate import robust_accuracy
    from ..processes import Shards

    device = get_device(args.device) if launch is None else launch.device
    model, meta = load_model(args.checkpoint, map_location=device)
    profile = get_profile(args.profile)
    dataset = args.dataset or meta.get("dataset") or profile.dataset
    eps = args.eps if args.eps is not None else profile.eval_eps
    alpha = args.alpha if args.alpha is not None else profile.eval_alpha
    aa_eps = _autoattack_radius(args, profile, eps)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    test = load_dataset(dataset, "test", root=args.data, download=args.download)
    _check_classes(meta, dataset)
    result = robust_accuracy(
        model, test, attacks=attacks, eps=eps, alpha=alpha, n=args.n, batch_size=args.batch_size,
        autoattack_version=args.autoattack_version, aa_eps=aa_eps, seed=args.seed,
        shards=None if launch is None else Shards.of_current(),
    )
    if launch is not None and not launch.is_main:
        return 0
    report = {
        "checkpoint": str(args.checkpoint), "method": meta.get("method"), "arch": meta.get("model", {}).get("arch"),
        "dataset": dataset, "eps": eps, "aa_eps": aa_eps, "alpha": alpha, "n": result.protocol["n"],
        "n_requested": args.n, "autoattack_version": args.autoattack_version,
        "accuracy": {k: float(v) for k, v in dict(result).items() if isinstance(v, (int, float))},
    }
    print(f"L∞ radius: {eps:g} (FGSM/PGD/CW), {aa_eps:g} (AutoAttack)")
    if args.n is not None and result.protocol["n"] < args.n:
        print(f"evaluated {result.protocol['n']} images: {dataset}'s test set has only {len(test)} "
              f"(--n {args.n} asked for more)")
    for name, value in report["accuracy"].items():
        print(f"{name:>12}: {100 * value:6.2f}%")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _check_classes(meta: dict[str, Any], dataset: str) -> None:
    """Refuse a checkpoint whose model has another number of classes than the dataset's labels."""
    from ..data import dataset_info

    classes, wanted = (meta.get("model") or {}).get("num_classes"), dataset_info(dataset).num_classes
    if classes is not None and classes != wanted:
        trained_on = f" (trained on {meta['dataset']})" if meta.get("dataset") else ""
        raise S2OError(f"the checkpoint's model has {classes} classes{trained_on} but {dataset} has {wanted}; "
                       "evaluate it on a dataset with its classes (--dataset)")


def _presets(args: argparse.Namespace) -> int:
    from ..presets import PRESETS

    for preset in PRESETS.values():
        pub = preset.published
        print(f"{preset.name:<22} {preset.method:<16} {preset.arch:<16} published clean/PGD-20/AA: "
              f"{pub['clean']}/{pub['pgd20']}/{pub['autoattack']}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from ..data import load_dataset

    for split in ("train", "test"):
        dataset = load_dataset(args.dataset, split, root=args.data, download=True)
        print(f"{args.dataset} {split}: {len(dataset)} images in {args.data}")
    return 0


def _run_notebooks(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .report import format_seconds
    from .runner import NotebookFailed, NotebookInterrupted, NotebookResult, run_notebooks

    def line(result: NotebookResult) -> None:
        seconds = "" if result.seconds is None else f"  {result.seconds:7.1f} s"
        tqdm.write(f"{result.status:>7}  {result.name}{seconds}", file=sys.stdout)

    try:
        report = run_notebooks(args.notebooks or None, profile=args.profile, out=args.out, timeout=args.timeout,
                               kernel_name=args.kernel, progress=not args.no_progress,
                               notebook_dir=args.notebook_dir, on_result=line, dry_run=args.dry_run,
                               data=args.data)
    except NotebookFailed as exc:
        for result in exc.report.results if exc.report is not None else ():
            if result.status == "not run":
                line(result)
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except NotebookInterrupted as exc:
        sys.stdout.flush()
        print(exc, file=sys.stderr)
        return 130
    print(f"all {len(report.results)} notebook(s) ok in {format_seconds(report.total_seconds)}; "
          f"report: {report.report_path}")
    return 0


def _add_train_parser(sub: Any) -> None:
    t = sub.add_parser("train", help="train a model and write DIR/checkpoint.pt and DIR/metrics.json",
                       description="Train a model. Defaults come from the profile (S2O_PROFILE), then --preset, "
                                   "then the flags given. Re-running with the same --out resumes.")
    t.add_argument("--method", help="e.g. standard, at, trades, mart, avmixup, at+s2o, trades+awp+s2o, at+s2o-kfac")
    t.add_argument("--dataset", help="digits, mnist, fashion-mnist, cifar10, cifar100, svhn")
    t.add_argument("--arch", help="small-cnn, small-cnn-w24, preact-resnet18, wrn-34-10, wrn-28-4")
    t.add_argument("--preset", help="a paper preset (see `python -m s2o_lib presets`)")
    t.add_argument("--profile", help="smoke, class or paper (default: S2O_PROFILE, else by device)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--eps", type=float, help="L∞ radius of the training attack, e.g. 0.0314")
    t.add_argument("--alpha", type=float, help="step size of the training attack")
    t.add_argument("--attack-steps", type=int)
    t.add_argument("--eval-window", help="the epochs among which best.pt is picked, e.g. 100-110 (the paper presets' "
                                         "window), or 'any'")
    t.add_argument("--subset", type=int, help="train on this many images")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--data", default="data", help="dataset folder (default: data/)")
    t.add_argument("--download", action="store_true", help="download the dataset if missing")
    t.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    t.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    t.add_argument("--device-loader", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the training set on the device (default: for CIFAR-style data on a CUDA GPU)")
    t.add_argument("--no-resume", action="store_true", help="start over even if DIR/checkpoint.pt exists")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (or set TQDM_DISABLE=1)")
    _add_distributed_arguments(t, sync_bn=True)
    t.set_defaults(func=_with_process_group(_train))


def _add_distributed_arguments(parser: argparse.ArgumentParser, *, sync_bn: bool) -> None:
    """Options that matter under ``torchrun`` (see `s2o_lib.suite.torchrun`); ignored in one process."""
    parser.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                        help="torchrun only: process-group backend (default: nccl with CUDA GPUs, else gloo)")
    if sync_bn:
        parser.add_argument("--sync-bn", action="store_true",
                            help="torchrun only: SyncBatchNorm (statistics over the global batch; GPUs only)")
    else:  # torchrun's parser reads `--n` as an abbreviation of its own options and stops with an error
        parser.add_argument("--num-images", dest="n", type=int, default=argparse.SUPPRESS,
                            help="the same as --n; write this one after torchrun, which mistakes --n for its own")


def _add_evaluate_parser(sub: Any) -> None:
    e = sub.add_parser("evaluate", help="evaluate a checkpoint under clean, FGSM, PGD, CW and AutoAttack")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--attacks", default="clean,pgd20,cw20,autoattack",
                   help="comma-separated: clean, fgsm, pgdN, cwN, autoattack (default: %(default)s)")
    e.add_argument("--n", type=int, default=500, help="number of test images (default: %(default)s)")
    e.add_argument("--eps", type=float, help="L∞ radius (default: the profile's, 0.031 in paper)")
    e.add_argument("--aa-eps", type=float, help="AutoAttack's L∞ radius (default: --eps when given, else the "
                   "profile's, 8/255 in paper)")
    e.add_argument("--alpha", type=float, help="PGD/CW step size (default: the profile's)")
    e.add_argument("--dataset", help="default: the dataset recorded in the checkpoint")
    e.add_argument("--profile")
    e.add_argument("--autoattack-version", choices=("standard", "fast"), default="standard")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", help="write the results to this JSON file")
    e.add_argument("--data", default="data")
    e.add_argument("--download", action="store_true")
    e.add_argument("--device")
    _add_distributed_arguments(e, sync_bn=False)
    e.set_defaults(func=_with_process_group(_evaluate))


def _add_run_notebooks_parser(sub: Any) -> None:
    r = sub.add_parser(
        "run-notebooks", help="execute every notebook headless and write an HTML report",
        description="Execute the tutorial notebooks headless, in order, each in a fresh Jupyter kernel with\n"
                    "S2O_PROFILE set, and write the executed notebooks plus one self-contained HTML report\n"
                    "(report.html, with report.json beside it) to --out. Stops at the first failing notebook.\n"
                    "Needs the notebooks extra: pip install \"s2o-tutorials[notebooks]\".",
        epilog="examples:\n"
               "  %(prog)s --profile smoke                 # the whole suite on a CPU in minutes\n"
               "  %(prog)s 00 03 --profile class --out build/class\n"
               "  %(prog)s notebooks/09_robustness_comparison.ipynb --timeout 3600\n"
               "  %(prog)s --profile class --dry-run          # class's code path, tiny sizes, on a CPU\n"
               "Cells whose metadata has \"report\": caption put their outputs in the report.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="notebooks to run: paths, names in --notebook-dir, or numbers like 03 "
                        "(default: all NN_*.ipynb)")
    r.add_argument("--profile", "-p", default=None,
                   help="smoke, class or paper (default: $S2O_PROFILE, else class with a GPU and smoke without)")
    r.add_argument("--out", "-o", type=Path, default=Path("build"), metavar="DIR",
                   help="folder for executed notebooks and the report (default: build)")
    r.add_argument("--timeout", type=int, default=900, metavar="S",
                   help="seconds one cell may run before the run stops (default: 900)")
    r.add_argument("--kernel", default="python3", metavar="NAME", help="Jupyter kernel to use (default: python3)")
    r.add_argument("--notebook-dir", type=Path, default=Path("notebooks"), metavar="DIR",
                   help="where the suite's notebooks live (default: notebooks)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (or set TQDM_DISABLE=1)")
    r.add_argument("--dry-run", action="store_true",
                   help="the profile's code path at tiny sizes (one epoch, tens of images) to check the notebooks "
                        "on a CPU; stand-in data when the dataset is missing from --data; models cached in "
                        "DIR/runs/dry-run")
    r.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="dataset folder for the notebooks (default: data/ of each notebook's folder; data/ here "
                        "in a dry run)")
    r.set_defaults(func=_run_notebooks)


def _zoo(args: argparse.Namespace) -> int:
    from ..zoo import runs_root
    from .bundle import fetch, pack

    print(f"model cache: {(args.runs or runs_root()).resolve()}")
    if args.zoo_command == "pack":
        out = pack(args.profile, out=args.out, root=args.runs)
        print(f"wrote {out} and {out}.sha256; publish both (e.g. as release assets) or point S2O_ZOO_URL at {out.name}")
        return 0
    installed = fetch(args.profile, url=args.url, root=args.runs, progress=not args.no_progress)
    print(f"installed {len(installed)} run(s): {', '.join(p.name for p in installed) or 'all were cached already'}")
    return 0


def _add_zoo_parser(sub: Any) -> None:
    z = sub.add_parser("zoo", help="pack or fetch a profile's pretrained models (a verified .tar bundle)",
                       description="Pretrained-model bundles (s2o_lib.bundle): pack a profile's cached runs into a "
                                   ".tar with a manifest and sha256s, or download, verify and unpack one.")
    zsub = z.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    p = zsub.add_parser("pack", help="write FILE.tar and FILE.tar.sha256 from the cached runs of a profile")
    p.add_argument("--out", required=True, help="the bundle to write, e.g. s2o-class.tar")
    f = zsub.add_parser("fetch", help="download a bundle, verify it and unpack its runs into the model cache")
    f.add_argument("--url", help="the bundle's URL, http(s):// or file:// (default: $S2O_ZOO_URL, else the "
                                 "project's release asset); #sha256=<hex> at its end replaces <url>.sha256")
    f.add_argument("--no-progress", action="store_true", help="no download progress bar")
    for action in (p, f):
        action.add_argument("--profile", help="smoke, class or paper (default: S2O_PROFILE, else by device)")
        action.add_argument("--runs", type=Path, help="the model cache (default: $S2O_RUNS, else the checkout's "
                            "notebooks/runs, else ~/.cache/s2o-tutorials/runs)")
    z.set_defaults(func=_zoo)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m s2o_lib`` and its sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m s2o_lib", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_run_notebooks_parser(sub)
    _add_zoo_parser(sub)
    sub.add_parser("presets", help="list the paper presets").set_defaults(func=_presets)
    d = sub.add_parser("download", help="download a dataset into data/ (needs a network)")
    d.add_argument("dataset")
    d.add_argument("--data", default="data")
    d.set_defaults(func=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a notebook failed, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse already printed why
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.func(args)
    except S2OError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that is full, read-only, missing...: one line, not a traceback
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (train: re-run the same command to resume from the last checkpoint)", file=sys.stderr)
        return 130
