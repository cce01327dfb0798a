"""The ``onceforall`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    """Print what a supernet family offers: its space, cost range and a few sampled subnets."""
    from onceforall import create_supernet

    net = create_supernet(args.family, num_classes=args.num_classes, in_channels=args.in_channels)
    space = net.space
    print(f"supernet {args.family}: {space.describe()}")
    rows = [("largest", space.largest()), ("smallest", space.smallest())]
    g = torch.Generator().manual_seed(args.seed)
    rows += [(f"sample {i}", space.sample(g)) for i in range(args.samples)]
    print(f"{'':10} {'MMACs':>8} {'params':>9}  arch")
    for label, arch in rows:
        print(f"{label:10} {net.macs(arch) / 1e6:8.2f} {net.num_params(arch):9,d}  {arch}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a supernet from a YAML config into a run directory."""
    from onceforall.config import load_config
    from onceforall.training import train

    config = load_config(args.config, args.overrides)
    path = train(
        config, args.out, resume=args.resume, force=args.force, progress=not args.no_progress
    )
    print(f"supernet: {path}")
    return 0


def _cmd_import_reference(args: argparse.Namespace) -> int:
    """Turn a checkpoint of the reference implementation into a run directory."""
    from onceforall.config import load_config
    from onceforall.reference import REFERENCE_FAMILIES, import_reference_run

    config = load_config(args.config, args.overrides)
    net, path = import_reference_run(
        config,
        args.checkpoint,
        args.out,
        predictor=args.predictor,
        image_sizes=args.predictor_image_sizes,
        force=args.force,
    )
    space = net.space
    family = config.model.family
    width = net.config.get("width_mult")
    if config.model.width_mult not in (None, width):
        said = config.model.width_mult
        print(f"model.width_mult: {width}, the checkpoint's (the config said {said})")
    print(
        f"imported the reference {REFERENCE_FAMILIES[family]} as {family}: {path}\n"
        f"space: {space.describe()}\n"
        f"MACs {net.macs(space.smallest()) / 1e6:.1f}M to {net.macs(space.largest()) / 1e6:.1f}M"
        f"; next: onceforall search {args.out} --macs N (needs the data of data.root)"
    )
    if args.predictor:
        print(f"accuracy predictor: {args.predictor} (search uses it; no accuracy dataset)")
    return 0


