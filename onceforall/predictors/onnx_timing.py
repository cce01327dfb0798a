"""Time ONNX models with onnxruntime alone: the session options and interleaved timing rounds of
onceforall's ``onnxruntime`` latency backend, and, run as a script, the measurement of a latency
kit on a device that has no torch and no onceforall.

This file is copied into every latency kit as ``measure.py`` (``onceforall latency kit``), so it
imports only the standard library, numpy and onnxruntime, and runs on Python 3.8 and later (a
phone's or a board's Python may be old). onceforall's own onnxruntime timing calls the same
functions, so a table measured through a kit and one built locally time layers identically.

On the device (``python measure.py --help`` for all options)::

    python measure.py KIT_DIR [--name "Pixel 8"] [--threads 1] [--providers NAME,...]
    python measure.py --model model.onnx --shape 1,1,28,28     # time one exported model

The first writes ``KIT_DIR/measurements.json``; ``onceforall latency import RUN_DIR
measurements.json`` turns it into the run's latency table for that device.

Another harness (an Android or iOS app, a C++ program with the device's own runtime build) can
stand in for this script. It must time the kit's models as :func:`measure_kit` does: every model
of ``manifest.json``'s ``models`` on a random float32 input of its ``input_shape``, ``warmup``
untimed calls each, then ``repeats`` rounds that each time one call of every model in order (with
an untimed call right before the timed one where ``hot``), each model's median in milliseconds;
one inter-op thread, sequential execution, all graph optimizations, ``threads`` intra-op
threads. Then it writes, beside ``manifest.json``, a JSON object with at least::

    {"format": "onceforall-latency-measurements", "version": 1, "kit_id": <the manifest's>,
     "device": {"name": "..."}, "threads": T, "warmup": W, "repeats": R, "ms": [one per model]}
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence  # noqa: UP035 (Python 3.8 on devices)

import numpy as np

KIT_FORMAT = "onceforall-latency-kit"
MEASUREMENTS_FORMAT = "onceforall-latency-measurements"
KIT_VERSION = 1
MANIFEST = "manifest.json"
MEASUREMENTS = "measurements.json"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def session(model: bytes | str | Path, threads: int, providers: Sequence[str] | None = None):
    """An ``onnxruntime.InferenceSession`` with the options onceforall's latency tables use.

    ``intra_op_num_threads`` is ``threads``; one inter-op thread and sequential execution, since
    these graphs are one chain of layers; all graph optimizations (conv-BN-activation fusion), as
    a deployment would enable. Thread spinning stays at onnxruntime's default (on), as in a
    default deployment. ``providers`` default to the CPU execution provider.
    """
    import onnxruntime as ort

    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive int")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: no per-session warnings on stderr
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=list(providers or DEFAULT_PROVIDERS))


def _ort_errors(*names: str) -> tuple[type[Exception], ...]:
    """onnxruntime's exception classes of these names (those this onnxruntime version has)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(c for c in (getattr(state, n, None) for n in names) if isinstance(c, type))


def _ort_message(exc: Exception) -> str:
    """onnxruntime's error text on one line, without its ``[ONNXRuntimeError] : N :`` prefix."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", " ".join(str(exc).split()))


def load_model(
    path: str | Path,
    threads: int,
    providers: Sequence[str] | None,
    shape: Sequence[int],
    missing: str,
    unloadable: str,
    misfit: str,
) -> Callable[[], Any]:
    """:func:`runner` of a :func:`session` of the ONNX file ``path`` on an input of ``shape``.

    A file that is missing, is no ONNX model this onnxruntime loads, or takes another input
    shape is a FileNotFoundError or ValueError that names it and says what to do (``missing``,
    ``unloadable``, ``misfit``), not onnxruntime's traceback.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        what = "is a directory, not an ONNX file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{path} {what}: {missing}")
    load_errors = _ort_errors("NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
                              "InvalidArgument", "Fail", "NotImplemented")  # fmt: skip
    try:
        sess = session(path, threads, providers)
    except load_errors as exc:
        raise ValueError(
            f"onnxruntime {ort.__version__} cannot load {path} ({_ort_message(exc)}): {unloadable}"
        ) from exc
    expected = list(sess.get_inputs()[0].shape)  # ints, and names or None for dynamic axes
    fixed = [d if isinstance(d, int) and d > 0 else None for d in expected]
    if len(fixed) != len(shape) or any(d not in (None, shape[i]) for i, d in enumerate(fixed)):
        same_rank = len(fixed) == len(shape)
        fit = [d if d is not None else (shape[i] if same_rank else 1) for i, d in enumerate(fixed)]
        shown = "[" + ", ".join(str(d) for d in expected) + "]"
        raise ValueError(
            f"{path} takes an input of shape {shown}, not {list(shape)}: "
            + misfit.format(shape=",".join(str(d) for d in fit))
        )
    return runner(sess, shape)


