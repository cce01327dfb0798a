"""Run directories: atomic files, checkpoints and loading a trained supernet.

No file is unpickled with pickle's full powers: weights are safetensors, training state is JSON
plus a tensor file read with ``torch.load(weights_only=True)`` (a restricted unpickler that only
rebuilds tensors and plain containers). Every file is written to a temporary name, fsynced and
renamed, and ``checkpoint.json`` (which names the files of the current checkpoint) is replaced
last, so a process killed at any moment leaves either the old or the new checkpoint, whole.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from onceforall.config import TrainConfig, config_to_dict, load_config, save_config
from onceforall.files import atomic_write, check_writable
from onceforall.supernets import Supernet, create_supernet

__all__ = [
    "append_metrics",
    "atomic_write",
    "check_run_dir",
    "diff_keys",
    "is_run_dir",
    "load_state",
    "load_supernet",
    "load_weights",
    "model_record",
    "prepare_run_dir",
    "save_checkpoint",
    "save_weights",
    "truncate_metrics",
]

STATE_FILE = "checkpoint.json"
SUPERNET_FILE = "supernet.safetensors"
TEACHER_FILE = "teacher.safetensors"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"


def save_weights(module: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Atomically write a module's state dict (parameters and buffers) as safetensors."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, save(tensors, metadata=meta))


def load_weights(module: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load safetensors weights into ``module`` (strict: every key must match).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not readable safetensors (damaged, truncated) or holds weights
            of another network (another family, space or number of classes), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    device = next(module.parameters()).device
    try:
        state = load_file(str(path), device=str(device))
    except SafetensorError as exc:
        raise _unreadable(path, exc) from exc
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(
            f"{path} holds weights of another network than its config describes ("
            + " ".join(line.strip() for line in first[:3])
            + "): was the run's config.yaml edited, or the file replaced? Use the files of one "
            "run together"
        ) from exc
    return module


def _unreadable(path: Path, exc: Exception) -> ValueError:
    return ValueError(
        f"{path} is not a readable safetensors file ({exc}): it is damaged or truncated; "
        "restore it, or produce it again (a run: `onceforall train ... --force`)"
    )


def save_checkpoint(
    run_dir: Path, state: dict[str, Any], net: torch.nn.Module, extra: dict[str, Any]
) -> None:
    """Write a checkpoint: supernet weights, ``extra`` tensors (optimizer, RNG) and the JSON state.

    ``state`` is updated with the names of the new files. Files of earlier checkpoints are removed
    only after the new ``checkpoint.json`` is in place.
    """
    tag = f"{state['global_step']:08d}"
    weights, tensors = f"ckpt-{tag}.safetensors", f"ckpt-{tag}.pt"
    save_weights(net, run_dir / weights)
    buf = io.BytesIO()
    torch.save(extra, buf)
    atomic_write(run_dir / tensors, buf.getvalue())
    state = {**state, "weights": weights, "tensors": tensors}
    atomic_write(run_dir / STATE_FILE, json.dumps(state, indent=1).encode())
    # Every other checkpoint file goes: the previous checkpoint's, and any a process killed
    # between writing its files and its checkpoint.json left behind (no JSON names them).
    for path in run_dir.glob("ckpt-*"):
        if path.name not in (weights, tensors):
            path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_state(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The last checkpoint's JSON state and its tensors (``weights_only`` load), or ``None``."""
    path = run_dir / STATE_FILE
    try:
        state = _read_json(path)
        if state is None:
            return None
        path = run_dir / state["tensors"]
        extra = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:  # not the file's fault (permissions, the disk, the network)
        raise OSError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    except (
        json.JSONDecodeError,
        KeyError,
        TypeError,
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
    ) as exc:
        # torch.load reports a damaged file as an unpickling error whose text suggests
        # weights_only=False: never do that with a file from disk, so its text is not passed on.
        raise ValueError(
            f"the last checkpoint of {run_dir} cannot be read: {path} is damaged "
            f"({type(exc).__name__}); restore it, or start the run over with --force"
        ) from None
    return state, extra


