"""The accuracy dataset: measured holdout accuracies of sampled subnets, cached in the run dir.

N archs are sampled from a supernet's space (largest and smallest first); each is extracted,
BN-recalibrated on the first ``calibration_images`` holdout images and evaluated on the first
``eval_images`` holdout images (never the test split). Records are appended to
``accuracy_dataset.jsonl`` in the run directory as each subnet finishes, one JSON line per arch
with the settings that produced it, so an interrupted build resumes and a larger N evaluates only
the new archs. Rank ``r`` of ``W`` evaluates every ``W``-th arch into its own shard file
(``accuracy_dataset.rank{r}-of-{W}.jsonl``); reading merges the shards, and a complete build
consolidates them into the one file.

A file holds records of one setting only: building with other settings (image counts, batch size,
sample seed, holdout data, supernet weights) raises an error naming what differs, rather than
silently mixing measurements of two procedures. Pass another ``path`` to keep both.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.data import DataBundle, resize_batch
from onceforall.supernets import Supernet
from onceforall.training.bn import (
    batches,
    evaluation_format,
    evaluation_subnet,
    recalibrate_bn,
)
from onceforall.training.checkpoint import atomic_write

__all__ = [
    "DATASET_FILE",
    "AccuracyDataset",
    "SubnetEvaluator",
    "build_accuracy_dataset",
    "sample_archs",
]

DATASET_FILE = "accuracy_dataset.jsonl"
_CACHE_BYTES = 1 << 30  # pre-resized holdout tensors above this size are streamed instead


def sample_archs(space: SearchSpace, n: int, seed: int = 0) -> list[ArchConfig]:
    """``n`` distinct archs: largest, smallest, then uniform samples from a seeded generator.

    The list for ``n`` is a prefix of the list for any larger ``n``, which is what lets a dataset
    grow by evaluating only the new archs.

    Raises:
        ValueError: if ``n`` is not positive or the space has fewer than ``n`` archs.
    """
    if n <= 0 or n > space.size:
        raise ValueError(f"n={n} must be in [1, {space.size}] (the size of the space)")
    out = list(dict.fromkeys([space.largest(), space.smallest()]))
    seen, g = set(out), torch.Generator().manual_seed(seed)
    for _ in range(50 * n + 1000):  # bounded: a nearly exhausted tiny space must not hang
        if len(out) >= n:
            return out[:n]
        arch = space.sample(g)
        if arch not in seen:
            seen.add(arch)
            out.append(arch)
    if len(out) >= n:
        return out[:n]
    raise ValueError(f"could not draw {n} distinct archs from a space of {space.size}; lower n")


@dataclass
class AccuracyDataset:
    """Measured subnets: ``archs[i]`` has holdout top-1 ``accuracies[i]`` (percent).

    Attributes:
        archs: in sample order (only those measured so far if the build was partial).
        accuracies: ``(len(archs),)`` float64.
        settings: what produced the measurements (see the module docstring).
        requested: how many archs the build asked for; ``complete`` when all are present.
        evaluated: how many were evaluated by this call (the rest came from the cache).
        seconds: wall time spent evaluating them.
        eval_seconds: ``(len(archs),)`` wall time each subnet took when it was measured.
    """

    archs: list[ArchConfig]
    accuracies: np.ndarray
    settings: dict[str, Any]
    requested: int
    evaluated: int = 0
    seconds: float = 0.0
    eval_seconds: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def complete(self) -> bool:
        return len(self.archs) >= self.requested

    @property
    def seconds_per_subnet(self) -> float:
        return self.seconds / self.evaluated if self.evaluated else float("nan")


# ----------------------------------------------------------------------------- evaluation


class SubnetEvaluator:
    """Evaluates archs as :func:`~onceforall.training.bn.evaluate_subnet` does, with the same
    batches, but resizes the calibration and evaluation images once per resolution (unless they
    would take more than 1 GiB: then they stream from the dataset for every subnet)."""

    def __init__(
        self, net: Supernet, data: DataBundle, n_cal: int, n_eval: int, batch_size: int
    ) -> None:
        self.net, self.holdout, self.bs = net, data.holdout, batch_size
        self.n_cal, self.n_eval = n_cal, n_eval
        self.device = next(net.parameters()).device
        first_x, first_y = next(iter(batches(self.holdout, batch_size, 1)))
        pixels = sum(r * r for r in net.space.resolutions) * first_x.shape[1]
        self.stream = 4 * pixels * (n_cal + n_eval) > _CACHE_BYTES
        self._cache: dict[int, tuple[list[torch.Tensor], list[tuple[torch.Tensor, ...]]]] = {}
        h = hashlib.sha256(str(len(self.holdout)).encode())  # names the holdout split
        for t in (first_x, first_y):
            h.update(t.contiguous().numpy().tobytes())
        self.fingerprint = h.hexdigest()[:16]

    def _prepare(self, x: torch.Tensor, res: int) -> torch.Tensor:
        # What bn._prepare does per batch: resize, then the evaluation format.
        fmt = evaluation_format(self.device)
        return resize_batch(x.to(self.device), res).contiguous(memory_format=fmt)

    def _inputs(
        self, res: int
    ) -> tuple[Iterable[torch.Tensor], Iterable[tuple[torch.Tensor, ...]]]:
        cal = (self._prepare(x, res) for x, _ in batches(self.holdout, self.bs, self.n_cal))
        ev = ((self._prepare(x, res), y) for x, y in batches(self.holdout, self.bs, self.n_eval))
        if self.stream:
            return cal, ev
        if res not in self._cache:
            self._cache[res] = (list(cal), list(ev))
        return self._cache[res]

    def correct(self, arch: ArchConfig) -> torch.Tensor:
        """Whether the BN-recalibrated subnet classifies each evaluation image right: a
        ``(n_eval,)`` bool tensor in holdout order (per-image outcomes, for noise studies)."""
        # Extraction measured as fast as recalibrating the supernet itself through set_active
        # (~20 ms per subnet, <2% of an evaluation) and it leaves the supernet's buffers alone.
        sub = evaluation_subnet(self.net, arch)
        cal, ev = self._inputs(arch.resolution)
        recalibrate_bn(sub, arch, cal)  # its own resize is a no-op on these
        with torch.inference_mode():
            return torch.cat([sub(x).argmax(1).cpu() == y for x, y in ev])

    def __call__(self, arch: ArchConfig) -> float:
        """Top-1 accuracy (%) of the BN-recalibrated subnet on the evaluation images."""
        correct = self.correct(arch)
        return 100.0 * int(correct.sum()) / len(correct)


def _weights_fingerprint(net: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the cache files


def _dataset_path(run_dir_or_path: str | Path) -> Path:
    p = Path(run_dir_or_path)
    return p if p.suffix == ".jsonl" else p / DATASET_FILE


def _shard_path(path: Path, rank: int, world: int) -> Path:
    return path if world == 1 else path.with_name(f"{path.stem}.rank{rank}-of-{world}.jsonl")


def _shards(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.rank*-of-*.jsonl"))


def _read_records(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records by arch string from ``path`` and all its shards, checking every record's settings.

    A last line without its newline is a record cut off by an interrupted write: it is ignored.
    """
    out: dict[str, dict[str, Any]] = {}
    for file in [path, *_shards(path)]:
        if not file.is_file():
            continue
        text = file.read_text()
        lines = text.split("\n")
        for i, line in enumerate(lines[:-1] if not text.endswith("\n") else lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                arch, made_with = rec["arch"], rec["settings"]
                rec["accuracy"] = float(rec["accuracy"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{file}:{i} is not an accuracy record ({exc}); delete it"
                ) from exc
            if made_with != settings:
                diff = {
                    k: (made_with.get(k), v) for k, v in settings.items() if made_with.get(k) != v
                }
                shown = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in diff.items())
                flags = " ".join(
                    f"{_SEARCH_FLAGS[k]} {old}"
                    for k, (old, _) in diff.items()
                    if k in _SEARCH_FLAGS and old is not None
                )
                on_cli = f" (onceforall search: {flags})" if flags else ""
                raise ValueError(
                    f"{file} holds accuracies measured with other settings: {shown}. Pass the same "
                    f"settings to reuse them{on_cli}, or delete {file.name} (and its .rank* "
                    "shards) to start over; from Python, another path= keeps both."
                )
            out.setdefault(arch, rec)
    return out


# The settings `onceforall search` sets from its own options, by option.
_SEARCH_FLAGS = {"calibration_images": "--calibration-images", "eval_images": "--eval-images"}


def _append(file: Path, records: Iterable[dict[str, Any]]) -> None:
    if file.is_file() and (text := file.read_text()) and not text.endswith("\n"):
        atomic_write(file, text[: text.rfind("\n") + 1].encode())  # drop a cut-off last record
    with open(file, "a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())  # the record survives a kill; cheap next to an evaluation


def _dist() -> tuple[int, int, bool]:
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size(), True
    return 0, 1, False


def build_accuracy_dataset(
    net: Supernet,
    data: DataBundle,
    run_dir_or_path: str | Path,
    n: int,
    *,
    seed: int = 0,
    calibration_images: int = 2000,
    eval_images: int | None = None,
    batch_size: int = 250,
    rank: int | None = None,
    world: int | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> AccuracyDataset:
    """Measure (or load from the cache) the holdout accuracy of ``sample_archs(space, n, seed)``.

    Args:
        net: the trained supernet (not modified: each subnet is extracted).
        data: its data; only ``data.holdout`` is used.
        run_dir_or_path: run directory (``accuracy_dataset.jsonl`` in it) or a ``.jsonl`` path.
        n: number of archs.
        seed: sample seed.
        calibration_images: BN statistics come from the first this many holdout images.
        eval_images: accuracy on the first this many holdout images (``None``: all of them).
            Measurement noise is what limits a predictor's rank correlation: on the quick
            Fashion-MNIST run (subnet accuracies spread 0.7 pp), evaluating on 5000 images
            instead of 2000 cut the per-subnet noise from 0.35 to 0.2 pp, and calibrating on 2000
            images instead of 500 cut its share from ~0.17 to ~0.09 pp.
        batch_size: calibration and evaluation batch (calibration batches shape the statistics).
            Cache-sized batches are faster on CPU than large ones (250 vs 1000: ~15%).
        rank, world: this process evaluates every ``world``-th missing arch from ``rank``
            (default: the torch.distributed process group, else 0 of 1). Under a process group
            every rank waits for the others and returns the whole dataset.
        limit: evaluate at most this many archs in this call (the rest stay missing).
        progress: show a progress bar.

    Returns:
        An :class:`AccuracyDataset`; it lacks archs only when ``limit`` stopped it or simulated
        ranks (no process group) have not all run.

    Raises:
        ValueError: bad arguments, or the cache holds records of other settings.
    """
    d_rank, d_world, distributed = _dist()
    rank, world = d_rank if rank is None else rank, d_world if world is None else world
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} must be in [0, world={world})")
    if calibration_images <= 0 or batch_size <= 0 or (eval_images is not None and eval_images <= 0):
        raise ValueError("calibration_images, eval_images and batch_size must be positive")
    if len(data.holdout) == 0:
        raise ValueError("data.holdout is empty: set data.holdout_size > 0 in the run's config")
    n_cal = min(calibration_images, len(data.holdout))
    n_eval = len(data.holdout) if eval_images is None else min(eval_images, len(data.holdout))
    evaluator = SubnetEvaluator(net, data, n_cal, n_eval, batch_size)
    settings = {
        "split": "holdout",
        "calibration_images": n_cal,
        "eval_images": n_eval,
        "batch_size": batch_size,
        "seed": seed,
        "holdout": evaluator.fingerprint,
        "supernet": _weights_fingerprint(net),
    }
    path = _dataset_path(run_dir_or_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    archs = sample_archs(net.space, n, seed)
    done = _read_records(path, settings)
    todo = [a for i, a in enumerate(archs) if i % world == rank and str(a) not in done]
    todo = todo[:limit] if limit is not None else todo

    def measure(arch: ArchConfig) -> dict[str, Any]:
        t = time.perf_counter()
        acc = evaluator(arch)
        seconds = round(time.perf_counter() - t, 4)
        return {"arch": str(arch), "accuracy": acc, "settings": settings, "seconds": seconds}

    start = time.perf_counter()
    if todo:  # nothing opened for writing otherwise: a complete dataset is read-only to use
        bar = tqdm(todo, desc=f"accuracy dataset (rank {rank})", disable=not progress)
        _append(_shard_path(path, rank, world), (measure(a) for a in bar))
    seconds = time.perf_counter() - start
    if distributed and world > 1:
        torch.distributed.barrier()  # every shard is written
    done = _read_records(path, settings)
    if distributed and world > 1:
        torch.distributed.barrier()  # everyone has read before rank 0 consolidates
    have = [a for a in archs if str(a) in done]
    if len(have) == len(archs) and rank == 0 and (world == 1 or distributed) and _shards(path):
        # Consolidate: one file, shards removed (the file first, so a kill loses nothing).
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in done.values()).encode())
        for shard in _shards(path):
            shard.unlink()
    if distributed and world > 1:
        torch.distributed.barrier()  # no rank starts another build on half-consolidated files
    accs = np.array([done[str(a)]["accuracy"] for a in have], dtype=np.float64)
    timings = np.array([done[str(a)].get("seconds", np.nan) for a in have], dtype=np.float64)
    return AccuracyDataset(have, accs, settings, n, len(todo), seconds, timings)