def check_providers(providers: Sequence[str]) -> None:
    """A ValueError unless this onnxruntime build has every one of ``providers``."""
    import onnxruntime as ort

    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise ValueError(
            f"execution provider(s) {missing} are not in this onnxruntime build (available: "
            f"{ort.get_available_providers()}); install an onnxruntime package that has them"
        )


def runner(sess: Any, shape: Sequence[int]) -> Callable[[], Any]:
    """A no-argument callable running ``sess`` once on a fixed random input of ``shape``."""
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).random(tuple(shape), np.float32)}
    return functools.partial(sess.run, None, feed)


def time_interleaved(
    runs: Sequence[Callable[[], Any]],
    hot: Sequence[bool],
    warmup: int,
    repeats: int,
    clock: Callable[[], int] = time.perf_counter_ns,
    rounds: Callable[[range], Iterable[int]] = iter,
) -> list[float]:
    """Median time in ms (on ``clock``, in ns) of one call of each of ``runs``.

    Calls are interleaved, one timed call per run per round, so a slow spell of a shared machine
    hits every run alike instead of a few unlucky ones (which keeps their ranking), and the
    per-call median drops the calls a preemption hit. A ``hot`` run makes an untimed call right
    before each timed one, so it is timed as in a loop over that run alone; a cold one finds the
    caches after all the other runs. ``rounds`` wraps the rounds (a progress bar).
    """
    if len(hot) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(hot)} hot flags")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup={warmup} must be >= 0 and repeats={repeats} >= 1")
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in rounds(range(repeats)):
        for i, run in enumerate(runs):
            if hot[i]:
                run()
            t0 = clock()
            run()
            times[i].append((clock() - t0) / 1e6)
    return [statistics.median(t) for t in times]


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo where it exists, else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            # x86 says "model name"; some ARM kernels say "Hardware" or "Processor"
            key = line.split(":", 1)[0].strip()
            if key in ("model name", "Hardware", "Processor") and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value:
                    return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kit_id(manifest: dict[str, Any]) -> str:
    """A kit's identity: a digest of its manifest's content (all but ``kit_id`` itself), which
    the manifest and the measurements of the kit carry. A manifest edited after it was written
    no longer matches its own ``kit_id``."""
    content = {k: v for k, v in manifest.items() if k != "kit_id"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_manifest(kit: str | Path) -> dict[str, Any]:
    """A kit directory's manifest, checked for format and version (a clear error otherwise)."""
    path = Path(kit) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: pass the directory `onceforall latency kit` wrote"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != KIT_FORMAT or manifest.get("version") != KIT_VERSION:
        raise ValueError(
            f"{path} is not a onceforall latency kit of version {KIT_VERSION} (format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r}); make the kit with "
            "the onceforall that will import its measurements"
        )
    if manifest.get("kit_id") != kit_id(manifest):
        raise ValueError(f"{path} was altered after the kit was written; write a new kit")
    return manifest


def measure_kit(
    kit: str | Path,
    *,
    name: str | None = None,
    threads: int | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    providers: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time every model of a kit on this device; returns the measurements (see module doc).

    ``threads``, ``warmup`` and ``repeats`` default to the kit's (those of the run's own tables);
    ``name`` names the device in the table (default: its CPU model).
    """
    import onnxruntime as ort

    kit = Path(kit)
    manifest = read_manifest(kit)
    threads = manifest["threads"] if threads is None else threads
    warmup = manifest["warmup"] if warmup is None else warmup
    repeats = manifest["repeats"] if repeats is None else repeats
    providers = list(providers or DEFAULT_PROVIDERS)
    check_providers(providers)
    models = manifest["models"]
    start = time.perf_counter()
    runs = []
    copy = "copy the whole kit directory to this device again"
    for i, model in enumerate(models):
        if progress and (i % 50 == 0 or i == len(models) - 1):
            print(f"preparing {i + 1}/{len(models)} models", file=sys.stderr)
        run = load_model(
            kit / model["file"],
            threads,
            providers,
            model["input_shape"],
            missing=f"the kit is incomplete; {copy}",
            unloadable=f"the file is damaged; {copy} (or install a newer onnxruntime)",
            misfit=f"the kit's models were changed; {copy}",
        )
        runs.append(run)

    def rounds(r: range) -> Iterable[int]:
        for i in r:
            if progress and (i % 10 == 0 or i == len(r) - 1):
                print(f"timing round {i + 1}/{len(r)}", file=sys.stderr)
            yield i

    ms = time_interleaved(runs, [m["hot"] for m in models], warmup, repeats, rounds=rounds)
    cpu = cpu_name()
    return {
        "format": MEASUREMENTS_FORMAT,
        "version": KIT_VERSION,
        "kit_id": manifest["kit_id"],
        "manifest": manifest,  # so the measurements alone suffice to import
        "device": {
            "name": name or cpu,
            "cpu": cpu,
            "node": platform.node(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else [],
        },
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "providers": providers,
        "clock": "wall",
        "ms": ms,
        "seconds": round(time.perf_counter() - start, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="measure.py",
        description="Time a onceforall latency kit (or one ONNX model) on this device with "
        "onnxruntime alone; then `onceforall latency import RUN_DIR measurements.json`.",
    )
    p.add_argument("kit", nargs="?", help="the directory `onceforall latency kit` wrote")
    p.add_argument("--out", help="measurements file (default KIT/measurements.json)")
    p.add_argument("--name", help="the device's name in the latency table (default: CPU model)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the kit's, 1)")
    p.add_argument("--warmup", type=int, help="untimed calls per model (default: the kit's)")
    p.add_argument("--repeats", type=int, help="timed rounds, median taken (default: the kit's)")
    p.add_argument(
        "--providers",
        help="comma-separated onnxruntime execution providers, e.g. XnnpackExecutionProvider,"
        "CPUExecutionProvider (default CPUExecutionProvider)",
    )
    p.add_argument("--model", help="instead of a kit: time this one .onnx model")
    p.add_argument("--shape", help="--model's input shape, e.g. 1,1,28,28")
    p.add_argument("--force", action="store_true", help="overwrite an existing measurements file")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    providers = args.providers.split(",") if args.providers else None
    try:
        if args.model:
            if not args.shape:
                raise ValueError("--model needs --shape, e.g. --shape 1,1,28,28 (see card.json)")
            try:
                shape = [int(s) for s in args.shape.split(",")]
            except ValueError:
                shape = []
            if not shape or min(shape) < 1:
                raise ValueError(
                    f"--shape {args.shape} is not positive whole numbers separated by commas, "
                    "e.g. --shape 1,1,28,28"
                )
            check_providers(providers or DEFAULT_PROVIDERS)
            run = load_model(
                args.model,
                args.threads or 1,
                providers,
                shape,
                missing="check the --model path",
                unloadable="pass an .onnx file, such as `onceforall export --format onnx` writes "
                "(not a TorchScript .pt), or install a newer onnxruntime",
                misfit="pass --shape {shape}",
            )
            warmup = 10 if args.warmup is None else args.warmup
            try:
                ms = time_interleaved([run], [True], warmup, args.repeats or 50)[0]
            except _ort_errors("InvalidArgument") as exc:
                raise ValueError(
                    f"onnxruntime cannot run {args.model} on a float32 input of shape {shape} "
                    f"({_ort_message(exc)}); pass a model that takes one float32 input"
                ) from exc
            print(f"{args.model}: {ms:.4f} ms (median of {args.repeats or 50} calls, "
                  f"{args.threads or 1} thread(s), input {shape})")  # fmt: skip
            return 0
        if not args.kit:
            raise ValueError("give the kit directory (or --model FILE --shape N,C,H,W)")
        out = Path(args.out) if args.out else Path(args.kit) / MEASUREMENTS
        if out.exists() and not args.force:
            raise FileExistsError(f"{out} exists; pass --force to measure again, or --out FILE")
        result = measure_kit(
            args.kit,
            name=args.name,
            threads=args.threads,
            warmup=args.warmup,
            repeats=args.repeats,
            providers=providers,
            progress=not args.quiet,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"measure.py: error: {exc}", file=sys.stderr)
        return 2
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)  # whole or not at all
    print(
        f"timed {len(result['ms'])} models on {result['device']['name']} in "
        f"{result['seconds']:.0f} s: {out}\nnext, where onceforall runs: onceforall latency "
        f"import RUN_DIR {out.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
