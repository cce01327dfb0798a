"""Writing extracted subnets to deployable formats (ONNX, TorchScript, safetensors) with a model
card: everything a deployment needs to feed the model and to know what it costs and how good it is.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from onceforall.data import preprocessing

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
    its output ``logits`` of shape ``(batch, num_classes)``.
    """
    path = Path(path)
    model = model.eval()
    example = torch.zeros(
        1, in_channels, resolution, resolution, device=next(model.parameters()).device
    )
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated upstream in favour of torch.export, which
        # is ~15x slower on these small static graphs and yields the same ONNX.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` scripted with ``torch.jit.script`` (loadable with ``torch.jit.load``)."""
    path = Path(path)
    torch.jit.script(model.eval()).save(str(path))
    return path


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

    Args:
        run: the trained run (:class:`~onceforall.run.Run`).
        arch: an :class:`~onceforall.arch.ArchConfig` or its string, in the run's space.
        fmt: ``onnx``, ``torchscript`` or ``safetensors``.
        out_dir: created if missing; must not hold an export already unless ``force``.
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
        ValueError: unknown format or an arch outside the run's space.
        FileExistsError: ``out_dir`` holds an export and ``force`` is not set.
    """
    from onceforall.predictors import LATENCY_THREADS, measure_latency

    threads = threads or LATENCY_THREADS
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} unknown; choose from {', '.join(FORMATS)}")
    arch = run.parse(arch)
    out = Path(out_dir)
    file_name, default_backend = FORMATS[fmt]
    if (out / CARD_FILE).exists() and not force:
        raise FileExistsError(f"{out} already holds an export; pass --force to overwrite it")
    on_device = {}
    if device is not None:  # before anything is written: a missing table is an error
        from onceforall.specialize import Specializer

        table = Specializer(run, threads=threads, progress=False, device=device).latency_table
        on_device = {"device": device, "device_latency_ms": table.predict(arch)}
    out.mkdir(parents=True, exist_ok=True)
    model = run.subnet(arch, weights=weights).cpu()
    data = run.data
    shape = (1, data.in_channels, arch.resolution, arch.resolution)
    path = out / file_name
    if fmt == "onnx":
        export_onnx(model, path, in_channels=data.in_channels, resolution=arch.resolution)
    elif fmt == "torchscript":
        export_torchscript(model, path)
    else:
        from onceforall.training.checkpoint import save_weights

        save_weights(model, path, {"arch": str(arch)})
    backend = backend or default_backend
    latency = None
    if measure:
        target = path if fmt == "onnx" and backend == "onnxruntime" else model
        latency = measure_latency(target, shape, backend, threads=threads)
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
        "latency_ms": latency,
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
    from onceforall.training.checkpoint import atomic_write

    atomic_write(out / CARD_FILE, (json.dumps(card, indent=1) + "\n").encode())
    return card


def load_exported(out_dir: str | Path) -> nn.Module:
    """Load a ``safetensors`` or ``torchscript`` export back as a torch module (eval mode).

    ONNX exports need no onceforall at all: run them with onnxruntime.
    """
    out = Path(out_dir)
    card = json.loads((out / CARD_FILE).read_text())
    path = out / card["file"]
    if card["format"] == "torchscript":
        return torch.jit.load(str(path)).eval()
    if card["format"] != "safetensors":
        raise ValueError(f"{out} holds a {card['format']} export; run it with onnxruntime")
    from onceforall.supernets import create_supernet
    from onceforall.training.checkpoint import load_weights

    net = create_supernet(**card["supernet"]).extract(card["arch"])
    return load_weights(net, path).eval()
