"""Training: the whole progressive-shrinking schedule on synthetic data, resume, DDP, BN
recalibration, configs and the CLI's error paths."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

import onceforall as ofa
from onceforall.cli import main as cli_main
from onceforall.config import ScheduleConfig, config_from_dict, load_config
from onceforall.data import DataConfig, load_data, resize_batch
from onceforall.run import Run
from onceforall.training import TrainInterrupted, accuracy, train
from onceforall.training.bn import batches, recalibrate_bn
from onceforall.training.checkpoint import load_weights, prepare_run_dir, save_weights
from onceforall.training.optim import make_optimizer
from onceforall.training.schedule import lr_at, resolve_phases, step_generator, subnets_for_step
from onceforall.training.teacher import FullNetworkTeacher, load_teacher
from tests.conftest import TINY, small_mbv3, tiny_config

REPO = Path(__file__).resolve().parents[1]


def _records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture
def finished_run(tiny_run) -> Path:
    return tiny_run


def test_schedule_runs_every_phase_and_yields_a_usable_supernet(finished_run):
    phases = [p["name"] for p in TINY["schedule"]["phases"]]
    evals = _records(finished_run, "eval")
    assert [r["phase"] for r in evals] == phases  # one epoch-end validation per phase
    for r in evals:
        assert 0 <= r["smallest_acc"] <= 100 and 0 <= r["largest_acc"] <= 100
    steps = _records(finished_run, "train")
    assert [r["global_step"] for r in steps] == list(range(1, len(steps) + 1))
    # Fractional epochs: 0.67 of 3 steps is 2 steps.
    per_phase = {name: sum(r["phase"] == name for r in steps) for name in phases}
    assert per_phase == {"full": 3, "kernel": 3, "depth_1": 2, "depth_2": 2, "expand_1": 2,
                         "expand_2": 3}  # fmt: skip
    # Every trained arch lies in its phase's space; K subnets per step where asked.
    config = tiny_config()
    net = ofa.load_supernet(finished_run)
    spaces = {p.name: p.space for p in resolve_phases(config, net.space)}
    for r in steps:
        assert len(r["archs"]) == (2 if r["phase"].startswith(("depth", "expand")) else 1)
        assert all(ofa.ArchConfig.parse(a) in spaces[r["phase"]] for a in r["archs"])
    assert {ofa.ArchConfig.parse(a).kernel_sizes[0][0] for r in steps[3:6] for a in r["archs"]}
    # The loaded supernet is ready to use: its space, set_active, extract, forward.
    assert (
        net.space
        == ofa.create_supernet(
            "mbv3_small_images", num_classes=4, in_channels=1, resolutions=(16, 20)
        ).space
    )
    arch = net.space.sample(0)
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    net.set_active(arch)
    assert torch.allclose(net(x), net.extract(arch)(x), atol=1e-5)
    summary = json.loads((finished_run / "summary.json").read_text())
    assert set(summary["subnets"]) == {"largest", "smallest"}
    assert {"holdout_accuracy", "test_accuracy", "macs", "params"} <= set(
        summary["subnets"]["largest"]
    )
    # One recalibration per subnet serves both splits: the same numbers as evaluating each
    # split on its own.
    data = load_data(config.data)
    for label, row in summary["subnets"].items():
        for split, dataset in (("holdout", data.holdout), ("test", data.test)):
            assert row[f"{split}_accuracy"] == ofa.evaluate_subnet(
                net, ofa.ArchConfig.parse(row["arch"]), dataset, data.holdout,
                calibration_images=config.bn_calibration_images,
                batch_size=config.eval_batch_size,
            ), (label, split)  # fmt: skip
    saved = load_config(finished_run / "config.yaml")
    assert saved == config  # the resolved config round-trips


def test_kernel_transforms_train_only_in_the_kernel_phase(finished_run):
    """Frozen after the kernel phase: the transform matrices are the same as at its end."""
    config = tiny_config()
    net = ofa.create_supernet("mbv3_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20))  # fmt: skip
    phases = resolve_phases(config, net.space)
    assert [p.train_kernel_transforms for p in phases] == [False, True, False, False, False, False]
    assert [p.sort_channels for p in phases] == [False, False, False, False, True, True]
    trained = load_file(str(finished_run / "supernet.safetensors"))
    moved = [k for k, v in trained.items() if ".transforms." in k and not torch.equal(
        v, torch.eye(v.shape[0]))]  # fmt: skip
    assert moved, "the kernel phase must change the transformation matrices"


def test_weight_decay_per_phase_falls_back_to_the_optimizers():
    from onceforall.training.step import phase_optimizer

    config = tiny_config(**{"optimizer.weight_decay": 1e-4})
    config.schedule.phases[0].weight_decay = 5e-4
    net = ofa.create_supernet("mbv3_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20))  # fmt: skip
    phases = resolve_phases(config, net.space)
    for phase, expected in zip(phases[:2], (5e-4, 1e-4), strict=True):
        decay, no_decay = phase_optimizer(net, config, phase).param_groups
        assert decay["weight_decay"] == expected and no_decay["weight_decay"] == 0.0
        assert all(p.ndim > 1 for p in decay["params"])  # batch norm and biases never decay
    config.schedule.phases[1].weight_decay = -1.0
    with pytest.raises(ValueError, match=r"weight_decay=-1\.0 must be >= 0"):
        config_from_dict(dataclasses.asdict(config))


def test_resume_after_interruption_reaches_the_same_weights(finished_run, tmp_path):
    run_dir = tmp_path / "interrupted"
    # Stop mid-epoch inside the depth phase (global step 8 of 15), then resume to the end.
    with pytest.raises(TrainInterrupted):
        train(tiny_config(), run_dir, progress=False, stop_after_steps=8)
    assert not (run_dir / "supernet.safetensors").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(), run_dir, progress=False)
    with pytest.raises(ValueError, match="differs"):
        train(tiny_config(seed=3), run_dir, progress=False, resume=True)
    train(tiny_config(), run_dir, progress=False, resume=True)
    a = load_file(str(finished_run / "supernet.safetensors"))
    b = load_file(str(run_dir / "supernet.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The metrics of the resumed run continue the interrupted one's steps.
    steps = [r["global_step"] for r in _records(run_dir, "train")]
    assert steps == list(range(1, len(steps) + 1))
    # A finished run resumed again does nothing.
    train(tiny_config(), run_dir, progress=False, resume=True)


def test_resume_with_dropout_reaches_the_same_weights(tmp_path):
    """Dropout draws from torch's global RNG, which the checkpoint restores: nothing between the
    restore and the next step may draw from it (building the teacher or an evaluated subnet
    initialises new layers), or the resumed run's masks differ. Stopped inside the depth phase,
    where the teacher is loaded back on resume."""
    config = tiny_config(**{"model.dropout": 0.3})
    train(config, tmp_path / "whole", progress=False)
    with pytest.raises(TrainInterrupted):
        train(config, tmp_path / "resumed", progress=False, stop_after_steps=8)
    train(config, tmp_path / "resumed", progress=False, resume=True)
    _same_weights(tmp_path / "whole", tmp_path / "resumed")


def _same_weights(a_dir: Path, b_dir: Path) -> None:
    a = load_file(str(a_dir / "supernet.safetensors"))
    b = load_file(str(b_dir / "supernet.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_sigkill_reaches_the_same_weights(finished_run, tmp_path):
    """A real kill, at whatever moment it lands (mid-step, mid-checkpoint), then --resume."""
    import signal
    import time

    cfg = _write(tmp_path, TINY)
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "onceforall.cli", "train", str(cfg), "--out", str(run),
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run / "checkpoint.json"
    deadline = time.monotonic() + 120
    try:
        # Kill once the run is in its third phase (it checkpoints after every step).
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(state.read_text())["phase"] >= 2:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (run / "supernet.safetensors").exists()
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_weights(finished_run, run)
    steps = [r["global_step"] for r in _records(run, "train")]
    assert steps == list(range(1, len(steps) + 1))
    # Only the last checkpoint's files are left.
    left = sorted(p.name for p in run.glob("ckpt-*"))
    current = json.loads(state.read_text())
    assert left == sorted([current["tensors"], current["weights"]])


class _FakeWriter:
    """Stands in for TensorBoard's SummaryWriter (not installed here): records what it gets."""

    def __init__(self, made: list, log_dir: str, purge_step: int | None = None) -> None:
        self.purge_step = purge_step
        self.scalars: list[tuple[str, float, int]] = []
        made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        pass


