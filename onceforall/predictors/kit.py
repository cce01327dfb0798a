"""Latency kits: a run's latency table measured on another device, with onnxruntime alone.

A latency table is built by timing every distinct layer of the space on the device that will run
the model. ``onceforall latency build`` does that on the machine onceforall runs on; a phone, a
single-board computer or an inference server often cannot run torch, or should not have to. A
kit carries the same measurement there:

1. :func:`write_kit` (``onceforall latency kit RUN_DIR --out KIT``) exports what a table times
   (:class:`~onceforall.predictors.latency_build.TablePlan`: each distinct layer, an empty model per
   input shape, the whole subnets its line is fitted to) as ONNX files, plus random subnets to
   validate the table with, a manifest, and ``measure.py``
   (:mod:`onceforall.predictors.onnx_timing`, which needs only numpy and onnxruntime).
2. On the device: ``python measure.py KIT`` times them exactly as the local ``onnxruntime``
   backend does (same session options, warm-up, interleaved rounds, medians) and writes
   ``measurements.json``.
3. :func:`import_measurements` (``onceforall latency import RUN_DIR measurements.json``) turns
   the times into the run's table for that device, and scores it on the validation subnets
   timed in the same rounds (MAPE, Spearman), as ``onceforall latency validate`` does locally.
   ``onceforall search RUN_DIR --device NAME`` then searches with it.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from onceforall.arch import ArchConfig
from onceforall.files import check_writable
from onceforall.predictors import onnx_timing
from onceforall.predictors.latency import LatencyTable
from onceforall.predictors.latency_build import plan_table
from onceforall.predictors.latency_validation import LatencyValidation, round_validation
from onceforall.predictors.timing import LATENCY_THREADS, onnx_bytes
from onceforall.static import LAYERS_VERSION
from onceforall.supernets import Supernet
from onceforall.supernets.base import LayerSpec

__all__ = ["import_measurements", "read_measurements", "write_kit"]

_README = """\
# onceforall latency kit

