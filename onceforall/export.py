"""Writing extracted subnets to deployable formats (ONNX, TorchScript, safetensors) with a model
card: everything a deployment needs to feed the model and to know what it costs and how good it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from onceforall.data import preprocessing
from onceforall.files import (
    atomic_write,
    atomic_write_with,
    check_writable,
    fsync_path,
    temp_path,
)

if TYPE_CHECKING:
    from onceforall.run import Run

__all__ = [
    "CARD_FILE",
    "FORMATS",
    "export_onnx",
    "export_subnet",
    "export_torchscript",
    "load_exported",
]

CARD_FILE = "card.json"
# format -> (file name, the backend its latency is measured with by default)
FORMATS = {
    "onnx": ("model.onnx", "onnxruntime"),
    "torchscript": ("model.pt", "torch-cpu"),
    "safetensors": ("model.safetensors", "torch-cpu"),
}


def export_onnx(
    model: nn.Module, path: str | Path, *, in_channels: int, resolution: int, opset: int = 17
) -> Path:
    """Write ``model`` (an extracted subnet) to ONNX with a dynamic batch dimension.

    The graph's input is ``input`` of shape ``(batch, in_channels, resolution, resolution)`` and
    its output ``logits`` of shape ``(batch, num_classes)``. Written atomically: ``path`` is
    either left as it was or holds the whole model.
    """
    model = model.eval()
    example = torch.zeros(
        1, in_channels, resolution, resolution, device=next(model.parameters()).device
    )

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated upstream in favour of torch.export,
            # which is ~15x slower on these small static graphs and yields the same ONNX.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                tmp,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )

    return atomic_write_with(path, write)


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` scripted with ``torch.jit.script`` (loadable with ``torch.jit.load``),
    atomically.

    PyTorch deprecates TorchScript in favour of ``torch.export``; a user who asks for this format
    asked for it, so its deprecation warning is not repeated at every export (``--format``'s help
    says it once, and points to ONNX for deployment).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.script.* is deprecated", FutureWarning)
        scripted = torch.jit.script(model.eval())
    return atomic_write_with(path, lambda tmp: scripted.save(tmp))


def export_subnet(
    run: Run,
    arch: Any,
    fmt: str,
    out_dir: str | Path,
    *,
    backend: str | None = None,
    weights: Path | None = None,
    force: bool = False,
    measure: bool = True,
    threads: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Write the BN-recalibrated subnet at ``arch`` of a run as ``fmt`` plus ``card.json``.

    Every input is checked before anything is written, and the model file and card are each
    written to a temporary file beside their target, then renamed into place (the card last):
    an export that fails leaves ``out_dir`` as it was.

    Args:
        run: the trained run (:class:`~onceforall.run.Run`).
        arch: an :class:`~onceforall.arch.ArchConfig` or its string, in the run's space.
        fmt: ``onnx``, ``torchscript`` or ``safetensors``.
        out_dir: a directory, created if missing; must not hold the files the export writes
            (the model's and ``card.json``) unless ``force``.
        backend: latency backend for the card (default: onnxruntime for ONNX, else torch-cpu).
        weights: a fine-tuned subnet's weights (``onceforall finetune``) instead of the supernet's.
        force: overwrite an existing export in ``out_dir``.
        measure: time the exported model for ``latency_ms`` (else ``null``).
        threads: intra-op threads for that timing, recorded in the card; the default
            (:data:`~onceforall.predictors.LATENCY_THREADS`) is what
            ``onceforall search`` and its latency tables use, so the card's latency compares
            with theirs.
        device: a device whose latency table was measured through a latency kit
            (``onceforall latency import``): the card also carries ``device`` and
            ``device_latency_ms``, that table's prediction for the subnet there.

    Returns:
        The card (also written to ``out_dir/card.json``): arch, resolution, in_channels,
        num_classes, class_names, mean, std, test and holdout accuracy, macs, params, latency_ms
        with its backend, format, file, and the supernet config needed to rebuild the module.

    Raises:
        ValueError: unknown format or backend, a backend unusable here when ``measure``
            (``torch-cuda`` without a GPU), bad ``threads``, an arch outside the run's space,
            or an ``out_dir`` that cannot be written.
        FileExistsError: ``out_dir`` holds a file the export writes and ``force`` is not set,
            or ``out_dir`` is a file.
        FileNotFoundError: ``weights`` or the ``device``'s latency table is missing.
    """
    from onceforall.predictors import LATENCY_THREADS, measure_latency
    from onceforall.predictors.timing import BACKENDS, check_backend, resolve_threads

    # Everything that can fail is checked first: nothing is written until the export is ready.
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} unknown; choose from {', '.join(FORMATS)}")
    arch = run.parse(arch)
    file_name, default_backend = FORMATS[fmt]
    backend = backend or default_backend
    threads = resolve_threads(threads or LATENCY_THREADS)
    if measure:
        check_backend(backend)  # unknown, or not usable here (torch-cuda without a GPU)
    elif backend not in BACKENDS:
        raise ValueError(f"unknown latency backend {backend!r}; choose from {BACKENDS}")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(
            f"fine-tuned weights {weights} not found; run `onceforall finetune {run.path} "
            f"--arch {arch}` first, or export the supernet's weights (without --finetuned)"
        )
    out = Path(out_dir)
    _check_out_dir(out, [out / file_name, out / CARD_FILE], force)
    replaced = _previous_model_file(out)
    on_device = {}
    if device is not None:  # a missing table is an error
        from onceforall.specialize import Specializer

        table = Specializer(run, threads=threads, progress=False, device=device).latency_table
        on_device = {"device": device, "device_latency_ms": table.predict(arch)}
    model = run.subnet(arch, weights=weights).cpu()
    data = run.data
    shape = (1, data.in_channels, arch.resolution, arch.resolution)
    card = {
        "arch": str(arch),
        "resolution": arch.resolution,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "mean": list(data.mean),
        "std": list(data.std),
        # Every step from an image file or array to this input, with its parameters.
        "preprocessing": preprocessing(run.config.data, data, arch.resolution),
        "input_name": "input",
        "output_name": "logits",
        "test_accuracy": run.accuracy(model, arch, "test"),
        "holdout_accuracy": run.accuracy(model, arch, "holdout"),
        "macs": run.net.macs(arch),
        "params": run.net.num_params(arch),
        "latency_ms": None,
        "backend": backend,
        "threads": threads if measure else None,
        "batch_size": 1,
        **on_device,
        "format": fmt,
        "file": file_name,
        "finetuned": weights is not None,
        "supernet": run.net.config,
        "run_dir": str(run.path.resolve()),
    }
    created = [d for d in (out, *out.parents) if not d.exists()]  # the deepest first
    out.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    try:
        model_tmp = temp_path(out / file_name)
        staged.append(model_tmp)
        if fmt == "onnx":
            export_onnx(model, model_tmp, in_channels=data.in_channels, resolution=arch.resolution)
        elif fmt == "torchscript":
            export_torchscript(model, model_tmp)
        else:
            from onceforall.training.checkpoint import save_weights

            save_weights(model, model_tmp, {"arch": str(arch)})
        if measure:
            target = model_tmp if fmt == "onnx" and backend == "onnxruntime" else model
            card["latency_ms"] = measure_latency(target, shape, backend, threads=threads)
        card["sha256"] = file_sha256(model_tmp)
        card_tmp = temp_path(out / CARD_FILE)
        staged.append(card_tmp)
        atomic_write(card_tmp, (json.dumps(card, indent=1) + "\n").encode())
        # Both files are whole on disk: the model takes its place, then the card describing it.
        # (A crash between the two renames leaves the new model beside the old card, which the
        # card's sha256 reveals: load_exported refuses the pair.)
        os.replace(model_tmp, out / file_name)
        os.replace(card_tmp, out / CARD_FILE)
    except BaseException:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        for folder in created:  # folders this export made, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    if replaced is not None and replaced != out / file_name:
        # The previous export's model in another format: its card is gone, and a stale model
        # beside the new card would be mistaken for the export.
        replaced.unlink(missing_ok=True)
    fsync_path(out)  # make the renames durable
    return card


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB pieces (a card's ``sha256``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _previous_model_file(out: Path) -> Path | None:
    """The model file an earlier export's card in ``out`` names, if it is one an export writes
    (a card edited to name any other file leaves that file alone)."""
    try:
        name = json.loads((out / CARD_FILE).read_text())["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    known = {file for file, _ in FORMATS.values()}
    return out / name if isinstance(name, str) and name in known else None


def _check_out_dir(out: Path, targets: list[Path], force: bool) -> None:
    """A clear error for an export directory that cannot be written, or whose files the export
    would overwrite without ``force``."""
    check_writable(out, "--out")
    for target in targets:
        if target.is_dir():
            raise FileExistsError(f"{target} is a directory; remove it or choose another --out")
    existing = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        raise FileExistsError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass "
            "--force to overwrite, or choose another --out"
        )


def load_exported(out_dir: str | Path) -> nn.Module:
    """Load a ``safetensors`` or ``torchscript`` export back as a torch module (eval mode).

    ONNX exports need no onceforall at all: run them with onnxruntime.
    """
    out = Path(out_dir)
    card = json.loads((out / CARD_FILE).read_text())
    path = out / card["file"]
    if "sha256" in card and file_sha256(path) != card["sha256"]:
        raise ValueError(
            f"{path} is not the model {out / CARD_FILE} describes (its sha256 differs): the "
            "export was interrupted or the file replaced since; export again"
        )
    if card["format"] == "torchscript":
        return torch.jit.load(str(path)).eval()
    if card["format"] != "safetensors":
        raise ValueError(f"{out} holds a {card['format']} export; run it with onnxruntime")
    from onceforall.supernets import create_supernet
    from onceforall.training.checkpoint import load_weights

    net = create_supernet(**card["supernet"]).extract(card["arch"])
    return load_weights(net, path).eval()