def test_resume_of_a_run_killed_before_its_first_checkpoint(finished_run, tmp_path, monkeypatch):
    """No checkpoint yet: --resume starts over, and neither metrics.jsonl (a record torn by the
    kill included) nor TensorBoard keeps the dead run's steps twice."""
    import types

    # Channels are re-sorted at the start of each phase that opens expand ratios (two in TINY).
    from onceforall.supernets.mbconvnet import MBConvSupernet

    sorts: list[int] = []
    sort = MBConvSupernet.sort_channels

    def counted(net) -> None:
        sorts.append(1)
        sort(net)

    monkeypatch.setattr(MBConvSupernet, "sort_channels", counted)
    made: list[_FakeWriter] = []
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = functools.partial(_FakeWriter, made)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    config = tiny_config(checkpoint_minutes=60.0)  # no mid-epoch checkpoint in the first steps
    run = tmp_path / "early"
    with pytest.raises(TrainInterrupted):
        train(config, run, progress=False, stop_after_steps=2)
    assert not (run / "checkpoint.json").exists()
    assert [r["global_step"] for r in _records(run, "train")] == [1, 2]
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "global_ste')  # torn by the kill: no newline
    train(config, run, progress=False, resume=True)
    # The same training as a run checkpointing every step: checkpoints change nothing.
    _same_weights(finished_run, run)
    steps = [r["global_step"] for r in _records(run, "train")]
    assert steps == list(range(1, len(steps) + 1))
    assert len(sorts) == 2
    first, second = made
    assert first.purge_step is None and second.purge_step == 1  # all the dead run's steps
    assert {tag for tag, _, _ in first.scalars} >= {"train/loss", "train/lr"}
    assert [step for tag, _, step in second.scalars if tag == "train/loss"] == steps