def _quantity(text: str) -> float:
    """A count such as ``2500000``, ``2.5e6`` or ``2.5M`` (K, M, G suffixes)."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower(), 1.0)
    try:
        return float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number like 2500000, 2.5e6 or 2.5M"
        ) from None


def _print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Rows as an aligned text table; ``columns`` are (key, header, format)."""
    from onceforall.report import format_cell

    cells = [[format_cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, (_, h, _) in enumerate(columns)]
    print(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, ((_, h, _), w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    for c in cells:
        print(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(c, widths, strict=True))
            )
        )


PICK_COLUMNS = [
    ("label", "pick", ""),
    ("predicted_accuracy", "pred acc %", ".2f"),
    ("holdout_accuracy", "holdout %", ".2f"),
    ("latency_ms", "pred ms", ".3f"),
    ("measured_latency_ms", "measured ms", ".3f"),
    ("macs", "MACs", ","),
    ("params", "params", ","),
    ("arch", "arch", ""),
]


def _timing(args: argparse.Namespace) -> dict[str, int | None]:
    """``--warmup`` and ``--repeats`` (None where not given), checked."""
    timing = {"warmup": args.warmup, "repeats": args.repeats}
    for name, lo in (("warmup", 0), ("repeats", 1)):
        if timing[name] is not None and timing[name] < lo:
            raise ValueError(f"--{name} {timing[name]} must be >= {lo}")
    return timing


def _add_timing_args(parser: argparse.ArgumentParser, warmup: str, repeats: str) -> None:
    parser.add_argument("--warmup", type=int, help=warmup)
    parser.add_argument("--repeats", type=int, help=repeats)


def _cmd_search(args: argparse.Namespace) -> int:
    """Specialize a run for budgets: build what is missing, search, measure, print."""
    import json

    from onceforall.run import Run
    from onceforall.specialize import Specializer, device_slug

    run = Run.open(args.run_dir)
    timing = {f"latency_{k}": v for k, v in _timing(args).items() if v is not None}
    spec = Specializer(
        run,
        args.backend,
        threads=args.threads,
        accuracy_samples=args.samples,
        **timing,
        progress=not args.json,
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
    if args.pareto:
        from onceforall.report import plot_pareto

        where = args.backend + (f"-{device_slug(args.device)}" if args.device else "")
        plot = Path(args.plot or run.path / f"pareto-{args.objective}-{where}.png")
        plot_pareto(front, picks, plot, objective=args.objective)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    budget = ", ".join(str(c) for c in constraints) or "none"
    where = f"{args.backend} on {args.device}" if args.device else args.backend
    print(f"run {run.path} | backend {where} | budget: {budget}")
    _print_table(rows, PICK_COLUMNS)
    drift = rows[0]["latency_drift"] if rows else None
    if drift is not None:
        rebuild = f"onceforall latency build {run.path} --backend {args.backend} --force"
        print(_drift_line(drift, rebuild))
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


def _cmd_export(args: argparse.Namespace) -> int:
    """Write one subnet of a run as a deployable file plus card.json."""
    from onceforall.export import export_subnet
    from onceforall.run import Run

    run = Run.open(args.run_dir)
    weights = None
    if args.finetuned:
        from onceforall.training.finetune import finetuned_path

        weights = finetuned_path(run, run.parse(args.arch))
        if not weights.is_file():
            raise FileNotFoundError(
                f"no fine-tuned copy of this arch in {run.path}; run `onceforall finetune "
                f"{run.path} --arch {args.arch}` first, or export without --finetuned"
            )
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
        seed=args.seed,
        force=args.force,
        progress=not args.no_progress,
    )
    print(
        f"fine-tuned in {rec['seconds']:.0f} s: holdout {rec['holdout_before']:.2f}% -> "
        f"{rec['holdout_after']:.2f}%; weights {rec['path']} "
        f"(export with --finetuned)"
    )
    return 0


def _cmd_latency(args: argparse.Namespace) -> int:
    """Build this machine's latency table for a run, or validate it end to end; or write a
    latency kit for another device and import what it measured."""
    from onceforall.run import Run

    run = Run.open(args.run_dir)
    timing = _timing(args)
    if args.action in ("kit", "import"):
        return _latency_kit(run, args, timing)
    if args.file is not None:
        parser_hint = "only `latency import RUN_DIR MEASUREMENTS` takes a file"
        raise ValueError(f"unexpected argument {args.file!r}: {parser_hint}")
    if args.action == "list":
        return _latency_list(run)
    from onceforall.predictors.latency import round_validation, validate_latency
    from onceforall.specialize import Specializer, latency_table_path

    spec = Specializer(
        run,
        args.backend,
        threads=args.threads,
        latency_validate=20 if args.n is None else args.n,
        **{f"latency_{k}": v for k, v in timing.items() if v is not None},
    )
    path = latency_table_path(run, args.backend, spec.threads)
    if args.action == "build" and path.is_file():
        if not args.force:
            raise FileExistsError(f"{path} exists; pass --force to measure it again")
        path.unlink()
    table = spec.latency_table
    print(f"{table!r}: {path}")
    check = round_validation(table) if args.action == "build" else None
    if check is not None:
        _print_validation(
            check,
            f"{len(check.rows)} random subnets timed in the same rounds as the layers",
            same_rounds=True,
        )
    if args.action == "validate":
        n = 30 if args.n is None else args.n
        v = validate_latency(run.net, table, n, args.seed, progress=True, **timing)
        _print_validation(v, f"{n} random subnets, {args.backend}")
        rebuild = f"onceforall latency build {args.run_dir} --backend {args.backend}"
        if args.threads:
            rebuild += f" --threads {args.threads}"
        print(_drift_line(v.drift, rebuild + " --force"))
    return 0


def _latency_list(run) -> int:
    """The run's latency tables: device, backend, settings, where they came from."""
    from onceforall.specialize import latency_tables

    rows = []
    for path, meta in latency_tables(run):
        check = meta.get("validation") or {}
        rows.append(
            {
                "device": meta.get("device", "?"),
                "backend": meta.get("backend", "?"),
                "threads": meta.get("threads"),
                "layers": meta.get("layers"),
                "source": meta.get("source", "built here"),
                "mape": check.get("mape"),
                "spearman": check.get("spearman"),
                "created": meta.get("created", "?"),
                "file": path.name,
            }
        )
    if not rows:
        print(f"no latency tables in {run.path / 'latency'} yet: `latency build` or `latency kit`")
        return 0
    _print_table(
        rows,
        [
            ("device", "device", ""),
            ("backend", "backend", ""),
            ("threads", "threads", ""),
            ("layers", "layers", ""),
            ("source", "source", ""),
            ("mape", "MAPE % (same rounds)", ".2f"),
            ("spearman", "Spearman", ".3f"),
            ("created", "created", ""),
            ("file", "file", ""),
        ],
    )
    return 0


def _print_validation(v, what: str, *, same_rounds: bool = False) -> None:
    """The validation's rows and scores. Subnets timed in the same rounds as the table's layers
    measure the table's own error, which is a few percent on a steady machine: far more means
    the timings were disturbed, and that is said."""
    rows = [{"arch": str(a), "predicted": p, "measured": m} for a, p, m in v.rows]
    _print_table(
        rows,
        [("predicted", "pred ms", ".3f"), ("measured", "measured ms", ".3f"), ("arch", "arch", "")],
    )
    print(f"{what}: MAPE {v.mape:.2f}%, Spearman {v.spearman:.3f}")
    if same_rounds and (v.mape > 10 or (len(v.rows) >= 10 and v.spearman < 0.9)):
        print(
            f"warning: the table predicts subnets timed alongside its layers with MAPE "
            f"{v.mape:.1f}% and Spearman {v.spearman:.2f}, where a steady machine gives a few "
            "percent and above 0.95: other work or an unsteady clock disturbed the timings. "
            "Measure again with the machine otherwise idle, or with more --repeats",
            file=sys.stderr,
        )


def _latency_kit(run, args: argparse.Namespace, timing: dict) -> int:
    """``latency kit``: export what a table times for another device; ``latency import``:
    the table from what that device measured."""
    from onceforall.predictors.kit import import_measurements, read_measurements, write_kit
    from onceforall.specialize import latency_table_path

    if args.backend != "onnxruntime":
        raise ValueError("latency kits time onnxruntime: use --backend onnxruntime (the default)")
    if args.action == "kit":
        if not args.out:
            raise ValueError("latency kit needs --out DIR, a new directory for the kit")
        if args.file is not None:
            raise ValueError(f"unexpected argument {args.file!r}: latency kit takes --out DIR")
        kit = write_kit(
            run.net,
            args.out,
            threads=args.threads or 1,
            validate_subnets=20 if args.n is None else args.n,
            validate_seed=args.seed,
            progress=True,
            **{k: v for k, v in timing.items() if v is not None},
        )
        print(
            f"latency kit in {kit} ({len(list((kit / 'models').iterdir()))} ONNX models). Copy "
            f"it to the device and run `python {kit.name}/measure.py {kit.name} --name NAME` "
            f"there (numpy and onnxruntime only), then `onceforall latency import {run.path} "
            f"{kit.name}/measurements.json`"
        )
        return 0
    if args.file is None:
        raise ValueError("latency import needs the measurements file: RUN_DIR MEASUREMENTS")
    data = read_measurements(args.file, args.kit)
    table, validation = import_measurements(run.net, data, device=args.device)
    device = table.metadata["device"]
    path = latency_table_path(run, "onnxruntime", table.metadata["threads"], device=device)
    if path.is_file() and not args.force:
        raise FileExistsError(f"{path} exists; pass --force to replace it with these measurements")
    path.parent.mkdir(exist_ok=True)
    table.save(path)
    print(f"{table!r} for {device!r}: {path}")
    if validation is not None:
        _print_validation(
            validation, f"{len(validation.rows)} random subnets on {device}", same_rounds=True
        )
    print(f"search with it: onceforall search {run.path} --latency-ms MS --device {device!r}")
    return 0


def _drift_line(drift: float | None, rebuild: str) -> str:
    """What a latency table's drift (see ``table_drift``) means, with the command to rebuild."""
    if drift is None:
        return "the latency table has no fitting subnets to measure this machine's drift with"
    line = f"the latency table's fitting subnets now take {drift:.2f} times their time at build"
    if abs(drift - 1) > 0.1:
        line += (
            ": this machine's speed moved since, and latency predictions are off by about as "
            f"much; `{rebuild}` measures the table again"
        )
    return line


def _cmd_demo(args: argparse.Namespace) -> int:
    """Train once, specialize for three latency budgets, export, evaluate, report."""
    from onceforall.demo import run_demo
    from onceforall.report import DEMO_COLUMNS

    summary = run_demo(
        args.out,
        args.preset,
        family=args.family,
        backend=args.backend,
        progress=not args.no_progress,
    )
    print()
    _print_table(summary["picks"], [c for c in DEMO_COLUMNS if c[0] != "file"])
    rebuild = f"onceforall latency build {summary['run_dir']} --backend {args.backend} --force"
    check = summary.get("latency_check")
    if check is not None:
        print(
            f"the latency table predicted {check['n']} random subnets timed in the same rounds as "
            f"its layers with MAPE {check['mape']:.2f}%, Spearman {check['spearman']:.3f}"
        )
    print(_drift_line(summary["latency_drift"], rebuild))
    out = Path(args.out)
    print(f"models: {out / 'models'}  report: {out / 'report.html'}  summary: {out / 'summary.md'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from onceforall import list_supernets

    parser = argparse.ArgumentParser(
        prog="onceforall",
        description="Train one supernet once, then specialize it for any device in seconds.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a supernet family's space, costs and sample subnets")
    info.add_argument("--family", default="mbv3_small_images", choices=list_supernets())
    info.add_argument("--num-classes", type=int, default=10)
    info.add_argument("--in-channels", type=int, default=1)
    info.add_argument("--samples", type=int, default=5, help="random subnets to show")
    info.add_argument("--seed", type=int, default=0)
    info.set_defaults(func=_cmd_info)

    tr = sub.add_parser(
        "train",
        help="train a supernet with progressive shrinking (resumable; works under torchrun)",
        description="Train a supernet from a YAML config. Overrides: key=value with dotted keys, "
        "e.g. data.root=/data schedule.phases.0.epochs=2 device=cuda.",
    )
    tr.add_argument("config", help="YAML config (presets in configs/)")
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--force", action="store_true", help="delete the run in --out and start over")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.add_argument("overrides", nargs="*", metavar="key=value")
    tr.set_defaults(func=_cmd_train)

    im = sub.add_parser(
        "import-reference",
        help="a run directory from a checkpoint of the reference implementation (mit-han-lab ofa)",
        description="Load a supernet the reference implementation trained (ofa_mbv3_d234_e346_"
        "k357_w1.0 or _w1.2, ofa_proxyless_d234_e346_k357_w1.3, ofa_resnet50: torch.save'd "
        "state dicts, read with weights_only=True) into a run directory that search, export, "
        "finetune and latency work on. CONFIG gives the family's choice sets and the data "
        "(e.g. configs/imagenet_mbv3.yaml data.root=/data/imagenet); the width multiplier is "
        "read off the checkpoint.",
    )
    im.add_argument("config", help="YAML config of the same family (presets in configs/)")
    im.add_argument("checkpoint", help="the reference's checkpoint (.pth, or .safetensors)")
    im.add_argument("--out", required=True, help="run directory to write")
    im.add_argument(
        "--predictor",
        help="the reference's accuracy predictor for this supernet (e.g. its tutorial's "
        "acc_predictor.pth): search then uses it instead of evaluating subnets",
    )
    im.add_argument(
        "--predictor-image-sizes",
        type=lambda t: [int(v) for v in t.split(",")],
        help="its encoder's image_size_list, comma-separated (default: 128-224 px in steps "
        "of 4, or the space's resolutions, whichever its input width implies)",
    )
    im.add_argument("--force", action="store_true", help="replace the run in --out")
    im.add_argument("overrides", nargs="*", metavar="key=value")
    im.set_defaults(func=_cmd_import_reference)

    backends = ("onnxruntime", "torch-cpu", "torch-cuda")
    se = sub.add_parser(
        "search",
        help="specialize a trained run for budgets (latency, MACs, params) or a Pareto front",
        description="Builds what is missing (accuracy dataset and predictor, this machine's "
        "latency table for --backend), searches, then measures the chosen subnets.",
    )
    se.add_argument("run_dir", help="a finished run directory (onceforall train --out)")
    se.add_argument("--latency-ms", type=float, help="latency budget on --backend, in ms")
    se.add_argument("--backend", default="onnxruntime", choices=backends)
    se.add_argument("--macs", type=_quantity, help="MACs budget, e.g. 5e6 or 5M")
    se.add_argument("--params", type=_quantity, help="parameter budget, e.g. 500K")
    se.add_argument("--pareto", action="store_true", help="NSGA-II front instead of one budget")
    se.add_argument(
        "--objective",
        default="latency_ms",
        choices=("latency_ms", "macs"),
        help="the front's cost axis (with --pareto)",
    )
    se.add_argument("--points", type=int, default=8, help="front archs to measure (--pareto)")
    se.add_argument("--plot", help="PNG of the front (default RUN_DIR/pareto-*.png)")
    se.add_argument("--top", type=int, default=3, help="distinct archs to report")
    se.add_argument("--samples", type=int, default=500, help="subnets for the accuracy dataset")
    se.add_argument(
        "--calibration-images",
        type=int,
        help="holdout images each subnet's BN is recalibrated on (default 2000)",
    )
    se.add_argument(
        "--eval-images", type=int, help="holdout images each subnet is evaluated on (default: all)"
    )
    se.add_argument("--threads", type=int, help="latency threads (default 1)")
    se.add_argument(
        "--device",
        help="search with the latency table of a device measured through a latency kit "
        "(onceforall latency kit / import) instead of this machine's",
    )
    _add_timing_args(
        se,
        "untimed calls per layer when the latency table is built here (default 10)",
        "timed calls per layer when the latency table is built here, median taken (default 50); "
        "the picks are timed as their table was",
    )
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--no-measure", action="store_true", help="skip measuring latency")
    se.add_argument("--json", action="store_true", help="print results as JSON")
    se.set_defaults(func=_cmd_search)

    ex = sub.add_parser("export", help="write one subnet as ONNX/TorchScript/safetensors + card")
    ex.add_argument("run_dir")
    ex.add_argument("--arch", required=True, help="arch string (from onceforall search)")
    ex.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--backend", choices=backends, help="latency backend for the card")
    ex.add_argument("--finetuned", action="store_true", help="the fine-tuned weights")
    ex.add_argument("--no-measure", action="store_true", help="do not time the model")
    ex.add_argument("--threads", type=int, help="latency threads (default 1, as search's tables)")
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
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--force", action="store_true", help="redo an existing fine-tune")
    ft.add_argument("--no-progress", action="store_true")
    ft.set_defaults(func=_cmd_finetune)

    la = sub.add_parser(
        "latency",
        help="latency tables: build or validate this machine's; kit / import another device's",
        description="build: time every distinct layer of the space here; validate: time random "
        "subnets against the table. kit: write those layers (and subnets to fit and validate "
        "with) as ONNX files plus measure.py, which times them on another device with numpy and "
        "onnxruntime alone; import: make that device's table from its measurements.json; "
        "list: the run's tables.",
    )
    la.add_argument("action", choices=("build", "validate", "kit", "import", "list"))
    la.add_argument("run_dir")
    la.add_argument("file", nargs="?", help="import: the measurements.json from measure.py")
    la.add_argument("--out", help="kit: the new directory to write the kit into")
    la.add_argument("--device", help="import: the device's name (default: the one measured)")
    la.add_argument(
        "--kit",
        help="import: the kit, for measurements without its manifest (another harness's; "
        "default: the measurements file's directory)",
    )
    la.add_argument("--backend", default="onnxruntime", choices=backends)
    la.add_argument("--threads", type=int)
    la.add_argument(
        "--n",
        type=int,
        help="random subnets to validate on (validate: 30; build and kit: 20, timed in the same "
        "rounds as the layers)",
    )
    la.add_argument("--seed", type=int, default=1)
    la.add_argument(
        "--force",
        action="store_true",
        help="build: measure an existing table again; import: replace an existing table",
    )
    _add_timing_args(
        la,
        "untimed calls per layer and subnet (default: 10 to build, the table's to validate)",
        "timed calls per layer and subnet, median taken (default: 50, or the table's)",
    )
    la.set_defaults(func=_cmd_latency)

    de = sub.add_parser(
        "demo",
        help="train once on Fashion-MNIST, deploy three specialized ONNX models, write a report",
    )
    de.add_argument("--out", default="runs/demo", help="demo directory (reused when re-run)")
    de.add_argument("--preset", default="quick", choices=("quick", "smoke"))
    de.add_argument(
        "--family",
        choices=list_supernets(),
        help="supernet family to train instead of the preset's model.family (with the preset's "
        "schedule, or the preset's variant for that family, e.g. fashion_mnist_resnet_quick.yaml)",
    )
    de.add_argument("--backend", default="onnxruntime", choices=backends)
    de.add_argument("--no-progress", action="store_true")
    de.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come anywhere after the config (also after --out): argparse leaves
    # those it cannot place among the unknown arguments.
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [u for u in unknown if "=" in u and not u.startswith("-")]
        unknown = [u for u in unknown if u not in args.overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"onceforall {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
