"""Fine-tune one extracted subnet with the full network as teacher (and the loop that trains
any standalone subnet, which the benchmarks also use to train an arch from scratch).

The paper reports +0.4 to +0.9 pp from a short fine-tune of a specialized subnet; the reference
implementation ships no code for it. The subnet is trained alone (a standard ``nn.Module``, no
elastic overhead) with the run's loss: label-smoothed cross-entropy plus distillation from the
full network, cosine learning rate, the run's augmentation. The result is saved beside the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from onceforall.arch import ArchConfig
from onceforall.data import augment_batch, make_loader, resize_batch
from onceforall.elastic.depthwise import fast_depthwise_grad
from onceforall.files import check_writable
from onceforall.run import Run
from onceforall.training.bn import recalibrate_bn
from onceforall.training.checkpoint import atomic_write, save_weights
from onceforall.training.losses import distillation_loss
from onceforall.training.optim import make_optimizer, weight_decay_groups
from onceforall.training.schedule import lr_at, step_generator

__all__ = ["finetune", "finetuned_path", "scratch_subnet", "train_subnet_loop"]


def _check_schedule(epochs: float, lr: float) -> None:
    if not all(math.isfinite(v) and v > 0 for v in (epochs, lr)):
        raise ValueError(f"epochs={epochs} and lr={lr} must be positive finite numbers")


def finetuned_path(run: Run, arch: ArchConfig) -> Path:
    """Where the fine-tuned weights of ``arch`` live: ``RUN_DIR/finetuned/<digest>.safetensors``
    (a digest because arch strings are long; the JSON beside it names the arch)."""
    digest = hashlib.sha1(str(arch).encode()).hexdigest()[:12]
    return run.path / "finetuned" / f"{digest}.safetensors"


def finetune(
    run: Run,
    arch: ArchConfig | str,
    *,
    epochs: float = 1.0,
    lr: float = 0.01,
    batch_size: int | None = None,
    kd_ratio: float | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the subnet at ``arch`` with the full network as teacher and save it; returns a
    record of before/after accuracy.

    Args:
        run: the trained run.
        arch: the subnet, an :class:`ArchConfig` or its string.
        epochs: passes over the training split (fractions allowed).
        lr: peak learning rate (cosine decay, 5% warm-up), SGD with the run's optimizer settings.
        batch_size: default the run's.
        kd_ratio: weight of the distillation from the full network (the run's frozen teacher);
            default the run's, or 1.0 (the paper's) when the run trained without distillation.
            0 fine-tunes on labels alone.
        seed: data order and augmentation.
        force: overwrite an existing fine-tuned copy of this arch.
        progress: show a progress bar.

    Returns:
        ``{"arch", "path", "epochs", "lr", "kd_ratio", "holdout_before", "holdout_after",
        "seconds"}``; also written as JSON beside the weights.

    Raises:
        FileExistsError: this arch was fine-tuned already and ``force`` is not set.
        ValueError: bad arguments or an arch outside the run's space.
    """
    arch = run.parse(arch)
    _check_schedule(epochs, lr)
    if kd_ratio is None:
        kd_ratio = run.config.distill.kd_ratio or 1.0
    if not kd_ratio >= 0 or math.isinf(kd_ratio):  # NaN fails the first test
        raise ValueError(f"kd_ratio={kd_ratio} must be a finite number >= 0")
    path = finetuned_path(run, arch)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (arch fine-tuned before); pass --force to redo it")
    check_writable(path, "run directory (fine-tuned weights are saved in it)", folder=False)
    config = run.config
    batch_size = batch_size or config.batch_size
    started = time.monotonic()
    model = run.subnet(arch)
    teacher = run.teacher() if kd_ratio > 0 else None
    before = run.accuracy(model, arch, "holdout")

    train_subnet_loop(
        model,
        run,
        arch.resolution,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        teacher=teacher,
        kd_ratio=kd_ratio,
        seed=seed,
        progress=progress,
        desc=f"finetune {arch.resolution}px",
    )
    # Running statistics drifted with the weights: recompute them exactly on the holdout slice.
    recalibrate_bn(model, arch, run.calibration_batches())
    after = run.accuracy(model, arch, "holdout")
    path.parent.mkdir(exist_ok=True)
    save_weights(model, path, {"arch": str(arch)})
    record = {
        "arch": str(arch),
        "path": str(path),
        "epochs": epochs,
        "lr": lr,
        "kd_ratio": kd_ratio,
        "holdout_before": before,
        "holdout_after": after,
        "seconds": time.monotonic() - started,
    }
    atomic_write(path.with_suffix(".json"), (json.dumps(record, indent=1) + "\n").encode())
    return record


