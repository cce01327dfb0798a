"""``onceforall latency``: latency tables built here, or measured elsewhere with a kit."""

from __future__ import annotations

import argparse
import sys

from onceforall.cli.common import (
    BACKENDS,
    add_timing_args,
    count,
    drift_line,
    print_table,
    read_timing,
    whole,
)


def _cmd_latency(args: argparse.Namespace) -> int:
    """Build this machine's latency table for a run, or validate it end to end; or write a
    latency kit for another device and import what it measured."""
    from onceforall.run import Run

    run = Run.open(args.run_dir)
    timing = read_timing(args)
    if args.action in ("kit", "import"):
        return _latency_kit(run, args, timing)
    if args.file is not None:
        parser_hint = "only `latency import RUN_DIR MEASUREMENTS` takes a file"
        raise ValueError(f"unexpected argument {args.file!r}: {parser_hint}")
    if args.action == "list":
        return _latency_list(run)
    if args.action == "validate" and args.n is not None and args.n < 2:
        raise ValueError(f"--n {args.n}: validate needs at least 2 subnets (MAPE, Spearman)")
    from onceforall.predictors.latency_validation import round_validation, validate_latency
    from onceforall.specialize import Specializer, latency_table_path

    spec = Specializer(
        run,
        args.backend,
        threads=args.threads,
        latency_validate=20 if args.n is None else args.n,
        progress=not args.no_progress,
        **{f"latency_{k}": v for k, v in timing.items() if v is not None},
    )
    path = latency_table_path(run, args.backend, spec.threads)
    if args.action == "build" and path.is_file():
        if not args.force:
            raise FileExistsError(f"{path} exists; pass --force to measure it again")
        table = spec.measure_latency_table()  # the old table stays until this one is whole
    else:
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
        v = validate_latency(run.net, table, n, args.seed, progress=not args.no_progress, **timing)
        _print_validation(v, f"{n} random subnets, {args.backend}")
        rebuild = f"onceforall latency build {args.run_dir} --backend {args.backend}"
        if args.threads:
            rebuild += f" --threads {args.threads}"
        print(drift_line(v.drift, rebuild + " --force"))
    return 0


def _latency_list(run) -> int:
    """The run's latency tables: device, backend, settings, where they came from."""
    from onceforall.specialize import latency_tables

    rows = []
    damaged = []
    for path, meta in latency_tables(run):
        if "error" in meta:
            damaged.append(f"{path.name}: {meta['error']}")
            continue
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
    if damaged:
        print(
            "damaged latency tables (delete them, then `latency build --force` or `latency "
            "import --force` again): " + "; ".join(damaged),
            file=sys.stderr,
        )
    if not rows:
        if not damaged:
            print(
                f"no latency tables in {run.path / 'latency'} yet: `latency build` or `latency kit`"
            )
        return 1 if damaged else 0
    print_table(
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
    return 1 if damaged else 0


def _print_validation(v, what: str, *, same_rounds: bool = False) -> None:
    """The validation's rows and scores. Subnets timed in the same rounds as the table's layers
    measure the table's own error, which is a few percent on a steady machine: far more means
    the timings were disturbed, and that is said."""
    rows = [{"arch": str(a), "predicted": p, "measured": m} for a, p, m in v.rows]
    print_table(
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
            progress=not args.no_progress,
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``latency``."""
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
    la.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    la.add_argument("--threads", type=count)
    la.add_argument(
        "--n",
        type=whole,
        help="random subnets to validate on (validate: 30; build and kit: 20, timed in the same "
        "rounds as the layers)",
    )
    la.add_argument("--seed", type=int, default=1)
    la.add_argument("--no-progress", action="store_true", help="no progress bars")
    la.add_argument(
        "--force",
        action="store_true",
        help="build: measure an existing table again; import: replace an existing table",
    )
    add_timing_args(
        la,
        "untimed calls per layer and subnet (default: 10 to build, the table's to validate)",
        "timed calls per layer and subnet, median taken (default: 50, or the table's)",
    )
    la.set_defaults(func=_cmd_latency)