def load_supernet(run_dir: str | Path, *, device: str | torch.device = "cpu") -> Supernet:
    """The trained supernet of a finished run, ready to use (``space``, ``set_active``,
    ``extract``). Batch-norm statistics are the training mix: recalibrate a subnet before using
    it (``onceforall.recalibrate_bn``, or ``onceforall search``/``export`` which do it).

    Raises:
        FileNotFoundError: ``run_dir`` has no finished supernet, saying how to get one.
    """
    run_dir = Path(run_dir)
    weights = run_dir / SUPERNET_FILE
    if not weights.is_file():
        hint = (
            "the run is not finished: continue it with `onceforall train CONFIG --out "
            f"{run_dir} --resume`"
            if (run_dir / STATE_FILE).is_file()
            else "train one with `onceforall train CONFIG --out RUN_DIR`"
        )
        raise FileNotFoundError(f"{weights} does not exist; {hint}")
    config = load_config(run_dir / CONFIG_FILE)
    meta = _metadata(weights)
    _check_model_section(run_dir, config, meta)
    net = create_supernet(
        config.model.family,
        num_classes=int(meta["num_classes"]),
        in_channels=int(meta["in_channels"]),
        **config.model.family_kwargs(),
    ).to(device)
    return load_weights(net, weights).eval()


def data_record(data: Any) -> dict[str, Any]:
    """What a run's ``supernet.safetensors`` records of the data it was trained on (metadata key
    ``data``; ``data`` a :class:`~onceforall.data.DataBundle`): the classes in label order and
    the sizes of the training and holdout splits. The test split's size is not recorded: it
    plays no part in training, and more test images may be added later."""
    return {
        "class_names": list(data.class_names),
        "in_channels": data.in_channels,
        "train_images": len(data.train),
        "holdout_images": len(data.holdout),
    }


def check_data(run_dir: str | Path, data: Any) -> None:
    """Refuse data that is not what the run in ``run_dir`` trained on: a class folder added or
    renamed moves every label (the exported card would name the outputs wrongly), and an image
    added or removed redraws the holdout from images training saw. Runs from before the record
    are not checked.

    Raises:
        ValueError: naming what changed and the fix.
    """
    run_dir = Path(run_dir)
    trained = _metadata(run_dir / SUPERNET_FILE).get("data")
    if trained is None:
        return
    now = data_record(data)
    changed = [k for k in trained if trained[k] != now.get(k)]
    if not changed:
        return
    shown = []
    for k in changed:
        if k == "class_names":
            old, new = trained[k], now[k]
            gone, added = [c for c in old if c not in new], [c for c in new if c not in old]
            parts = [f"gone: {gone}" if gone else "", f"new: {added}" if added else ""]
            shown.append("classes " + (", ".join(p for p in parts if p) or "reordered"))
        else:
            shown.append(f"{k.replace('_', ' ')} {trained[k]} -> {now[k]}")
    raise ValueError(
        f"the data that {run_dir / CONFIG_FILE} points to is not what this run trained on "
        f"({'; '.join(shown)}): the labels, holdout and test scores would not be the run's. "
        "Restore the data as it was (or set data.root in that config.yaml to a copy of it), or "
        "train a new run on the new data"
    )


def model_record(config: TrainConfig) -> dict[str, Any]:
    """The config's ``model`` section as JSON values: what a run's ``supernet.safetensors``
    records of the network it holds (its metadata key ``model``)."""
    return json.loads(json.dumps(config_to_dict(config)["model"]))


def _check_model_section(run_dir: Path, config: TrainConfig, meta: dict[str, Any]) -> None:
    """Refuse a ``config.yaml`` whose ``model`` section is not the one the weights were trained
    with: an edited list of resolutions or kernel sizes would load (the weights' shapes need not
    change) and then search, evaluate and export subnets that never trained. Other sections
    (``data.root``, when the dataset moved) may change. Weights from before the record are not
    checked."""
    trained = meta.get("model")
    if trained is None:
        return
    now = model_record(config)
    changed = sorted(k for k in trained.keys() | now.keys() if trained.get(k) != now.get(k))
    if changed:
        what = ", ".join(f"model.{k}: {trained.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(
            f"{run_dir / CONFIG_FILE} was edited after training ({what}); its weights are those "
            f"of the trained network: restore the config's model section to what "
            f"{SUPERNET_FILE} was trained with"
        )


