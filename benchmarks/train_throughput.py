"""Training throughput: ``onceforall train`` at one subnet vs that subnet as a static network in an
ordinary PyTorch loop.

    .venv/bin/python -m benchmarks.train_throughput [--config configs/fashion_mnist_quick.yaml]
        [--steps 60] [--log-every 10] [--rounds 3] [--threads N] [--archs largest,median,smallest]
        [key=value ...]

For the largest, median (every choice at its middle value) and smallest subnet of the config's
space, each round runs:

- **trainer**: ``onceforall.training.train`` on the config, its schedule replaced by one phase
  whose space holds that subnet alone (so every step trains it: one sampled subnet per step, no
  distillation), stopped after ``--steps`` steps. Its images/s are the ones it logs every
  ``--log-every`` steps (``metrics.jsonl``): everything a step does (batches from the dataset,
  resize to the subnet's resolution, the supernet's sliced weights, loss, backward, optimizer
  step, learning-rate schedule, logging);
- **static**: the same subnet extracted (``Supernet.extract``: standard ``torch.nn`` layers) and
  trained in a plain loop: batches from the same dataset, resized alike, label-smoothed cross
  entropy, the same SGD settings, the same memory format and threads, timed over windows of the
  same number of steps;
- **static+dw**: the same loop with the depthwise weight gradient the supernet trains with
  (``onceforall.elastic.depthwise.fast_depthwise_grad``; PyTorch's own is 2-3 times slower on
  CPU for kernels wider than 3). Against this one the ratio prices the trainer's machinery alone.

The sides take turns going first. Each run's first window (warm-up) is dropped; a side's
images/s is the median of its remaining windows over all rounds; ratio = trainer / static.
Target (issue: training throughput per sampled-subnet step against a plain static network of
the same arch): >= 0.9.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.elastic_overhead import timed_archs
from onceforall.arch import ArchConfig
from onceforall.config import PhaseConfig, TrainConfig, load_config
from onceforall.data import DataBundle, load_data, resize_batch
from onceforall.elastic.depthwise import fast_depthwise_grad
from onceforall.supernets import create_supernet
from onceforall.training import TrainInterrupted, train
from onceforall.training.optim import make_optimizer, weight_decay_groups

REPO = Path(__file__).resolve().parents[1]
SIDES = ["trainer", "static", "static+dw"]


def one_arch_config(config: TrainConfig, arch: ArchConfig, log_every: int) -> TrainConfig:
    """``config`` with one phase that trains ``arch`` alone, without distillation. ``arch`` must be
    uniform (one value per dimension, as the largest, median and smallest are): a phase narrows
    each dimension to a set of choices, not per block."""
    choices = {
        "kernel_sizes": {k for ks in arch.kernel_sizes for k in ks},
        "expand_ratios": {e for es in arch.expand_ratios for e in es},
        "depths": set(arch.depths),
        "resolutions": {arch.resolution},
        "width_mults": set(arch.width_mults),
        "stem_depths": set() if arch.stem_depth is None else {arch.stem_depth},
    }
    if any(len(values) > 1 for values in choices.values()):
        raise ValueError(f"{arch} is not uniform: a phase's space cannot hold it alone")
    phase = PhaseConfig(
        name="throughput",
        epochs=1_000_000,  # never reached: the run is stopped after its steps
        lr=config.schedule.phases[0].lr,
        distill=False,
        **{dim: sorted(values) for dim, values in choices.items() if values},
    )
    schedule = replace(config.schedule, kind="progressive", phases=[phase])
    return replace(config, schedule=schedule, log_every=log_every, checkpoint_minutes=1e9)


def trainer_windows(config: TrainConfig, steps: int, work: Path) -> list[float]:
    """Images/s of each logged window of a trainer run stopped after ``steps`` steps, the first
    (warm-up) window dropped."""
    run_dir = work / f"run-{time.monotonic_ns()}"
    with contextlib.suppress(TrainInterrupted):  # how a run stops after its steps
        train(config, run_dir, progress=False, stop_after_steps=steps)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if r.get("kind") == "train"]
    if len(rates) < 2:
        raise ValueError(f"{steps} steps give {len(rates)} logged windows; raise --steps")
    return rates[1:]


def static_windows(
    config: TrainConfig, data: DataBundle, arch: ArchConfig, steps: int, seed: int, fast_dw: bool
) -> list[float]:
    """Images/s of each window of ``config.log_every`` steps of the extracted subnet trained in
    a plain loop (with the fast depthwise weight gradient if ``fast_dw``), the first (warm-up)
    window dropped."""
    torch.manual_seed(seed)
    net = create_supernet(
        config.model.family,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        **config.model.family_kwargs(),
    )
    model = net.extract(arch).train()
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    o = config.optimizer
    optimizer = make_optimizer(
        weight_decay_groups(model.named_parameters(), o.weight_decay),
        o.name,
        config.schedule.phases[0].lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
    )
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    batch = config.batch_size
    if steps * batch > len(order):
        raise ValueError(f"{steps} steps of {batch} need more than {len(data.train)} images")
    order = order[: steps * batch]
    with fast_depthwise_grad(model) if fast_dw else contextlib.nullcontext():
        rates = _plain_loop(model, optimizer, config, data, order, arch.resolution, memory_format)
    if len(rates) < 2:
        raise ValueError(f"{steps} steps give {len(rates)} windows; raise --steps")
    return rates[1:]


def _plain_loop(model, optimizer, config, data, order, resolution, memory_format) -> list[float]:
    """Images/s of each window of ``config.log_every`` steps of an ordinary training loop over
    the batches ``order`` lists, as many steps as ``order`` holds."""
    batch, smoothing = config.batch_size, config.optimizer.label_smoothing
    rates, started = [], time.perf_counter()
    for step in range(len(order) // batch):
        x, y = data.train.batch(order[step * batch : (step + 1) * batch])
        x = resize_batch(x, resolution).contiguous(memory_format=memory_format)
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # as the trainer reads each step's loss
        if (step + 1) % config.log_every == 0:
            now = time.perf_counter()
            rates.append(config.log_every * batch / (now - started))
            started = now
    return rates


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs/fashion_mnist_quick.yaml"))
    p.add_argument("--steps", type=int, default=60, help="steps per run")
    p.add_argument("--log-every", type=int, default=10, help="steps per timed window")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="default: the config's")
    p.add_argument("--archs", default="largest,median,smallest", help="which of the three to time")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    if args.threads:
        overrides.append(f"num_threads={args.threads}")
    config = load_config(args.config, overrides)
    data = load_data(config.data)
    with torch.device("meta"):  # the space and the MACs only: no weights
        shape = create_supernet(
            config.model.family,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
            **config.model.family_kwargs(),
        )
    threads = config.num_threads or torch.get_num_threads()
    print(
        f"# {Path(args.config).name} ({config.model.family}), batch {config.batch_size}, "
        f"{args.rounds} rounds of {args.steps} steps, windows of {args.log_every} steps, "
        f"{threads} threads, {'channels-last' if config.channels_last else 'contiguous'}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'arch':9} {'MMACs':>7} {'trainer img/s':>14} {'static img/s':>13} {'ratio':>6} "
        f"{'static+dw img/s':>16} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        wanted = args.archs.split(",")
        labels = [label for label, _ in timed_archs(shape.space)]
        if unknown := set(wanted) - set(labels):
            p.error(f"--archs: unknown {sorted(unknown)}; choose from {','.join(labels)}")
        for label, arch in timed_archs(shape.space):
            if label not in wanted:
                continue
            cfg = one_arch_config(config, arch, args.log_every)
            rates: dict[str, list[float]] = {side: [] for side in SIDES}
            for r in range(args.rounds):
                for side in SIDES[r % 3 :] + SIDES[: r % 3]:  # each side first in turn
                    if side == "trainer":
                        rates[side] += trainer_windows(cfg, args.steps, Path(tmp))
                    else:
                        fast = side == "static+dw"
                        rates[side] += static_windows(
                            cfg, data, arch, args.steps, cfg.seed + r, fast
                        )
            trainer, static, fast = (statistics.median(rates[side]) for side in SIDES)
            print(
                f"{label:9} {shape.macs(arch) / 1e6:7.2f} {trainer:14.1f} {static:13.1f} "
                f"{trainer / static:6.3f} {fast:16.1f} {trainer / fast:6.3f}"
            )


if __name__ == "__main__":
    main()