def test_checkpoints_leave_only_their_own_files(tmp_path):
    from onceforall.training.checkpoint import load_state, save_checkpoint

    net = torch.nn.Linear(2, 2)
    # A kill between a checkpoint's files and its checkpoint.json leaves files no JSON names.
    (tmp_path / "ckpt-00000007.safetensors").write_bytes(b"partial")
    save_checkpoint(tmp_path, {"global_step": 5}, net, {"rng": torch.get_rng_state()})
    save_checkpoint(tmp_path, {"global_step": 9}, net, {"rng": torch.get_rng_state()})
    state, extra = load_state(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-00000009.pt", "ckpt-00000009.safetensors"]  # fmt: skip
    assert state["global_step"] == 9 and torch.equal(extra["rng"], torch.get_rng_state())
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_timed_checkpoints_are_decided_alike_on_every_rank(monkeypatch):
    from onceforall.training import distributed

    clock = [1000.0]
    monkeypatch.setattr(distributed.time, "monotonic", lambda: clock[0])
    one = distributed.ProcessEnv(rank=0, world=1, device=torch.device("cpu"))
    every_step = tiny_config(checkpoint_minutes=0.0)
    assert distributed.checkpoint_due(one, every_step, gstep=1, last_ckpt=clock[0])
    timed = tiny_config(checkpoint_minutes=1.0, log_every=10)
    assert not distributed.checkpoint_due(one, timed, gstep=3, last_ckpt=clock[0] - 59)
    assert distributed.checkpoint_due(one, timed, gstep=3, last_ckpt=clock[0] - 61)
    # Under DDP the clock is read only at the steps every rank logs, so that no rank reaches a
    # checkpoint's barrier alone (the two-process DDP test runs the collective itself).
    two = distributed.ProcessEnv(rank=0, world=2, device=torch.device("cpu"))
    assert not distributed.checkpoint_due(two, timed, gstep=3, last_ckpt=clock[0] - 61)


def test_one_named_gpu_under_torchrun_is_refused_before_anything_starts(tmp_path, monkeypatch):
    """Under torchrun every process would take the one GPU ``cuda:N`` names (NCCL refuses ranks
    sharing a device): refused with the fix named, before any process group or file exists.
    Checked before CUDA's presence, so this machine without one sees the same message."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"names one GPU.*device=cuda.*CUDA_VISIBLE_DEVICES"):
        train(tiny_config(device="cuda:1"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_imagefolder_training_resumes_to_the_same_weights(tmp_path):
    """Per-image augmentation keyed by (seed, epoch, image) and a DataLoader that leaves torch's
    global RNG alone (dropout draws from it): an interrupted run, resumed mid-epoch, trains on
    the same crops with the same dropout masks as an uninterrupted one, with workers or without."""
    from tests.test_data import _image_tree

    _image_tree(tmp_path / "images")
    data = {"dataset": "imagefolder", "root": str(tmp_path / "images"), "image_size": 16,
            "holdout_size": 2}  # fmt: skip
    schedule = {"kind": "progressive", "phases": [
        {"name": "full", "largest_only": True, "epochs": 2, "lr": 0.05, "distill": False},
        {"name": "kernel", "expand_ratios": [6], "depths": [4], "epochs": 1, "lr": 0.02},
    ]}  # fmt: skip
    for workers in (0, 1):
        config = tiny_config(**{"data": {**data, "num_workers": workers}, "batch_size": 2,
                                "model.dropout": 0.2, "model.resolutions": [16],
                                "schedule": schedule, "bn_calibration_images": 2,
                                "eval_batch_size": 2})  # fmt: skip
        whole, cut = tmp_path / f"whole{workers}", tmp_path / f"cut{workers}"
        train(config, whole, progress=False)
        with pytest.raises(TrainInterrupted):
            train(config, cut, progress=False, stop_after_steps=4)  # mid-epoch 2 of 3 steps
        train(config, cut, progress=False, resume=True)
        _same_weights(whole, cut)


def test_imagefolder_loads_at_the_models_largest_resolution_unless_told(tmp_path, monkeypatch):
    """An unset ``data.image_size`` becomes the largest resolution of the model's space (the
    family's own when ``model.resolutions`` is unset), recorded in the run's config; a set one is
    kept; a run that recorded none (started before this default) resumes loading at 224 px."""
    from onceforall.training import trainer
    from tests.test_data import _image_tree

    _image_tree(tmp_path / "images")
    loaded: list[int | None] = []
    real_load = trainer.load_data
    monkeypatch.setattr(trainer, "load_data", lambda c: loaded.append(c.image_size) or real_load(c))
    data = {"dataset": "imagefolder", "root": str(tmp_path / "images"), "holdout_size": 2}
    small = {"data": data, "batch_size": 2, "bn_calibration_images": 2, "eval_batch_size": 2}

    def first_step(out, **overrides):
        with pytest.raises(TrainInterrupted):
            config = tiny_config(**{**small, "data": dict(data)}, **overrides)  # a fresh data dict
            train(config, out, progress=False, stop_after_steps=1)
        return load_config(out / "config.yaml").data.image_size

    assert first_step(tmp_path / "spaced") == 20 and loaded[-1] == 20  # model.resolutions [16, 20]
    family = ofa.create_supernet("mbv3_small_images", num_classes=2, in_channels=3)
    assert first_step(tmp_path / "family", **{"model.resolutions": None}) == max(
        family.space.resolutions
    )
    assert first_step(tmp_path / "told", **{"data.image_size": 24}) == 24 and loaded[-1] == 24
    # The earlier default: a run whose config says null keeps it, and loads at 224 px.
    legacy = tmp_path / "legacy"
    first_step(legacy)
    saved = (legacy / "config.yaml").read_text()
    assert "image_size: 20" in saved
    (legacy / "config.yaml").write_text(saved.replace("image_size: 20", "image_size: null"))
    with pytest.raises(TrainInterrupted):
        train(tiny_config(**{**small, "data": dict(data)}), legacy, progress=False, resume=True,
              stop_after_steps=1)  # fmt: skip
    assert loaded[-1] is None and load_config(legacy / "config.yaml").data.image_size is None
    bundle = real_load(load_config(legacy / "config.yaml").data)
    assert bundle.resolution == 224 and bundle.train[0][0].shape[-1] == 224
    # The demo's and the benchmarks' way in reuses a finished run of the same config.
    from onceforall.run import train_or_reuse

    config = tiny_config(**{**small, "data": dict(data)})
    run, how = train_or_reuse(config, tmp_path / "reused", progress=False)
    assert how.startswith("trained") and run.config.data.image_size == 20
    assert train_or_reuse(config, tmp_path / "reused", progress=False)[1].startswith("reused")


def test_sandwich_schedule_trains_largest_smallest_and_random():
    config = tiny_config(**{"schedule.kind": "sandwich"})
    net = ofa.create_supernet("mbv3_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20))  # fmt: skip
    phases = resolve_phases(config, net.space)
    sandwich = ScheduleConfig(kind="sandwich", sandwich_random=2)
    archs = subnets_for_step(phases[-1], sandwich, step_generator(0, 1))
    assert archs[0] == phases[-1].space.largest() and archs[1] == phases[-1].space.smallest()
    assert len(archs) == 4
    # The full-network phase trains the full network normally (one draw of its resolution per
    # step), not the sandwich's largest and smallest resolutions distilled into each other.
    full = phases[0]
    assert full.config.largest_only and full.space.size == 2
    archs = subnets_for_step(full, sandwich, step_generator(0, 1))
    assert len(archs) == 1 and archs[0] in full.space
    one = dataclasses.replace(
        full,
        config=dataclasses.replace(full.config, subnets_per_step=3),
        space=full.space.restrict(resolutions=(16,)),
    )
    for kind in ("sandwich", "progressive"):
        schedule = ScheduleConfig(kind=kind)
        assert subnets_for_step(one, schedule, step_generator(0, 1)) == [one.space.largest()]


def test_the_trained_supernet_computes_what_the_saved_one_does(tmp_path, monkeypatch):
    """The sandwich trains the kernel transforms in every elastic phase with the fused SGD
    kernel, which leaves no version count on them; the epoch-end validations between those
    steps ask for the folded matrices. The network that training ends with, which the summary
    and the last validations score, must still compute what its saved weights do."""
    import onceforall.training.trainer as trainer

    ended = {}
    summary = trainer.run_summary

    def keep(net, *args, **kwargs):
        ended["net"] = net
        return summary(net, *args, **kwargs)

    monkeypatch.setattr(trainer, "run_summary", keep)
    config = tiny_config(**{"schedule.kind": "sandwich"})
    train(config, tmp_path / "run", progress=False)
    saved = ofa.load_supernet(tmp_path / "run")
    arch = saved.space.smallest()  # 3x3 kernels: transformed from the 7x7 weights
    assert arch.kernel_sizes[0][0] == 3
    trained_sub, saved_sub = ended["net"].extract(arch), saved.extract(arch)
    pairs = zip(trained_sub.state_dict().items(), saved_sub.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a.cpu(), b), name


def test_sandwich_resolution_random_draws_the_extremes_resolution_per_step():
    config = tiny_config(**{"schedule.kind": "sandwich"})
    net = ofa.create_supernet("mbv3_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20))  # fmt: skip
    phase = resolve_phases(config, net.space)[-1]
    space = phase.space
    big, small = space.largest(), space.smallest()

    def step(s: int, rule: str) -> list:
        schedule = ScheduleConfig(kind="sandwich", sandwich_random=2, sandwich_resolution=rule)
        return subnets_for_step(phase, schedule, step_generator(0, 9, s))

    draws = [step(s, "random") for s in range(40)]
    seen = {"largest": set(), "smallest": set()}
    for archs in draws:
        # The largest keeps every max choice (it is the distillation target, trained first) and
        # the smallest every min one; only their resolution moves.
        assert dataclasses.replace(archs[0], resolution=big.resolution) == big
        assert dataclasses.replace(archs[1], resolution=small.resolution) == small
        seen["largest"].add(archs[0].resolution)
        seen["smallest"].add(archs[1].resolution)
        assert len(archs) == len(set(archs)) and all(a in space for a in archs)
    assert seen == {"largest": {16, 20}, "smallest": {16, 20}}
    # A pure function of the step's seed, like the other draws (DDP ranks and resume agree).
    assert [step(s, "random") for s in range(40)] == draws
    # The random subnets are the same draws as under "extremes", which keeps today's pairs.
    for s, archs in enumerate(draws):
        extremes = step(s, "extremes")
        assert extremes[:2] == [big, small] and extremes[2:] == archs[2:]


def test_sandwich_resolution_is_validated():
    assert tiny_config().schedule.sandwich_resolution == "extremes"
    message = r"schedule.sandwich_resolution='widest': choose extremes or random"
    with pytest.raises(ValueError, match=message):
        tiny_config(**{"schedule.sandwich_resolution": "widest"})


def test_distillation_teacher_choice(monkeypatch, tmp_path):
    from onceforall.training import step as step_module
    from onceforall.training import trainer

    assert tiny_config().distill.resolved_teacher("progressive") == "full"
    assert tiny_config().distill.resolved_teacher("sandwich") == "inplace"
    with pytest.raises(ValueError, match=r"distill.teacher=.best.: choose auto, full, inplace"):
        tiny_config(**{"distill.teacher": "best"})
    with pytest.raises(ValueError, match=r"inplace needs schedule.kind=sandwich"):
        tiny_config(**{"distill.teacher": "inplace"})

    # What each subnet of one step is distilled from.
    seen: list = []
    real_loss = step_module.distillation_loss

    def spy(out, y, target, **kw):
        seen.append(None if target is None else target.clone())
        return real_loss(out, y, target, **kw)

    monkeypatch.setattr(step_module, "distillation_loss", spy)
    config = tiny_config(**{"schedule.kind": "sandwich", "channels_last": False})
    torch.manual_seed(0)
    net = ofa.create_supernet("mbv3_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20), dropout=0.0)  # fmt: skip
    teacher = net.extract(net.space.largest()).eval()
    archs = [net.space.largest(), net.space.smallest()]
    x, y = torch.randn(6, 1, 20, 20), torch.randint(0, 4, (6,))
    with torch.no_grad():
        teacher_out = {r: teacher(resize_batch(x, r)) for r in (16, 20)}
    net.train()

    def step(teacher_net, inplace):
        seen.clear()
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        step_module.train_step(net, net, teacher_net, inplace, archs, x, y, config, opt, scaler,
                               False)  # fmt: skip
        return list(seen)

    assert step(None, False) == [None, None]
    # In place: the smallest learns from the largest's (training-mode) output of the same step.
    targets = step(None, True)
    net.set_active(archs[0])
    with torch.no_grad():
        largest_out = net(x)
    assert targets[0] is None and torch.allclose(targets[1], largest_out, atol=1e-5)
    # Frozen full network: every subnet, the largest included. The sandwich takes it at its
    # largest subnet's resolution (like in place), the progressive schedule at each subnet's.
    targets = step(teacher, False)
    assert [a.resolution for a in archs] == [20, 16]
    for target in targets:
        assert torch.allclose(target, teacher_out[20], atol=1e-5)
    config = tiny_config(**{"channels_last": False})
    targets = step(teacher, False)
    for arch, target in zip(archs, targets, strict=True):
        assert torch.allclose(target, teacher_out[arch.resolution], atol=1e-5)

    # The trainer builds (and saves, for resume) the frozen teacher for a sandwich run with full,
    # and its elastic steps distil from it, not in place.
    calls: list[tuple[bool, bool]] = []
    real_step = trainer.train_step

    def step_spy(model, net, teacher_net, inplace, *args):
        calls.append((teacher_net is not None, inplace))
        return real_step(model, net, teacher_net, inplace, *args)

    monkeypatch.setattr(trainer, "train_step", step_spy)
    run_dir = tmp_path / "run"
    train(tiny_config(**{"schedule.kind": "sandwich", "distill.teacher": "full"}), run_dir,
          progress=False)  # fmt: skip
    assert (run_dir / trainer.TEACHER_FILE).is_file()
    assert (True, False) in calls and (False, True) not in calls
    saved = load_teacher(ofa.load_supernet(run_dir), run_dir / trainer.TEACHER_FILE)
    assert saved.resolutions == tuple(tiny_config().model.resolutions)


def test_teacher_has_batch_norm_of_its_own_at_each_resolution(tmp_path):
    torch.manual_seed(0)
    net = ofa.create_supernet("mbv3_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20), dropout=0.0)  # fmt: skip
    net.train()
    for _ in range(3):  # running statistics that match no resolution in particular
        net.set_active(net.space.largest())
        net(torch.randn(8, 1, 20, 20) * 3 + 1)
    images = [torch.rand(10, 1, 28, 28) for _ in range(2)]
    teacher = FullNetworkTeacher.build(net, lambda: iter(images))
    assert teacher.resolutions == (16, 20)
    x = torch.rand(5, 1, 28, 28)
    for r in (16, 20):
        arch = dataclasses.replace(net.space.largest(), resolution=r)
        expected = recalibrate_bn(net.extract(arch), arch, iter(images))
        xr = resize_batch(x, r)
        torch.testing.assert_close(teacher(xr), expected(xr))
    bn = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    half = len(bn) // 2
    assert not torch.allclose(bn[0].running_mean, bn[half].running_mean)  # 16 px vs 20 px
    with pytest.raises(ValueError, match=r"resolutions \(16, 20\), got \(24, 24\)"):
        teacher(torch.rand(1, 1, 24, 24))

    # Saved and loaded as the trainer does; a one-network file (older runs) serves every
    # resolution with its statistics.
    save_weights(teacher, tmp_path / "teacher.safetensors")
    loaded = load_teacher(net, tmp_path / "teacher.safetensors")
    torch.testing.assert_close(loaded(resize_batch(x, 16)), teacher(resize_batch(x, 16)))
    assert not any(p.requires_grad for p in loaded.parameters())
    single = teacher.nets["20"]
    save_weights(single, tmp_path / "old.safetensors")
    old = load_teacher(net, tmp_path / "old.safetensors")
    for r in (16, 20):
        xr = resize_batch(x, r)
        torch.testing.assert_close(old(xr), single(xr))


def test_subnets_and_lr_are_pure_functions_of_the_step():
    config = tiny_config()
    net = ofa.create_supernet("mbv3_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20))  # fmt: skip
    phase = resolve_phases(config, net.space)[-1]
    phase = dataclasses.replace(phase, config=dataclasses.replace(phase.config, subnets_per_step=3))
    progressive = ScheduleConfig(kind="progressive")
    draw = [subnets_for_step(phase, progressive, step_generator(0, 5, 1, 2)) for _ in "ab"]
    assert len(draw[0]) == 3 and draw[0] == draw[1]
    assert subnets_for_step(phase, progressive, step_generator(0, 5, 1, 3)) != draw[0]
    assert lr_at(0, 100, 0.1, 10) == pytest.approx(0.01)
    assert lr_at(9, 100, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(55, 100, 0.1, 10) == pytest.approx(0.05)
    assert lr_at(100, 100, 0.1, 10) == pytest.approx(0.0)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_is_fused_on_cpu_and_updates_as_the_loop_does(name):
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)) for _ in "ab"]
    nets[1].load_state_dict(nets[0].state_dict())

    def groups(net):
        params = list(net.parameters())
        return [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": 1e-2},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]

    fused = make_optimizer(groups(nets[0]), name, 0.05, momentum=0.9, nesterov=True)
    assert fused.defaults["fused"]
    kw = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
    loop_cls = torch.optim.SGD if name == "sgd" else torch.optim.AdamW
    loop = loop_cls(groups(nets[1]), lr=0.05, foreach=False, **kw)
    for step in range(5):
        x = torch.randn(4, 3, 6, 6)
        for net, opt in zip(nets, (fused, loop), strict=True):
            opt.zero_grad()
            # The batch norm joins at the second step, as an elastic block that the first
            # step's subnets skipped: it has no gradient until then.
            (net if step else net[0])(x).sub(1).square().mean().backward()
            opt.step()
    # Adam divides by the root of tiny second moments, which magnifies float rounding.
    atol = 1e-6 if name == "sgd" else 5e-5
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol)
    if name == "sgd":  # a loop optimizer's state lacks the buffers of parameters never updated
        old = torch.optim.SGD(groups(nets[1]), lr=0.05, momentum=0.9, foreach=False)
        nets[1][0](x).sum().backward()
        old.step()
        fused.load_state_dict(old.state_dict())
        assert all(fused.state[p]["momentum_buffer"] is not None for p in nets[0].parameters())
        nets[0](x).sum().backward()
        fused.step()
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer(groups(nets[0]), "lamb", 0.1)


def test_bn_recalibration_repairs_miscalibrated_statistics(finished_run):
    net = ofa.load_supernet(finished_run)
    data = load_data(DataConfig(**TINY["data"]))
    arch = net.space.smallest()
    sub = net.extract(arch)
    ofa.recalibrate_bn(sub, arch, batches(data.holdout, 64))
    good = accuracy(sub, data.holdout, arch.resolution)
    bns = [m for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:  # statistics of some other distribution
            m.running_mean.add_(3.0)
            m.running_var.mul_(25.0)
    bad = accuracy(sub, data.holdout, arch.resolution)
    before = [m.running_mean.clone() for m in bns]
    ofa.recalibrate_bn(sub, arch, batches(data.holdout, 64))
    assert all(not torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
    repaired = accuracy(sub, data.holdout, arch.resolution)
    assert repaired == pytest.approx(good)
    assert repaired > bad
    # Extraction recalibrates on request: the same statistics, the supernet's left alone.
    supernet_stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    asked = net.extract(arch, calibration=batches(data.holdout, 64), num_batches=1)
    by_hand = ofa.recalibrate_bn(net.extract(arch), arch, batches(data.holdout, 64), 1)
    for (k, a), b in zip(asked.state_dict().items(), by_hand.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not asked.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in supernet_stats.items())
    key = next(k for k in asked.state_dict() if k.endswith("running_mean"))
    assert not torch.equal(asked.state_dict()[key], net.extract(arch).state_dict()[key])
    # On the supernet itself too: it sets the arch active and leaves it in eval mode.
    ofa.recalibrate_bn(net, arch, batches(data.holdout, 64))
    assert net.active_arch == arch and not net.training


def test_a_runs_missing_data_names_its_config_file(finished_run, tmp_path):
    run_dir = tmp_path / "moved"
    shutil.copytree(finished_run, run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["data"].update(dataset="fashion_mnist", root=str(tmp_path / "nowhere"), download=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        FileNotFoundError, match=r"(?s)nowhere.*moved/config\.yaml says.*data\.root"
    ):
        _ = Run.open(run_dir).data


def test_a_run_refuses_data_other_than_it_trained_on(finished_run, tmp_path):
    from onceforall.training.checkpoint import check_data

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    data = Run.open(run_dir).data  # the data it trained on
    trained = list(data.class_names)
    # A class folder added after training: every label would move, and the card misname them.
    added = SimpleNamespace(**{**vars(data), "class_names": ("ant", *trained)})
    with pytest.raises(ValueError, match=r"classes new: \['ant'\].*train a new run"):
        check_data(run_dir, added)
    renamed = SimpleNamespace(**{**vars(data), "class_names": (*trained[:-1], "other")})
    with pytest.raises(ValueError, match=rf"gone: \['{trained[-1]}'\], new: \['other'\]"):
        check_data(run_dir, renamed)
    # Another holdout: images training saw would be scored as held out.
    config = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(config.replace("holdout_size: 64", "holdout_size: 32"))
    with pytest.raises(ValueError, match=r"holdout images 64 -> 32"):
        _ = Run.open(run_dir).data


def test_bn_recalibration_trains_only_batch_norm_and_leaves_the_global_rng():
    net = small_mbv3()  # dropout 0.1 before the classifier
    arch = net.space.smallest()
    images = [torch.randn(8, 1, 24, 24) for _ in range(2)]
    for target in (net.extract(arch), net):
        state = torch.get_rng_state()
        ofa.recalibrate_bn(target, arch, images)
        # No dropout mask drawn: a resumed run draws the masks the uninterrupted one drew.
        assert torch.equal(state, torch.get_rng_state())
        assert not any(m.training for m in target.modules())
    with pytest.raises(ValueError, match="num_batches counts calibration batches"):
        net.extract(arch, num_batches=1)


# ----------------------------------------------------------------------------- configs and CLI


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid_and_shows_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# onceforall ") and path.name in first
    config = load_config(path)
    net = ofa.create_supernet(config.model.family, num_classes=10, in_channels=3,
                              **config.model.family_kwargs())  # fmt: skip
    phases = resolve_phases(config, net.space)
    assert phases[-1].space == net.space.restrict(resolutions=phases[-1].space.resolutions)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _existing_run(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("precious: true\n")
    (run / "supernet.safetensors").write_bytes(b"weights")
    return run, {p.name: p.read_bytes() for p in run.iterdir()}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(bogus=1), "unknown config key bogus"),
        (lambda d: d["data"].update(dataset="imagenet"), "data.dataset"),
        (lambda d: d["model"].update(family="nope"), "model.family"),
        (lambda d: d["schedule"]["phases"].reverse(), "bad phase order"),
        (
            lambda d: d["schedule"].update(
                phases=[
                    d["schedule"]["phases"][0],
                    {"name": "depth", "kernel_sizes": [7], "expand_ratios": [6], "depths": [3, 4]},
                    {"name": "kernel", "expand_ratios": [6], "depths": [3, 4]},
                ]
            ),
            "opens kernel_sizes=(3, 5, 7) after depths became elastic",
        ),
        (lambda d: d["schedule"]["phases"][1].update(kernel_sizes=[4]), "kernel_sizes"),
        (lambda d: d["data"].update(dataset="imagefolder", root="/nonexistent"), "/nonexistent"),
        (lambda d: d.update(batch_size="big"), "batch_size"),
        (lambda d: d["schedule"].update(sandwich_resolution="max"), "sandwich_resolution"),
        (lambda d: d.update(distill={"teacher": "inplace"}), "distill.teacher=inplace"),
    ],
)
def test_config_errors_exit_nonzero_and_leave_the_run_untouched(tmp_path, capsys, change, message):
    data = json.loads(json.dumps(TINY))
    change(data)
    run, before = _existing_run(tmp_path)
    for extra in ([], ["--force"], ["--resume"]):
        code = cli_main(["train", str(_write(tmp_path, data)), "--out", str(run), *extra])
        assert code != 0
        assert message in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_cli_refuses_to_overwrite_and_overrides_apply(tmp_path, capsys):
    run, before = _existing_run(tmp_path)
    cfg = _write(tmp_path, TINY)
    assert cli_main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    missing = cli_main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x")])
    assert missing == 2 and "does not exist" in capsys.readouterr().err
    bad = cli_main(["train", str(cfg), "--out", str(tmp_path / "x"), "schedule.phases.9.lr=1"])
    assert bad == 2 and "schedule.phases.9 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    config = load_config(cfg, ["schedule.phases.1.epochs=2", "data.holdout_size=32"])
    assert config.schedule.phases[1].epochs == 2 and config.data.holdout_size == 32
    # Exponents without a dot, which YAML 1.1 reads as strings, are numbers where one is expected
    # (on the command line and in files); other strings are still refused.
    config = load_config(cfg, ["optimizer.weight_decay=5e-4", "schedule.phases.0.lr=1E-1"])
    assert config.optimizer.weight_decay == 5e-4 and config.schedule.phases[0].lr == 0.1
    for value in ("5e-4x", "nan", "e-4"):
        with pytest.raises(ValueError, match=r"optimizer\.weight_decay: expected a number"):
            load_config(cfg, [f"optimizer.weight_decay={value}"])
    with pytest.raises(ValueError, match="batch_size: expected an integer"):
        load_config(cfg, ["batch_size=1e2"])


def test_run_directory_guards(tmp_path, capsys):
    """--force deletes only a directory that onceforall train started (its checkpoint state, or
    the config it wrote, recognised by its header); the flags and paths that cannot mean
    anything are refused before anything is written."""
    cfg = _write(tmp_path, TINY)
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("model: mine\n")  # common file names, not a run
    (project / "checkpoint.json").write_text('{"step": 3}')
    (project / "main.py").write_text("print('hello')\n")
    before = {p.name: p.read_bytes() for p in project.iterdir()}
    cases = [
        (["--out", str(project), "--force"], "is not a onceforall run"),
        (["--out", str(project), "--resume"], "is not a onceforall run"),
        (["--out", str(tmp_path / "new"), "--resume", "--force"], "pass one of them"),
        (["--out", str(project / "main.py")], "is a file, not a directory"),
        (["--out", str(tmp_path / "new"), "batch_size=5000"], "exceeds the 96 training images"),
        (["--out", str(tmp_path / "new"), "data.synthetic_classes=1"], "at least 2"),
    ]
    for args, message in cases:
        assert cli_main(["train", str(cfg), "--no-progress", *args]) == 2
        assert message in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in project.iterdir()} == before
        assert not (tmp_path / "new").exists()
    # --resume where no run is yet starts one (a job script that always resumes), and says so.
    prepare_run_dir(tmp_path / "new", tiny_config(), resume=True, force=False)
    assert "holds no run yet, so a new one starts there" in capsys.readouterr().err
    prepare_run_dir(tmp_path / "new", tiny_config(), resume=True, force=False)
    assert "no run yet" not in capsys.readouterr().err


def test_force_starts_over_and_a_missing_supernet_is_written_again(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "supernet.safetensors").unlink()
    train(tiny_config(), run, progress=False, resume=True)  # finished: only the file comes back
    _same_weights(finished_run, run)
    with pytest.raises(TrainInterrupted):
        train(tiny_config(), run, progress=False, force=True, stop_after_steps=1)
    assert not (run / "supernet.safetensors").exists() and not (run / "summary.json").exists()


def test_damaged_or_mismatched_run_files_are_named_not_tracebacks(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    weights = run / "supernet.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:100])  # truncated
    with pytest.raises(ValueError, match=r"supernet\.safetensors is not a readable safetensors"):
        ofa.load_supernet(run)
    weights.write_bytes(original)
    config = (run / "config.yaml").read_text()
    # The weights record the model section they were trained with: an edited one is named,
    # whether the weights would load (resolutions: same shapes) or not (another family).
    for old, new, named in (
        ("family: mbv3_small_images", "family: proxyless_small_images",
         "model.family: 'mbv3_small_images' -> 'proxyless_small_images'"),
        ("- 16\n  - 20\n", "- 16\n  - 20\n  - 24\n", "model.resolutions: [16, 20] -> [16, 20, 24]"),
    ):  # fmt: skip
        assert old in config
        (run / "config.yaml").write_text(config.replace(old, new))
        with pytest.raises(ValueError, match=re.escape(f"edited after training ({named})")):
            ofa.load_supernet(run)
    # Other sections may change (the dataset moved to another directory).
    assert "holdout_size: 64" in config
    (run / "config.yaml").write_text(config.replace("holdout_size: 64", "holdout_size: 32"))
    assert ofa.load_supernet(run).space == ofa.load_supernet(finished_run).space
    (run / "config.yaml").write_text(config)
    other = ofa.create_supernet("proxyless_small_images", num_classes=4, in_channels=1)
    with pytest.raises(ValueError, match="holds weights of another network"):
        load_weights(other, weights)
    state = json.loads((run / "checkpoint.json").read_text())
    (run / state["tensors"]).write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="cannot be read") as info:
        train(tiny_config(), run, progress=False, resume=True)
    assert "weights_only" not in str(info.value)  # not torch's advice to unpickle freely


def test_a_checkpoints_optimizer_state_of_another_layout_is_named(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainInterrupted):
        train(tiny_config(), run, progress=False, stop_after_steps=2)
    state = json.loads((run / "checkpoint.json").read_text())
    extra = torch.load(run / state["tensors"], weights_only=True)
    extra["optimizer"]["param_groups"] = extra["optimizer"]["param_groups"][:1]  # another run's
    torch.save(extra, run / state["tensors"])
    with pytest.raises(ValueError, match=r"optimizer state that does not fit phase 'full'"):
        train(tiny_config(), run, progress=False, resume=True)


def test_a_diverged_loss_stops_training_with_the_fix_named(tmp_path, monkeypatch, capsys):
    from onceforall.training import step

    real = step.distillation_loss
    monkeypatch.setattr(step, "distillation_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(FloatingPointError, match=r"diverged.*schedule\.phases\.0\.lr"):
        train(tiny_config(), tmp_path / "run", progress=False)
    cfg = _write(tmp_path, TINY)
    assert cli_main(["train", str(cfg), "--out", str(tmp_path / "cli"), "--no-progress"]) == 2
    assert "training diverged" in capsys.readouterr().err


def test_ctrl_c_exits_130_with_the_resume_hint(tmp_path, monkeypatch, capsys):
    import onceforall.training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onceforall.training, "train", interrupted)
    assert cli_main(["train", str(_write(tmp_path, TINY)), "--out", str(tmp_path / "r")]) == 130
    assert "interrupted; `onceforall train` continues from its last checkpoint with --resume" in (
        capsys.readouterr().err
    )


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_data(DataConfig(dataset="fashion_mnist", root=str(tmp_path)))


# ----------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_the_single_process_arch_sequence(finished_run, tmp_path):
    # Timed checkpoints, due about every other step: the ranks must agree on each one.
    cfg = _write(tmp_path, {**TINY, "checkpoint_minutes": 0.001})
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "onceforall.cli", "train", str(cfg), "--out", str(run),
           "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = [(r["global_step"], r["archs"]) for r in _records(finished_run, "train")]
    ddp = [(r["global_step"], r["archs"]) for r in _records(run, "train")]
    assert ddp == single
    # Both ranks ended with the same weights (DDP averages gradients): rank 0 saved them, and
    # they are a loadable supernet.
    net = ofa.load_supernet(run)
    assert net.space == ofa.load_supernet(finished_run).space
    # The evaluations, their images shared by the ranks, are the saved supernet's, as one process
    # of one thread (each rank's) computes them.
    evals = _records(run, "eval")
    assert [r["phase"] for r in evals] == [p["name"] for p in TINY["schedule"]["phases"]]
    config = tiny_config()
    data = load_data(config.data)
    summary = json.loads((run / "summary.json").read_text())["subnets"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for label, arch in (("largest", net.space.largest()), ("smallest", net.space.smallest())):
            assert summary[label]["arch"] == str(arch)
            for split, dataset in (("holdout", data.holdout), ("test", data.test)):
                expected = ofa.evaluate_subnet(
                    net, arch, dataset, data.holdout,
                    calibration_images=config.bn_calibration_images,
                    batch_size=config.eval_batch_size,
                )  # fmt: skip
                # Recalibrated on both ranks' shares, the statistics equal one process's up to
                # float rounding: at most an image could fall on the other side of a boundary.
                one_image = 100 / len(dataset)
                assert abs(summary[label][f"{split}_accuracy"] - expected) <= one_image + 1e-9
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_process_run_directory_refusals_stop_every_rank(finished_run, tmp_path):
    """Under torchrun every rank checks the run directory before rank 0 changes it: a refusal
    ends both processes with the message (none waits at a barrier for the other) and leaves
    the directory as it was."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("model: mine\n")
    cfg = _write(tmp_path, TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for out, flags, message in (
        (run, [], "--resume"),  # a finished run, neither --resume nor --force
        (project, ["--force"], "is not a onceforall run"),  # --force on someone's project
    ):
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "onceforall.cli", "train", str(cfg), "--out",
               str(out), "--no-progress", *flags]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode != 0
        assert proc.stderr.count(message) >= 2, proc.stderr[-3000:]  # one message per rank
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _train_worker(rank: int, store_file: str, run_dir: str, stop: int | None, resume: bool):
    """One DDP rank of ``train`` on gloo (what torchrun starts, in-process so a test can stop
    it after ``stop`` steps)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store_file}", rank=rank, world_size=2
    )
    try:
        config = tiny_config(**{"model.dropout": 0.3, "checkpoint_minutes": 0})
        with contextlib.suppress(TrainInterrupted):
            train(config, Path(run_dir), progress=False, resume=resume, stop_after_steps=stop)
    finally:
        torch.distributed.destroy_process_group()


def _spawn_train(tmp_path: Path, name: str, stop: int | None = None, resume: bool = False):
    store = tmp_path / f"store-{name}-{int(resume)}"
    torch.multiprocessing.spawn(
        _train_worker, args=(str(store), str(tmp_path / name), stop, resume), nprocs=2, join=True
    )


@pytest.mark.slow
def test_ddp_ranks_draw_their_own_dropout_and_resume_it(tmp_path):
    """Every rank but 0 reseeds its dropout stream after the shared weight initialisation, so
    ranks do not drop the same units of their different images; checkpoints keep every rank's
    stream, so a two-process run stopped mid-phase and resumed reaches the uninterrupted
    weights."""
    _spawn_train(tmp_path, "whole")
    _spawn_train(tmp_path, "resumed", stop=8)
    state = json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())
    extra = torch.load(tmp_path / "resumed" / state["tensors"], weights_only=True)
    ranks = extra["rng_ranks"]
    assert ranks.shape[0] == 2 and torch.equal(ranks[0], extra["rng"])
    assert not torch.equal(ranks[0], ranks[1])
    _spawn_train(tmp_path, "resumed", resume=True)
    _same_weights(tmp_path / "whole", tmp_path / "resumed")


class _Images(torch.utils.data.Dataset):
    """40 random 1 x 8 x 8 images with labels, the same in every process."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(40, 1, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (40,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


class _Counted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc = torch.nn.Linear(64, 16)
        self.bn = torch.nn.BatchNorm1d(16)
        self.out = torch.nn.Linear(16, 3)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(x[0, 0, 0, 0].mul(1e4).round()))  # which batch (its first pixel)
        return self.out(torch.relu(self.bn(self.fc(x.flatten(1)))))