Times every distinct layer of a onceforall supernet's space ({layers} layers), {fit} whole
subnets (the table's fitted line) and {validate} random subnets (its validation) with ONNX
Runtime, on the device that will run the model. It needs Python 3.8+, numpy and onnxruntime;
no torch, no onceforall.

On the device, from this directory's parent:

    python {name}/measure.py {name} --name "my device"     # writes {name}/measurements.json

(`--threads N`, `--providers XnnpackExecutionProvider,CPUExecutionProvider`, `--help`.)
Keep the device otherwise idle while it runs. Then, where onceforall and the run are:

    onceforall latency import RUN_DIR {name}/measurements.json
    onceforall search RUN_DIR --latency-ms 5 --device "my device"

`python measure.py --model model.onnx --shape 1,C,R,R` times one exported model the same way.
Where Python cannot run (an Android or iOS app, a C++ harness with the device's own onnxruntime
build), time `manifest.json`'s models as the docstring at the top of `measure.py` describes and
write the JSON it names; `onceforall latency import RUN_DIR that.json --kit {name}` takes it.
"""


def write_kit(
    net: Supernet,
    out: str | Path,
    *,
    batch_size: int = 1,
    threads: int = LATENCY_THREADS,
    warmup: int = 10,
    repeats: int = 50,
    fit_subnets: int = 24,
    validate_subnets: int = 20,
    seed: int = 0,
    validate_seed: int = 1,
    progress: bool = False,
) -> Path:
    """Write a latency kit for ``net``'s space into the new directory ``out`` (see module doc).

    Args:
        net: the supernet (a run's), whose space the table covers.
        out: a directory that must not exist yet (or be empty).
        batch_size: input batch of every model.
        threads, warmup, repeats: the defaults ``measure.py`` times with (those of the run's
            own tables: one thread, 10 untimed calls, the median of 50 rounds).
        fit_subnets, seed: the subnets the table's line is fitted to (as
            :func:`~onceforall.predictors.latency_build.build_latency_table`).
        validate_subnets, validate_seed: random subnets timed in the same rounds, to score
            the table on the device (0 for none; the scores need at least 2).

    Returns:
        ``out``.

    Raises:
        FileExistsError: ``out`` holds files already.
        ValueError: bad sizes.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory; choose another --out")
    check_writable(out, "--out")
    if validate_subnets < 0 or threads < 1 or warmup < 0 or repeats < 1:
        raise ValueError(
            f"validate_subnets={validate_subnets} must be >= 0, threads={threads} and "
            f"repeats={repeats} >= 1, warmup={warmup} >= 0"
        )
    plan = plan_table(net, batch_size, fit_subnets, seed, validate_subnets, validate_seed)
    archs = iter([*plan.archs, *plan.checks])
    specs = iter(plan.specs)
    models: list[dict[str, Any]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "models").mkdir()
        items = plan.models()
        if progress:
            from tqdm.auto import tqdm

            items = tqdm(items, total=len(plan), desc="exporting", leave=False)
        with torch.random.fork_rng(devices=[]):  # layers get random weights, seeded
            torch.manual_seed(seed)
            for i, (kind, module, shape) in enumerate(items):
                entry: dict[str, Any] = {
                    "file": f"models/{i:04d}-{kind}.onnx",
                    "kind": kind,
                    "input_shape": list(shape),
                    "hot": True,  # as the onnxruntime backend times layers and subnets
                }
                if kind == "layer":
                    entry["spec"] = next(specs).to_dict()
                elif kind in ("fit", "validate"):
                    entry["arch"] = str(next(archs))
                (tmp / entry["file"]).write_bytes(onnx_bytes(module, shape))
                models.append(entry)
        manifest = {
            "format": onnx_timing.KIT_FORMAT,
            "version": onnx_timing.KIT_VERSION,
            "backend": "onnxruntime",
            "supernet": net.config,
            "layers_version": LAYERS_VERSION,
            "batch_size": batch_size,
            "threads": threads,
            "warmup": warmup,
            "repeats": repeats,
            "seed": seed,
            "validate_seed": validate_seed,
            "models": models,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest["kit_id"] = onnx_timing.kit_id(manifest)
        (tmp / onnx_timing.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.copyfile(onnx_timing.__file__, tmp / "measure.py")
        readme = _README.format(
            layers=len(plan.specs), fit=len(plan.archs), validate=len(plan.checks), name=out.name
        )
        (tmp / "README.md").write_text(readme)
        if out.exists():
            out.rmdir()  # empty: checked above
        tmp.rename(out)  # the kit appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_measurements(path: str | Path, kit: str | Path | None = None) -> dict[str, Any]:
    """Measurements of a kit's models (``measure.py``'s ``measurements.json``, given as the file
    or as the kit directory holding it; or another harness's: see
    :mod:`onceforall.predictors.onnx_timing`), with the kit's manifest under ``"manifest"``:
    theirs if they carry it, else ``kit``'s (default: the directory the file is in). Checked for
    format, version, the kit's identity and completeness.

    Raises:
        FileNotFoundError: no such file, or no manifest to go with it.
        ValueError: not measurements of this kit, or incomplete.
    """
    path = Path(path)
    if path.is_dir():  # the kit itself: its measure.py writes measurements.json into it
        if not (path / "measurements.json").is_file():
            raise FileNotFoundError(
                f"{path} is a directory without measurements.json: run `python {path}/measure.py "
                f"{path}` on the device first, then import {path}/measurements.json"
            )
        path = path / "measurements.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run `python KIT/measure.py KIT` on the device first"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); copy measurements.json over again") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a JSON {type(data).__name__}, not the measurements of a latency kit; "
            "copy the measurements.json the kit's measure.py wrote"
        )
    fmt, version = data.get("format"), data.get("version")
    if fmt != onnx_timing.MEASUREMENTS_FORMAT or version != onnx_timing.KIT_VERSION:
        raise ValueError(
            f"{path} is not the measurements of a onceforall latency kit of version "
            f"{onnx_timing.KIT_VERSION} (format {fmt!r}, version {version!r})"
        )
    manifest = data.get("manifest")
    if manifest is None:
        kit = Path(kit) if kit is not None else path.parent
        if not (kit / onnx_timing.MANIFEST).is_file():
            raise FileNotFoundError(
                f"{path} does not carry the kit's manifest and {kit} holds none: pass the kit "
                "directory (--kit KIT)"
            )
        manifest = onnx_timing.read_manifest(kit)
    elif manifest.get("kit_id") != onnx_timing.kit_id(manifest):
        raise ValueError(f"{path}: its copy of the manifest was altered; measure again")
    if data.get("kit_id") != manifest.get("kit_id"):
        raise ValueError(
            f"{path} measured kit {data.get('kit_id')!r}, not {manifest.get('kit_id')!r} (the "
            "manifest beside it); import it with the kit it came from"
        )
    ms = data.get("ms")
    models = manifest.get("models", [])
    if not isinstance(ms, list) or len(ms) != len(models):
        raise ValueError(f"{path}: {len(ms or [])} times for the kit's {len(models)} models")
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf for v in ms
    ):
        raise ValueError(f"{path}: times must be positive numbers of milliseconds")
    missing = [k for k in ("device", "threads", "warmup", "repeats") if k not in data]
    if missing or not isinstance(data["device"], dict) or not data["device"].get("name"):
        raise ValueError(f"{path} lacks {missing or ['device.name']}")
    for key, least in (("threads", 1), ("warmup", 0), ("repeats", 1)):
        value = data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{path}: {key}={value!r} must be a whole number >= {least}")
    return {**data, "manifest": manifest}


