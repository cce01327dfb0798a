"""``onceforall search``, ``export`` and ``finetune``: subnets of a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from onceforall.cli.common import (
    BACKENDS,
    PICK_COLUMNS,
    add_timing_args,
    count,
    drift_line,
    milliseconds,
    plot_file,
    print_table,
    quantity,
    read_timing,
)


def _cmd_search(args: argparse.Namespace) -> int:
    """Specialize a run for budgets: build what is missing, search, measure, print."""
    import json

    from onceforall.files import check_writable
    from onceforall.run import Run
    from onceforall.specialize import Specializer, device_slug

    timed_here = args.latency_ms is not None or not args.no_measure
    if args.device is None and (timed_here or (args.pareto and args.objective == "latency_ms")):
        from onceforall.predictors.timing import check_backend

        check_backend(args.backend)  # a backend that cannot run here: before any work
    run = Run.open(args.run_dir)
    plot = None
    if args.pareto:  # where the front's plot goes, checked before any work
        where = args.backend + (f"-{device_slug(args.device)}" if args.device else "")
        plot = Path(args.plot or run.path / f"pareto-{args.objective}-{where}.png")
        check_writable(plot, "--plot", folder=False)
    timing = {f"latency_{k}": v for k, v in read_timing(args).items() if v is not None}
    spec = Specializer(
        run,
        args.backend,
        threads=args.threads,
        accuracy_samples=args.samples,
        **timing,
        progress=not (args.json or args.no_progress),
        device=args.device,
        accuracy_settings={
            k: v
            for k, v in (
                ("calibration_images", args.calibration_images),
                ("eval_images", args.eval_images),
            )
            if v is not None
        },
    )
    # Exact budgets fail at once (every rank alike under torchrun), before anything is built.
    spec.constraints(macs=args.macs, params=args.params)
    if not _share_accuracy_dataset(spec):
        return 0  # a torchrun rank other than 0: its share of the accuracy dataset is measured
    constraints = spec.constraints(latency_ms=args.latency_ms, macs=args.macs, params=args.params)
    if args.pareto:
        front = spec.pareto(constraints, objective=args.objective, seed=args.seed)
        chosen = front.spread(args.points)
        labels = [f"front {i + 1}/{len(chosen)}" for i in range(len(chosen))]
    else:
        chosen = spec.search(constraints, top_k=args.top, seed=args.seed)
        labels = [f"top {i + 1}" for i in range(len(chosen))]
    picks = spec.measure([c.arch for c in chosen], labels, latency=not args.no_measure)
    rows = [p.to_dict() for p in picks]
    if plot is not None:
        from onceforall.report import plot_pareto

        plot_pareto(front, picks, plot, objective=args.objective)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    budget = ", ".join(str(c) for c in constraints) or "none"
    where = f"{args.backend} on {args.device}" if args.device else args.backend
    print(f"run {run.path} | backend {where} | budget: {budget}")
    print_table(rows, PICK_COLUMNS)
    quality = _predictor_quality(spec.predictor)
    if quality:
        print(quality)
    drift = rows[0]["latency_drift"] if rows else None
    if drift is not None:
        rebuild = f"onceforall latency build {run.path} --backend {args.backend} --force"
        print(drift_line(drift, rebuild))
    if args.device:
        print(
            f"latency predicted for {args.device} by its imported table (not measured here); "
            "time an exported pick there with `python KIT/measure.py --model model.onnx "
            "--shape 1,C,R,R`"
        )
    if args.pareto:
        print(
            f"Pareto front: {len(front.front)} archs ({front.num_evaluated} evaluated in "
            f"{front.seconds:.2f} s); plot: {plot}"
        )
    return 0


def _predictor_quality(pred) -> str:
    """How well the accuracy predictor ranks subnets it was not fit on ('' when it has no
    held-out metrics: fit on everything, or imported)."""
    m = pred.metrics
    if not m.get("n_test"):
        return ""
    return (
        f"accuracy predictor: RMSE {m['rmse']:.2f} pp, Kendall tau {m['kendall_tau']:.2f} on "
        f"{m['n_test']} held-out subnets (fit on {m['n_train']}); predicted accuracy is the "
        "measured one for the accuracy dataset's subnets"
    )


def _share_accuracy_dataset(spec) -> bool:
    """Under torchrun (``WORLD_SIZE`` > 1) the ranks measure the accuracy dataset together, each
    its share of the subnets, and rank 0 alone goes on (the latency table is timed by one
    process, on a quiet machine). Returns whether this process goes on."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    if not dist.is_initialized():
        dist.init_process_group("gloo")  # barriers only; each rank evaluates on its own device
    try:
        spec.predictor  # noqa: B018 - every rank measures its share; all wait for the whole
        return dist.get_rank() == 0
    finally:
        dist.destroy_process_group()