def _recalibrate_and_score(net: _Counted, distributed: bool) -> float:
    images = _Images()
    calibration = batches(images, 7, distributed=distributed)
    recalibrate_bn(net, SimpleNamespace(resolution=8), calibration, distributed=distributed)
    return accuracy(net, images, 8, batch_size=7, distributed=distributed)


def _accuracy_worker(rank: int, store_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store_file}", rank=rank, world_size=2
    )
    try:
        net = _Counted()
        acc = _recalibrate_and_score(net, distributed=True)
        stats = [net.bn.running_mean.tolist(), net.bn.running_var.tolist()]
        Path(out_dir, f"{rank}.json").write_text(
            json.dumps({"acc": acc, "seen": net.seen, "stats": stats})
        )
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_recalibration_and_accuracy_share_the_batches_and_equal_one_process(tmp_path):
    torch.multiprocessing.spawn(
        _accuracy_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True
    )
    net = _Counted()
    expected = _recalibrate_and_score(net, distributed=False)  # one process: every batch
    stats = torch.stack([net.bn.running_mean, net.bn.running_var])
    assert len(net.seen) == 12  # 6 calibration batches, then 6 evaluation batches
    for rank in (0, 1):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got["seen"] == net.seen[:6][rank::2] + net.seen[6:][rank::2]  # every other batch
        torch.testing.assert_close(torch.tensor(got["stats"]), stats, rtol=1e-5, atol=1e-6)
        assert got["acc"] == expected


def test_weight_decay_groups_spare_norms_biases_and_kernel_transforms():
    from onceforall.training.optim import weight_decay_groups

    net = ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1)
    decay, no_decay = weight_decay_groups(net.named_parameters(), 3e-5)
    assert decay["weight_decay"] == 3e-5 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(p.ndim > 1 and ".transforms." not in names[id(p)] for p in decay["params"])
    assert any(".transforms." in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    # Order within each group follows the module's, as optimizer state dicts rely on it.
    order = [id(p) for p in net.parameters()]
    for group in (decay, no_decay):
        idx = [order.index(id(p)) for p in group["params"]]
        assert idx == sorted(idx)