def import_measurements(
    net: Supernet,
    measurements: str | Path | dict[str, Any],
    *,
    device: str | None = None,
    kit: str | Path | None = None,
) -> tuple[LatencyTable, LatencyValidation | None]:
    """The latency table a kit's measurements make for ``net``, and its validation.

    Args:
        net: the supernet the kit was written for (its config must match the kit's).
        measurements: the ``measurements.json`` path, or what :func:`read_measurements`
            returns for it.
        device: the device's name in the table (default: the name the measurement recorded).
        kit: the kit directory, for measurements that do not carry its manifest (default: the
            directory the measurements are in).

    Returns:
        ``(table, validation)``: the table bound to ``net``, its ``metadata["device"]`` the
        device's name; the validation scores it on the kit's random subnets (``None`` without
        at least two).

    Raises:
        ValueError: the measurements belong to another supernet or onceforall layer version,
            or are incomplete.
    """
    data = measurements if isinstance(measurements, dict) else read_measurements(measurements, kit)
    manifest = data["manifest"]
    if manifest["supernet"] != net.config:
        raise ValueError(
            f"the kit was written for the supernet {manifest['supernet']}, not this run's "
            f"{net.config}; write a kit for this run (onceforall latency kit RUN_DIR)"
        )
    if manifest["layers_version"] != LAYERS_VERSION:
        raise ValueError(
            f"the kit timed onceforall's subnet layers of version {manifest['layers_version']}, "
            f"these are version {LAYERS_VERSION}; write a new kit and measure it again"
        )
    models = manifest["models"]
    plan = plan_table(
        net,
        manifest["batch_size"],
        sum(m["kind"] == "fit" for m in models),
        manifest["seed"],
        sum(m["kind"] == "validate" for m in models),
        manifest["validate_seed"],
    )
    specs = [LayerSpec.from_dict(m["spec"]) for m in models if m["kind"] == "layer"]
    archs = [ArchConfig.parse(m["arch"]) for m in models if m["kind"] in ("fit", "validate")]
    if (
        [m["kind"] for m in models] != plan.kinds()
        or list(plan.specs) != specs
        or [*plan.archs, *plan.checks] != archs
    ):
        raise ValueError(
            "the kit's models are not this supernet's table plan (another onceforall version "
            "wrote it?); write a new kit with this one"
        )
    dev = data["device"]
    metadata = {
        "backend": "onnxruntime",
        "layers_version": LAYERS_VERSION,
        "device": device or dev["name"],
        "cpu": dev.get("cpu"),
        "threads": data["threads"],
        "batch_size": manifest["batch_size"],
        "onnxruntime": dev.get("onnxruntime"),
        "python": dev.get("python"),
        "platform": dev.get("platform"),
        "providers": data.get("providers"),
        "loadavg": dev.get("loadavg"),
        "created": data.get("created"),
        "source": "latency kit",
        "clock": data.get("clock", "wall"),
        "warmup": data["warmup"],
        "repeats": data["repeats"],
    }
    table = plan.table([float(v) for v in data["ms"]], metadata)
    validation = round_validation(table)
    return table, validation