def _cmd_export(args: argparse.Namespace) -> int:
    """Write one subnet of a run as a deployable file plus card.json."""
    from onceforall.export import export_subnet
    from onceforall.run import Run

    run = Run.open(args.run_dir)
    weights = None
    if args.finetuned:
        from onceforall.training.finetune import finetuned_path

        weights = finetuned_path(run, run.parse(args.arch))  # export_subnet says if missing
    card = export_subnet(
        run,
        args.arch,
        args.format,
        args.out,
        backend=args.backend,
        weights=weights,
        force=args.force,
        measure=not args.no_measure,
        threads=args.threads,
        device=args.device,
    )
    lat = "-" if card["latency_ms"] is None else f"{card['latency_ms']:.3f} ms ({card['backend']})"
    if args.device:
        lat += f"; {card['device_latency_ms']:.3f} ms predicted on {args.device}"
    print(
        f"exported {Path(args.out) / card['file']} and {Path(args.out) / 'card.json'}: "
        f"test {card['test_accuracy']:.2f}%, holdout {card['holdout_accuracy']:.2f}%, "
        f"{card['macs']:,} MACs, {card['params']:,} params, latency {lat}"
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune one subnet with the full network as teacher."""
    from onceforall.run import Run
    from onceforall.training.finetune import finetune

    run = Run.open(args.run_dir)
    rec = finetune(
        run,
        args.arch,
        epochs=args.epochs,
        lr=args.lr,
        kd_ratio=args.kd_ratio,
        seed=args.seed,
        force=args.force,
        progress=not args.no_progress,
    )
    teacher = f"distilled from the full network, kd_ratio {rec['kd_ratio']:g}"
    print(
        f"fine-tuned in {rec['seconds']:.0f} s "
        f"({teacher if rec['kd_ratio'] > 0 else 'labels alone'}): "
        f"holdout {rec['holdout_before']:.2f}% -> "
        f"{rec['holdout_after']:.2f}%; weights {rec['path']} "
        f"(export with --finetuned)"
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``search``, ``export`` and ``finetune``."""
    se = sub.add_parser(
        "search",
        help="specialize a trained run for budgets (latency, MACs, params) or a Pareto front",
        description="Builds what is missing (accuracy dataset and predictor, this machine's "
        "latency table for --backend), searches, then measures the chosen subnets. Under "
        "`torchrun --nproc_per_node=N -m onceforall.cli search ...` the N processes share the "
        "accuracy dataset's evaluations and rank 0 does the rest.",
    )
    se.add_argument("run_dir", help="a finished run directory (onceforall train --out)")
    se.add_argument("--latency-ms", type=milliseconds, help="latency budget on --backend, in ms")
    se.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    se.add_argument("--macs", type=quantity, help="MACs budget, e.g. 5e6 or 5M")
    se.add_argument("--params", type=quantity, help="parameter budget, e.g. 500K")
    se.add_argument("--pareto", action="store_true", help="NSGA-II front instead of one budget")
    se.add_argument(
        "--objective",
        default="latency_ms",
        choices=("latency_ms", "macs"),
        help="the front's cost axis (with --pareto)",
    )
    se.add_argument("--points", type=count, default=8, help="front archs to measure (--pareto)")
    se.add_argument(
        "--plot",
        type=plot_file,
        help="the front's plot, .png/.pdf/.svg (default RUN_DIR/pareto-*.png)",
    )
    se.add_argument("--top", type=count, default=3, help="distinct archs to report")
    se.add_argument("--samples", type=count, default=500, help="subnets for the accuracy dataset")
    se.add_argument(
        "--calibration-images",
        type=count,
        help="holdout images each subnet's BN is recalibrated on (default 2000)",
    )
    se.add_argument(
        "--eval-images",
        type=count,
        help="holdout images each subnet is evaluated on (default: all)",
    )
    se.add_argument("--threads", type=count, help="latency threads (default 1)")
    se.add_argument(
        "--device",
        help="search with the latency table of a device measured through a latency kit "
        "(onceforall latency kit / import) instead of this machine's",
    )
    add_timing_args(
        se,
        "untimed calls per layer when the latency table is built here (default 10)",
        "timed calls per layer when the latency table is built here, median taken (default 50); "
        "the picks are timed as their table was",
    )
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--no-measure", action="store_true", help="skip measuring latency")
    se.add_argument("--json", action="store_true", help="print results as JSON")
    se.add_argument("--no-progress", action="store_true", help="no progress bars")
    se.set_defaults(func=_cmd_search)

    ex = sub.add_parser("export", help="write one subnet as ONNX/TorchScript/safetensors + card")
    ex.add_argument("run_dir")
    ex.add_argument("--arch", required=True, help="arch string (from onceforall search)")
    ex.add_argument(
        "--format",
        required=True,
        choices=("onnx", "torchscript", "safetensors"),
        help="onnx (onnxruntime and most runtimes), torchscript (torch.jit.load; PyTorch "
        "deprecates TorchScript), safetensors (weights, with the card to rebuild the subnet)",
    )
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--backend", choices=BACKENDS, help="latency backend for the card")
    ex.add_argument("--finetuned", action="store_true", help="the fine-tuned weights")
    ex.add_argument("--no-measure", action="store_true", help="do not time the model")
    ex.add_argument("--threads", type=count, help="latency threads (default 1, as search's tables)")
    ex.add_argument(
        "--device",
        help="also record the latency predicted on a device measured through a latency kit",
    )
    ex.add_argument("--force", action="store_true", help="overwrite an existing export")
    ex.set_defaults(func=_cmd_export)

    ft = sub.add_parser("finetune", help="fine-tune one subnet with the full network as teacher")
    ft.add_argument("run_dir")
    ft.add_argument("--arch", required=True)
    ft.add_argument("--epochs", type=float, default=1.0)
    ft.add_argument("--lr", type=float, default=0.01)
    ft.add_argument(
        "--kd-ratio",
        type=float,
        help="weight of the distillation from the full network (default: the run's, or 1.0 "
        "when it trained without; 0: labels alone)",
    )
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--force", action="store_true", help="redo an existing fine-tune")
    ft.add_argument("--no-progress", action="store_true")
    ft.set_defaults(func=_cmd_finetune)
