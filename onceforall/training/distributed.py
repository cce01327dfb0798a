"""The processes of a training run: one, or one per rank under ``torchrun`` (DDP).

Everything here decides alike on every rank without extra communication, or says where it
communicates: the device and process group of each rank, per-rank random streams and their
checkpointing, when a mid-run checkpoint is due, and each rank's share of an epoch's batches.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from onceforall.config import TrainConfig
from onceforall.data import DataBundle
from onceforall.training.schedule import step_generator, step_seed

__all__ = [
    "EpochBatches",
    "ProcessEnv",
    "barrier",
    "checkpoint_due",
    "random_states",
    "restore_random_states",
    "seed_ranks",
    "setup_env",
]


@dataclass
class ProcessEnv:
    """This process's rank, the number of ranks (1 without torchrun) and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_env(config: TrainConfig) -> ProcessEnv:
    """Threads, device and, under torchrun, the process group (NCCL on CUDA, gloo on CPU).

    Raises:
        ValueError: a device this process cannot use (naming the setting to change).
    """
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and want.startswith("cuda:") and torch.cuda.device_count() != 1:
        # Every process would take that one GPU, and NCCL refuses ranks sharing a device.
        # (A process that sees one GPU alone, CUDA_VISIBLE_DEVICES set per rank, may name it.)
        raise ValueError(
            f"device={config.device!r} names one GPU, but torchrun started {world} processes "
            "that see the same GPUs: use device=cuda (each process takes the GPU of its "
            "LOCAL_RANK), and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={config.device!r} but CUDA is not available; use device=cpu")
    if want == "cuda":  # the GPU of this rank, or the one GPU this process sees
        rank_gpu = int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.device_count() > 1 else 0
        want = f"cuda:{rank_gpu}"
    device = torch.device(want)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group, which binds to this device
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ProcessEnv(rank, world, device)


def barrier(env: ProcessEnv) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if env.world > 1:
        dist.barrier()


def seed_ranks(env: ProcessEnv, seed: int) -> None:
    """Give every DDP rank but rank 0 its own dropout stream, derived from ``seed`` and the rank
    (timm's convention), once the weights are initialised alike. Ranks seeded alike would drop
    the same units of their different images. Rank 0, and a single process, keep the stream
    that initialised the weights."""
    if env.rank:
        torch.manual_seed((seed + env.rank) % 2**64)


def random_states(env: ProcessEnv) -> dict[str, torch.Tensor]:
    """The random states a checkpoint keeps: every rank's (gathered to all ranks under DDP,
    ``rng`` rank 0's), so a resume gives each rank its own stream back."""
    states = {"rng": torch.get_rng_state()}
    if env.device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(env.device)
    if env.world == 1:
        return states
    out = {}
    for key, state in states.items():
        mine = state.to(env.device)  # NCCL gathers device tensors
        every = [torch.empty_like(mine) for _ in range(env.world)]
        dist.all_gather(every, mine)
        out[key] = every[0].cpu()
        out[f"{key}_ranks"] = torch.stack(every).cpu()
    return out


def restore_random_states(env: ProcessEnv, extra: dict[str, Any]) -> None:
    """Each rank's own state from a checkpoint of :func:`random_states`. A checkpoint of
    another number of ranks (or from before per-rank states) gives rank 0's state to rank 0 and
    fresh rank streams to the others: the run continues, not bit-identically."""
    for key, set_state in (
        ("rng", torch.set_rng_state),
        ("cuda_rng", lambda s: torch.cuda.set_rng_state(s, env.device)),
    ):
        if key not in extra or (key == "cuda_rng" and env.device.type != "cuda"):
            continue
        ranks = extra.get(f"{key}_ranks")
        if ranks is not None and len(ranks) == env.world:
            set_state(ranks[env.rank].clone())
        elif env.rank == 0:
            set_state(extra[key])


def checkpoint_due(env: ProcessEnv, config: TrainConfig, gstep: int, last_ckpt: float) -> bool:
    """Whether a mid-epoch checkpoint is due after step ``gstep``: every step when
    ``checkpoint_minutes`` is 0, else once that many minutes have passed since the last one.

    Every DDP rank must decide alike, since a checkpoint ends in a barrier: a rank at the barrier
    while another runs the next step's collectives would hang or mix them. Each rank's own clock
    can disagree, so under DDP the clocks are read only every ``log_every`` steps, and the ranks
    checkpoint when any of them is due (one tiny all-reduce per ``log_every`` steps).
    """
    minutes = config.checkpoint_minutes
    if minutes <= 0:
        return True
    due = time.monotonic() - last_ckpt > 60 * minutes
    if env.world == 1:
        return due
    if gstep % config.log_every:
        return False
    flag = torch.tensor([float(due)], device=env.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class EpochBatches:
    """One epoch of training batches for one rank: order from ``(seed, epoch)``, resumable at
    any step without reading the skipped batches.

    Nothing here draws from torch's global RNG (a resumed run would draw at another point than
    the uninterrupted one): the DataLoader gets its own generator, and a dataset that augments
    per image (``KeyedSubset``) gets each image's key from ``(seed, epoch, image)``.
    """

    def __init__(self, data: DataBundle, config: TrainConfig, env: ProcessEnv, epoch: int) -> None:
        from torch.utils.data import DistributedSampler

        self.per_rank = config.batch_size // env.world
        sampler = DistributedSampler(
            data.train, env.world, env.rank, shuffle=True, seed=config.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        self.indices = list(sampler)
        self.dataset = data.train
        self.num_workers = config.data.num_workers
        self.seed, self.epoch = config.seed, epoch
        # Page-locked batches let the copies to a GPU run asynchronously (non_blocking).
        self.pin_memory = env.device.type == "cuda"

    def __len__(self) -> int:
        return len(self.indices) // self.per_rank

    def iterate(self, start: int, stop: int | None = None):
        """Batches ``start`` (inclusive) to ``stop`` (exclusive; default: the epoch's end)."""
        stop = len(self) if stop is None else min(stop, len(self))
        chunks = [
            self.indices[i * self.per_rank : (i + 1) * self.per_rank] for i in range(start, stop)
        ]
        fast = getattr(self.dataset, "batch", None)
        if fast is not None and self.num_workers == 0:
            for c in chunks:
                x, y = fast(c)
                yield (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)
            return
        if getattr(self.dataset, "keyed", False):
            chunks = [
                [(i, step_seed(self.seed, 2, self.epoch, i)) for i in chunk] for chunk in chunks
            ]
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=chunks,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=step_generator(self.seed, 3, self.epoch, start),
        )
        yield from loader