def _metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except SafetensorError as exc:
        raise _unreadable(path, exc) from exc


# ----------------------------------------------------------------------------- run directories


_RUN_HEADER = "# resolved config of this run; `onceforall train` wrote it\n"
# What `onceforall import-reference` writes first into its config.yaml: a run made by import.
IMPORT_HEADER = "# imported by `onceforall import-reference`"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run that onceforall made: the checkpoint state ``train`` keeps,
    or the config ``train`` or ``import-reference`` writes first, recognised by its header line
    (a directory that merely holds some ``config.yaml`` or ``checkpoint.json`` is not a run)."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        if isinstance(state, dict) and {"weights", "tensors", "global_step"} <= state.keys():
            return True
    except (OSError, ValueError):  # missing, unreadable or not JSON: look at the config
        pass
    try:
        with open(path / CONFIG_FILE, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first == _RUN_HEADER or first.startswith(IMPORT_HEADER)


def check_run_dir(run_dir: Path, config: TrainConfig, resume: bool, force: bool) -> bool:
    """The checks of :func:`prepare_run_dir`, which change nothing (every DDP rank makes them,
    so that all raise alike); returns whether ``run_dir`` holds a run to continue or replace."""
    if resume and force:
        raise ValueError(
            "--resume continues a run and --force deletes it to start over: pass one of them"
        )
    check_writable(run_dir, "--out")
    has_run = run_dir.is_dir() and any(run_dir.iterdir())
    if has_run and (resume or force) and not is_run_dir(run_dir):
        flag, fix = (
            ("--resume", "give the --out of the run to continue")
            if resume
            else ("--force", "refusing to delete it, choose another --out")
        )
        raise FileExistsError(
            f"{flag}: {run_dir} is not empty and is not a onceforall run (no {STATE_FILE}, no "
            f"{CONFIG_FILE} written by `onceforall train`); {fix}"
        )
    if has_run and not (resume or force):
        raise FileExistsError(
            f"run directory {run_dir} already exists and is not empty; pass --resume to continue "
            "it or --force to delete it and start over"
        )
    if has_run and resume:
        saved = load_config(run_dir / CONFIG_FILE)
        diff = sorted(diff_keys(config_to_dict(saved), config_to_dict(config)))
        if diff:
            raise ValueError(
                f"--resume: the config differs from the one {run_dir} was started with "
                f"(keys: {', '.join(diff)}); resume with the same config and overrides, or "
                "start over with --force"
            )
    return has_run


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool, force: bool) -> None:
    """Create or check the run directory; never overwrites without ``force`` (see
    :func:`check_run_dir`, which a DDP run's other ranks call alone)."""
    has_run = check_run_dir(run_dir, config, resume, force)
    if has_run and resume:
        return
    if resume:  # a job script that always resumes (a requeued or restarted job) starts this way
        print(
            f"note: --resume: {run_dir} holds no run yet, so a new one starts there (if you meant "
            "to continue another run, stop and give its --out)",
            file=sys.stderr,
        )
    if has_run and force:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / CONFIG_FILE, _RUN_HEADER)


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two nested dicts/lists differ (``schedule.phases.1.lr``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            k
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for k in diff_keys(x, y, f"{prefix}{i}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def append_metrics(run_dir: Path, record: dict, writer: Any = None) -> None:
    """Append one record to ``RUN_DIR/metrics.jsonl`` (and to a TensorBoard writer, if any)."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        tag = record.get("kind", "train")
        for k, v in record.items():
            if isinstance(v, int | float) and k not in ("phase_index", "epoch", "global_step"):
                writer.add_scalar(f"{tag}/{k}", v, record.get("global_step", 0))


def truncate_metrics(run_dir: Path, global_step: int) -> None:
    """Drop metric records written after the checkpoint a run resumes from (``global_step`` 0:
    a run killed before its first checkpoint, all of them): those steps run again, and the log
    must read as one uninterrupted run."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    whole = lines[:-1] if lines and not lines[-1].endswith("\n") else lines  # torn by the kill
    keep = [line for line in whole if json.loads(line).get("global_step", 0) <= global_step]
    if len(keep) != len(lines):
        atomic_write(path, "".join(keep).encode())
