"""Timing models on a backend: eager torch on CPU or CUDA, or onnxruntime on the CPU.

Everything here times one forward pass the same way, so that a latency table built from layers
predicts whole models timed with :func:`measure_latency`: warm-up runs, then the median of
per-call times, with the same threads and the same onnxruntime session options. Many models are
timed in interleaved rounds (:func:`measure_many`) so that a shared machine's slow spells hit
them alike.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onceforall.predictors import onnx_timing
from onceforall.predictors.onnx_timing import cpu_name
from onceforall.static import LAYERS_VERSION

__all__ = [
    "BACKENDS",
    "CLOCKS",
    "check_backend",
    "cpu_name",
    "environment",
    "measure_latency",
    "measure_many",
    "onnx_bytes",
    "onnx_session",
    "resolve_threads",
]

BACKENDS = ("torch-cpu", "torch-cuda", "onnxruntime")
CLOCKS = ("wall", "cpu")
# Intra-op threads for latency, wherever a command times a model: search's latency tables, their
# validation and the export card. Batch-1 inference on one core is the setting the latency model is
# validated in; with 2 threads, onnxruntime's parallel dispatch of these small layers made
# whole-net times diverge from the layer sums, and a small model runs slower than on one.
LATENCY_THREADS = 1


def check_backend(backend: str) -> str:
    """``backend`` if it is in :data:`BACKENDS` and usable here, else a ValueError saying why."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown latency backend {backend!r}; choose from {BACKENDS}")
    if backend == "torch-cuda" and not torch.cuda.is_available():
        raise ValueError(
            "backend 'torch-cuda' needs a CUDA device, and torch.cuda.is_available() is False "
            "here; use 'torch-cpu' or 'onnxruntime', or run on a machine with a GPU"
        )
    return backend


def check_clock(clock: str, backend: str, threads: int) -> str:
    """``clock`` if it can time ``backend`` with ``threads``, else a ValueError saying why.

    ``wall`` is latency as a user sees it. ``cpu`` is the CPU time of the calling thread: on a
    machine shared with other work it leaves out the time the thread waited for a core, and it
    equals the wall time of a dedicated machine when all the work runs on that thread, i.e. on the
    CPU with one thread (torch runs ops inline then, onnxruntime has no thread pool).
    """
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; choose from {CLOCKS}")
    if clock == "cpu" and (threads != 1 or backend == "torch-cuda"):
        raise ValueError(
            f"clock='cpu' times only the calling thread, so it needs threads=1 on a CPU backend "
            f"(got threads={threads}, backend={backend!r}); use clock='wall'"
        )
    return clock


