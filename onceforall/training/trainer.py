"""The training loop: progressive shrinking (or the sandwich rule) in one resumable command.

Read top to bottom: set-up (devices, data, supernet, run directory), then for each phase the
phase-start actions (teacher, channel sorting, optimizer), then epochs of steps, each step training
K subnets with gradients accumulated before one optimizer step (:mod:`.step`), then epoch-end
validation (:mod:`.evaluation`) and checkpoints. Works single-process and under ``torchrun``
(DistributedDataParallel).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from onceforall.config import TrainConfig, load_config
from onceforall.data import DataBundle, augment_batch, load_data
from onceforall.files import atomic_write
from onceforall.supernets import Supernet, create_supernet
from onceforall.training.bn import batches
from onceforall.training.checkpoint import (
    CONFIG_FILE,
    SUMMARY_FILE,
    SUPERNET_FILE,
    TEACHER_FILE,
    append_metrics,
    check_run_dir,
    data_record,
    load_state,
    load_weights,
    model_record,
    prepare_run_dir,
    save_checkpoint,
    save_weights,
    truncate_metrics,
)
from onceforall.training.distributed import (
    EpochBatches,
    ProcessEnv,
    barrier,
    checkpoint_due,
    random_states,
    restore_random_states,
    seed_ranks,
    setup_env,
)
from onceforall.training.evaluation import epoch_validation, run_summary
from onceforall.training.schedule import lr_at, resolve_phases, step_generator, subnets_for_step
from onceforall.training.step import phase_optimizer, train_step
from onceforall.training.teacher import FullNetworkTeacher, load_teacher

__all__ = ["TrainInterrupted", "train", "with_load_size"]


class TrainInterrupted(RuntimeError):
    """Raised by ``train(stop_after_steps=N)``: a clean stand-in for a kill, used by tests."""


def _teacher(
    net: Supernet,
    data: DataBundle,
    config: TrainConfig,
    run_dir: Path,
    env: ProcessEnv,
    create: bool,
) -> nn.Module:
    """The full network as a frozen teacher, its batch norm recalibrated at each resolution on
    the holdout slice that evaluations use (the ranks share the calibration; saved by rank 0,
    so a resumed run and every DDP rank get the same one back)."""
    path = run_dir / TEACHER_FILE
    if create:
        shared = env.world > 1
        calibration = partial(
            batches,
            data.holdout,
            config.eval_batch_size,
            config.bn_calibration_images,
            distributed=shared,
        )
        teacher = FullNetworkTeacher.build(net, calibration, distributed=shared)
        if env.main:
            save_weights(teacher, path)
        barrier(env)
    # Every rank, rank 0 included, takes the saved file: all hold the same teacher, as a resumed
    # run does.
    teacher = load_teacher(net, path)
    if config.channels_last:  # the training inputs' format (extract gives contiguous weights)
        teacher.to(memory_format=torch.channels_last)
    return teacher


def with_load_size(config: TrainConfig, resumed: Path | None = None) -> TrainConfig:
    """``config`` as training runs it: ImageFolder images loaded at the largest resolution of the
    model's space when ``data.image_size`` is unset (the run's config records the value), since
    loading them at 224 px for a 28 px family, to be shrunk every step, only costs time.

    ``resumed``: the directory of a run this config continues or reuses. A run started before
    this default existed recorded none; it keeps loading at 224 px (``load_data``'s default)."""
    if config.data.dataset != "imagefolder" or config.data.image_size is not None:
        return config
    if resumed is not None and _records_no_image_size(resumed / CONFIG_FILE):
        return config
    resolutions = config.model.resolutions
    if not resolutions:  # the family's own: build it to read them (classes do not matter)
        probe = create_supernet(config.model.family, num_classes=2, **config.model.family_kwargs())
        resolutions = probe.space.resolutions
    return replace(config, data=replace(config.data, image_size=max(resolutions)))


def _records_no_image_size(path: Path) -> bool:
    """Whether the run config at ``path`` reads and sets no ``data.image_size``. A missing or
    unreadable one is left to the run directory's own checks, which name the problem."""
    try:
        return load_config(path).data.image_size is None
    except (OSError, ValueError):
        return False


def _tensorboard(run_dir: Path, env: ProcessEnv, purge_step: int | None) -> Any:
    if not env.main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> Path:
    """Train a supernet with ``config`` into ``run_dir``; returns the path of the final weights.

    Args:
        config: the resolved training config.
        run_dir: where config, metrics, checkpoints and ``supernet.safetensors`` go.
        resume: continue the run in ``run_dir`` from its last checkpoint (same config).
        force: delete an existing ``run_dir`` and start over.
        progress: show progress bars (rank 0 only).
        stop_after_steps: raise :class:`TrainInterrupted` after this many optimizer steps of this
            call (tests use it to interrupt a run at a chosen point).

    Raises:
        FileExistsError: ``run_dir`` holds a run and neither ``resume`` nor ``force`` is set.
        ValueError / FileNotFoundError: bad config or missing data, before anything is written.
    """
    run_dir = Path(run_dir)
    if resume and force:  # before any slow step (the data may be a large folder to scan)
        check_run_dir(run_dir, config, resume, force)
    env = setup_env(config)
    config = with_load_size(config, run_dir if resume else None)
    # Everything that can fail on bad input happens before the run directory is touched.
    data = load_data(config.data)
    torch.manual_seed(config.seed)  # weight init (and dropout) use the global RNG, as in PyTorch
    net = create_supernet(
        config.model.family,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        **config.model.family_kwargs(),
    )
    seed_ranks(env, config.seed)
    phases = resolve_phases(config, net.space)
    if config.batch_size % env.world:
        raise ValueError(f"batch_size={config.batch_size} must divide by {env.world} ranks")
    if data.num_classes < 2:
        raise ValueError(
            f"the training data has {data.num_classes} class; a classifier needs at least 2 "
            "(an ImageFolder needs one folder per class)"
        )
    if len(EpochBatches(data, config, env, 0)) == 0:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the {len(data.train)} training images "
            f"(across {env.world} ranks): not one step per epoch; lower batch_size"
        )
    # Every rank checks (and so raises alike) before rank 0 changes anything; rank 0 alone
    # prepares the directory, and the others wait for it.
    check_run_dir(run_dir, config, resume, force)
    barrier(env)
    if env.main:
        prepare_run_dir(run_dir, config, resume, force)
    barrier(env)

    net.to(env.device)
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    loaded = load_state(run_dir) if resume else None
    state: dict[str, Any] = {
        "phase": 0,
        "epoch": 0,
        "step": 0,
        "global_step": 0,
        "finished": False,
        "elapsed": 0.0,
    }
    extra: dict[str, Any] = {}
    if loaded is not None:
        state, extra = loaded
        load_weights(net, run_dir / state["weights"])
        restore_random_states(env, extra)
    if resume and env.main and not state.get("finished"):
        # Records past the checkpoint (all of them when the run was killed before its first
        # one) are of steps that now run again.
        truncate_metrics(run_dir, state["global_step"])
    if state.get("finished"):
        if env.main:
            if (run_dir / SUPERNET_FILE).is_file():
                print(f"{run_dir} is already finished; nothing to do")
            else:  # the final checkpoint holds the final weights
                _save_supernet(net, run_dir, data, config)
                print(f"{run_dir} is finished; {SUPERNET_FILE} was missing and is written again")
        barrier(env)
        return run_dir / SUPERNET_FILE

    model: nn.Module = net
    if env.world > 1:
        # Inactive elastic weights (skipped blocks) get no gradient in a step: find them.
        model = DistributedDataParallel(
            net,
            device_ids=[env.device.index] if env.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    use_amp = config.amp and env.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if extra.get("scaler"):
        scaler.load_state_dict(extra["scaler"])
    # On resume TensorBoard drops its events of the steps that run again, as metrics.jsonl does.
    writer = _tensorboard(run_dir, env, state["global_step"] + 1 if resume else None)
    steps_done = 0
    started = time.monotonic() - float(state.get("elapsed", 0.0))
    last_ckpt = time.monotonic()

    def checkpoint(
        next_phase: int,
        next_epoch: int,
        next_step: int,
        gstep: int,
        optimizer: torch.optim.Optimizer | None,
    ) -> None:
        nonlocal last_ckpt
        state.update(
            phase=next_phase,
            epoch=next_epoch,
            step=next_step,
            global_step=gstep,
            elapsed=time.monotonic() - started,
        )
        tensors: dict[str, Any] = random_states(env)
        if optimizer is not None:
            tensors["optimizer"] = optimizer.state_dict()
        # Mixed precision's loss scale (empty when AMP is off): a resumed run continues with the
        # scale it had, across phases too.
        tensors["scaler"] = scaler.state_dict()
        if env.main:
            save_checkpoint(run_dir, state, net, tensors)
        barrier(env)
        last_ckpt = time.monotonic()

    teacher: nn.Module | None = None
    if (run_dir / TEACHER_FILE).is_file() and state["phase"] > 0:
        teacher = _teacher(net, data, config, run_dir, env, create=False)

    for phase in phases[state["phase"] :]:
        pc = phase.config
        fresh_phase = state["epoch"] == 0 and state["step"] == 0
        # ---- phase start: teacher, channel sorting, optimizer
        teacher_kind = config.distill.resolved_teacher(config.schedule.kind)
        wants_teacher = teacher_kind == "full" and pc.distill and phase.index > 0
        if wants_teacher and teacher is None and config.distill.kd_ratio > 0:
            teacher = _teacher(net, data, config, run_dir, env, create=True)
        if phase.sort_channels and fresh_phase:
            net.sort_channels()
        optimizer = phase_optimizer(net, config, phase)
        if not fresh_phase and "optimizer" in extra:
            try:
                optimizer.load_state_dict(extra["optimizer"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"the checkpoint in {run_dir} ({state.get('tensors')}) holds optimizer state "
                    f"that does not fit phase {pc.name!r} of this run ({exc}): its files were "
                    "replaced or mixed with another run's. Restore them, or start over with "
                    "--force"
                ) from exc
        steps_per_epoch = len(EpochBatches(data, config, env, 0))
        # Fractional epochs: the last epoch stops early (its batch order is still a full shuffle).
        total_steps = max(1, round(pc.epochs * steps_per_epoch))
        warmup_steps = round(pc.warmup_epochs * steps_per_epoch)
        num_epochs = -(-total_steps // steps_per_epoch)

        for epoch in range(state["epoch"], num_epochs):
            net.train()
            epoch_batches = EpochBatches(data, config, env, epoch)
            start_step = state["step"] if epoch == state["epoch"] else 0
            epoch_steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            bar = tqdm(
                total=epoch_steps,
                initial=start_step,
                disable=not (progress and env.main),
                desc=f"[{phase.index + 1}/{len(phases)}] {phase.name} "
                f"epoch {epoch + 1}/{num_epochs}",
                unit="step",
                dynamic_ncols=True,
                leave=True,
            )
            t_log, imgs_log = time.monotonic(), 0
            for step, (x, y) in enumerate(
                epoch_batches.iterate(start_step, epoch_steps), start=start_step
            ):
                phase_step = epoch * steps_per_epoch + step
                gstep = state["global_step"] + 1
                lr = lr_at(phase_step, total_steps, pc.lr, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = x.to(env.device, non_blocking=True)
                y = y.to(env.device, non_blocking=True)
                if config.augment:
                    x = augment_batch(x, step_generator(config.seed, 1, gstep, env.rank))
                archs = subnets_for_step(
                    phase, config.schedule, step_generator(config.seed, 0, phase.index, epoch, step)
                )
                # Mean loss over the step's subnets (each is back-propagated on its own).
                loss = train_step(
                    model,
                    net,
                    teacher if pc.distill else None,
                    teacher_kind == "inplace" and pc.distill,
                    archs,
                    x,
                    y,
                    config,
                    optimizer,
                    scaler,
                    use_amp,
                ) / len(archs)
                state["global_step"] = gstep
                steps_done += 1
                imgs_log += len(y) * env.world * len(archs)
                bar.update(1)
                last_of_epoch = step == epoch_steps - 1
                if gstep % config.log_every == 0 or last_of_epoch:
                    if env.world > 1:  # the mean over the ranks: every rank sees the same
                        dist.all_reduce(loss)
                        loss = loss / env.world
                    loss = float(loss)  # the one host read of the loss, when it is logged
                    if not math.isfinite(loss) and not use_amp:  # AMP skips such steps itself
                        raise FloatingPointError(
                            f"training diverged: the loss is {loss} at global step {gstep} "
                            f"(phase {phase.name}); lower the learning rate "
                            f"(schedule.phases.{phase.index}.lr={pc.lr}) or check the data, "
                            "and start over with --force"
                        )
                    now = time.monotonic()
                    ips = imgs_log / max(now - t_log, 1e-9)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{ips:.0f}")
                    if env.main:
                        append_metrics(
                            run_dir,
                            {
                                "kind": "train",
                                "phase": phase.name,
                                "phase_index": phase.index,
                                "epoch": epoch,
                                "step": step,
                                "global_step": gstep,
                                "loss": loss,
                                "lr": lr,
                                "images_per_s": ips,
                                "archs": [str(a) for a in archs],
                                "elapsed_s": now - started,
                            },
                            writer,
                        )
                    t_log, imgs_log = now, 0
                if not last_of_epoch and checkpoint_due(env, config, gstep, last_ckpt):
                    checkpoint(phase.index, epoch, step + 1, gstep, optimizer)
                if stop_after_steps is not None and steps_done >= stop_after_steps:
                    bar.close()
                    raise TrainInterrupted(
                        f"stopped after {steps_done} steps at global step {gstep}"
                    )
            bar.close()
            # ---- epoch end: validate the phase's largest and smallest subnets, checkpoint
            record = epoch_validation(
                net, phase, data, config, env, epoch, state["global_step"], started
            )
            if env.main:
                append_metrics(run_dir, record, writer)
                if progress:
                    tqdm.write(
                        f"  holdout top-1 after BN recalibration: largest "
                        f"{record['largest_acc']:.2f}%, smallest {record['smallest_acc']:.2f}%"
                    )
            if epoch + 1 < num_epochs:
                checkpoint(phase.index, epoch + 1, 0, state["global_step"], optimizer)
            else:
                checkpoint(phase.index + 1, 0, 0, state["global_step"], None)
            extra = {}
        state["epoch"], state["step"] = 0, 0

    # ---- the end: final weights and a summary, then the state says finished
    summary = run_summary(net, data, config, env, started)
    if env.main:
        atomic_write(run_dir / SUMMARY_FILE, (json.dumps(summary, indent=1) + "\n").encode())
        _save_supernet(net, run_dir, data, config)
        state.update(finished=True, elapsed=time.monotonic() - started)
        save_checkpoint(run_dir, state, net, {"rng": torch.get_rng_state()})
    barrier(env)
    if writer is not None:
        writer.close()
    return run_dir / SUPERNET_FILE


def _save_supernet(net: Supernet, run_dir: Path, data: DataBundle, config: TrainConfig) -> None:
    meta = {"num_classes": data.num_classes, "in_channels": data.in_channels,
            "family": config.model.family, "model": model_record(config),
            "data": data_record(data)}  # fmt: skip
    save_weights(net, run_dir / SUPERNET_FILE, meta)