def scratch_subnet(run: Run, arch: ArchConfig | str, seed: int = 0) -> torch.nn.Module:
    """The standalone module of ``arch`` with fresh weights, for training it from scratch: the
    arch extracted from a newly initialised supernet of the run's family (seeded by ``seed``),
    so it gets exactly the initialisation the supernet's training started from."""
    from onceforall.supernets import create_supernet

    arch = run.parse(arch)
    config = run.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_supernet(
            config.model.family,
            num_classes=run.data.num_classes,
            in_channels=run.data.in_channels,
            **config.model.family_kwargs(),
        )
    return net.extract(arch).train()


def train_subnet_loop(
    model: torch.nn.Module,
    run: Run,
    resolution: int,
    *,
    epochs: float,
    lr: float,
    batch_size: int | None = None,
    teacher: torch.nn.Module | None = None,
    kd_ratio: float | None = None,
    warmup_fraction: float = 0.05,
    seed: int = 0,
    progress: bool = False,
    desc: str = "train",
) -> dict[str, Any]:
    """Train any standalone module on the run's training split at one input resolution.

    The one loop behind fine-tuning (from the supernet's weights, with the full network as
    teacher) and the benchmarks' training from scratch (fresh weights, ``teacher=None``): SGD
    with the run's optimizer settings, cosine learning rate with ``warmup_fraction`` of linear
    warm-up, the run's augmentation and label smoothing, distillation when a teacher is given
    (weighted by ``kd_ratio``, default the run's).
    Batch-norm statistics are left as training made them (recalibrate afterwards if wanted).
    The model is trained, and left, in channels-last memory format (that of the batches).

    Args:
        model: any ``nn.Module`` mapping ``N×C×R×R`` images to ``N×classes`` logits.
        resolution: the input size ``R`` every batch is resized to.
        epochs: passes over the training split (fractions allowed); ``round(epochs *
            steps_per_epoch)`` steps of ``batch_size`` images, at least one.

    Returns:
        ``{"steps", "images", "seconds", "final_loss"}``; ``images`` counts images through the
        model's forward and backward passes (teacher forwards not counted).
    """
    _check_schedule(epochs, lr)
    config = run.config
    batch_size = batch_size or config.batch_size
    steps_per_epoch = len(run.data.train) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(run.data.train)} images")
    total = max(1, round(epochs * steps_per_epoch))
    warmup = round(total * warmup_fraction)
    # The batches are channels-last; weights in the same format train faster (extracted
    # subnets come contiguous): `python -m benchmarks.memory_format --train`.
    model.to(memory_format=torch.channels_last)
    opt = config.optimizer
    optimizer = make_optimizer(
        weight_decay_groups(model.named_parameters(), opt.weight_decay),
        "sgd",
        lr,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
    )
    if teacher is not None:  # its forward, too, runs on the channels-last batches
        teacher.eval().to(memory_format=torch.channels_last)
    model.train()
    device = next(model.parameters()).device
    started = time.monotonic()
    bar = tqdm(total=total, desc=desc, disable=not progress)
    step = epoch = 0
    loss = torch.zeros(())
    # Depthwise kernels wider than 3 train with the supernet's fast weight gradient on CPU.
    with fast_depthwise_grad(model):
        # Bounded: every pass advances step by one per batch, and total is fixed.
        while step < total:
            loader = make_loader(
                run.data.train,
                batch_size,
                shuffle=True,
                seed=seed,
                epoch=epoch,
                drop_last=True,
                pin_memory=device.type == "cuda",
            )
            for x, y in loader:
                if step >= total:
                    break
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, lr, warmup)
                if config.augment:
                    x = augment_batch(x, step_generator(seed, 2, step))
                x = resize_batch(x, resolution).contiguous(memory_format=torch.channels_last)
                target = None
                if teacher is not None:
                    with torch.no_grad():
                        target = teacher(x)
                loss = distillation_loss(
                    model(x),
                    y,
                    target,
                    kd_ratio=config.distill.kd_ratio if kd_ratio is None else kd_ratio,
                    label_smoothing=opt.label_smoothing,
                    temperature=config.distill.temperature,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            epoch += 1
    bar.close()
    model.eval()
    return {
        "steps": total,
        "images": total * batch_size,
        "seconds": time.monotonic() - started,
        "final_loss": float(loss.detach()),
    }