def resolve_threads(threads: int | None) -> int:
    """``threads``, or ``torch.get_num_threads()`` for ``None``; a clear error if not positive."""
    threads = torch.get_num_threads() if threads is None else threads
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive int (or None for torch's)")
    return threads


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def onnx_session(model: bytes | str | Path, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU with the options latency tables use (see
    :func:`onceforall.predictors.onnx_timing.session`, which a latency kit's ``measure.py`` uses
    on other devices too). Evaluate exported models with this too: a table only predicts
    sessions made alike.

    Args:
        model: ONNX model bytes or a path to a ``.onnx`` file.
        threads: intra-op threads (default ``torch.get_num_threads()``, so both runtimes get the
            same cores).
    """
    return onnx_timing.session(model, resolve_threads(threads))


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``model`` exported to ONNX in memory as ``onceforall.export.export_onnx`` writes files (the
    TorchScript exporter, opset 17, dynamic batch), so layers compile as the whole model does."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(input_shape),),
            buf,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def _runner(model: Any, shape: tuple[int, ...], backend: str, threads: int) -> Callable[[], Any]:
    """A no-argument callable running ``model`` once on a random input of ``shape``."""
    if backend == "onnxruntime":
        if isinstance(model, nn.Module):
            model = onnx_bytes(model, shape)
        session = model if hasattr(model, "run") else onnx_session(model, threads)
        return onnx_timing.runner(session, shape)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"backend {backend!r} runs an nn.Module, got {type(model).__name__}; "
            "use backend='onnxruntime' for ONNX models"
        )
    if backend == "torch-cuda":  # a copy: the caller's model stays where it is
        model = copy.deepcopy(model).to("cuda")
    device = "cuda" if backend == "torch-cuda" else "cpu"
    return functools.partial(model, torch.randn(shape, device=device))


def _time_interleaved(
    runs: Sequence[Callable[[], Any]],
    hot: Sequence[bool],
    warmup: int,
    repeats: int,
    cuda: bool,
    clock: Callable[[], int],
    progress: bool,
) -> list[float]:
    """Median time in ms (on ``clock``, or CUDA events) of one call of each of ``runs``, in
    interleaved rounds: see :func:`onceforall.predictors.onnx_timing.time_interleaved`, which
    times the CPU backends (and a latency kit on its device); CUDA calls are timed with events."""

    def rounds(r: range) -> Iterable[int]:
        return _progress(r, progress, "timing rounds")

    if not cuda:
        return onnx_timing.time_interleaved(runs, hot, warmup, repeats, clock, rounds)
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    torch.cuda.synchronize()
    for _ in rounds(range(repeats)):
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in runs]  # fmt: skip
        for run, h, (start, end) in zip(runs, hot, events, strict=True):
            if h:
                run()
            # An idle GPU at the start: with earlier work still queued, the call's kernels would
            # queue up behind it and the events would see them run back to back, leaving out
            # the launch gaps that a launch-bound call's latency is made of.
            torch.cuda.synchronize()
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
        for t, (start, end) in zip(times, events, strict=True):
            t.append(start.elapsed_time(end))
    return [statistics.median(t) for t in times]


def measure_many(
    items: Iterable[tuple[Any, tuple[int, ...], bool]],
    backend: str,
    *,
    threads: int | None,
    warmup: int,
    repeats: int,
    clock: str = "wall",
    progress: bool = False,
) -> list[float]:
    """:func:`measure_latency` of many ``(model, input_shape, hot)`` triples (modules in eval
    mode), timed in interleaved rounds; returns one median in ms per triple. ``hot`` times a
    model as in a loop over it alone; cold, as the other models left the caches."""
    check_backend(backend)
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup={warmup} must be >= 0 and repeats={repeats} >= 1")
    threads = resolve_threads(threads)
    check_clock(clock, backend, threads)
    timer = time.perf_counter_ns if clock == "wall" else time.thread_time_ns
    runs, hot = [], []
    for model, shape, h in _progress(list(items), progress, f"preparing ({backend})"):
        runs.append(_runner(model, shape, backend, threads))
        hot.append(h)
    with _torch_threads(threads), torch.inference_mode():
        cuda = backend == "torch-cuda"
        return _time_interleaved(runs, hot, warmup, repeats, cuda, timer, progress)


def measure_latency(
    model: nn.Module | bytes | str | Path | Any,
    input_shape: Sequence[int],
    backend: str = "torch-cpu",
    *,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    clock: str = "wall",
) -> float:
    """Median latency of one forward pass, in milliseconds.

    Args:
        model: an ``nn.Module`` (e.g. an extracted subnet; run in eval mode, exported to ONNX in
            memory for ``onnxruntime``), or for ``onnxruntime`` only: ONNX bytes, a ``.onnx`` path
            or an ``InferenceSession`` (used as given: make it with :func:`onnx_session`).
        input_shape: the input's shape, e.g. ``(1, C, R, R)``; filled with random values.
        backend: one of :data:`BACKENDS`.
        threads: intra-op threads (torch's and onnxruntime's); default ``torch.get_num_threads()``.
        warmup: untimed runs first.
        repeats: timed runs; the median is returned.
        clock: ``"wall"``, or ``"cpu"`` for the calling thread's CPU time (see
            :func:`check_clock`: robust to other work on a shared machine, needs ``threads=1``).

    Raises:
        ValueError: for an unknown or unavailable backend, a model the backend cannot run, or a
            malformed shape.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(
            f"input_shape={tuple(input_shape)} must be positive sizes like (1, C, R, R)"
        )
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        return measure_many(
            [(model, shape, True)],
            backend,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            clock=clock,
        )[0]
    finally:
        if was_training:
            model.train()


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far, from ``/proc/stat`` (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait; the rest (user, system, irq, steal...) is busy
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def busy_cores(window: float = 0.5) -> float:
    """How many cores other processes keep busy now, to warn that latency measurements are skewed.

    Samples ``/proc/stat`` over ``window`` seconds, minus this process's own CPU time in that
    window (threads still spinning after earlier work). The load average would count this
    process's work of the last minute too: the demo builds the accuracy dataset on every core
    just before it measures the latency table. Where ``/proc/stat`` is missing: the 1-minute load
    average.
    """
    try:
        busy0, own0, wall0 = _busy_seconds(), time.process_time(), time.monotonic()
        time.sleep(window)
        busy1, own1, wall1 = _busy_seconds(), time.process_time(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(wall1 - wall0, 1e-9)


def environment(backend: str, threads: int, batch_size: int) -> dict[str, Any]:
    """Where and how a measurement runs: backend, device, threads, versions, load, time."""
    import onnxruntime as ort

    device = torch.cuda.get_device_name() if backend == "torch-cuda" else cpu_name()
    return {
        "backend": backend,
        "layers_version": LAYERS_VERSION,
        "device": device,
        "cpu": cpu_name(),
        "threads": threads,
        "batch_size": batch_size,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _progress(items: Iterable[Any], on: bool, desc: str) -> Any:
    """``items``, wrapped in a tqdm progress bar if ``on``."""
    if not on:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
