"""A finished training run as one object: its config, supernet, data and BN-recalibrated subnets.

``onceforall search``, ``export``, ``finetune`` and ``demo`` all start from a run directory; this
is the one place that knows its layout and turns it into ready-to-use pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from onceforall.arch import ArchConfig
from onceforall.config import TrainConfig, config_to_dict, load_config
from onceforall.data import DataBundle, load_data
from onceforall.supernets import Supernet
from onceforall.training.bn import accuracy, batches, recalibrate_bn
from onceforall.training.checkpoint import (
    CONFIG_FILE,
    STATE_FILE,
    SUPERNET_FILE,
    TEACHER_FILE,
    check_data,
    diff_keys,
    load_supernet,
    load_weights,
)
from onceforall.training.teacher import FullNetworkTeacher, load_teacher

__all__ = ["Run", "train_or_reuse"]


@dataclass
class Run:
    """A finished run directory (``onceforall train ... --out DIR``).

    Attributes:
        path: the run directory.
        config: its resolved training config.
        device: where subnets are evaluated.
    """

    path: Path
    config: TrainConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "cpu") -> Run:
        """Open a finished run.

        Raises:
            FileNotFoundError: no run there, or it is not finished (the message says what to do).
        """
        path = Path(path)
        if not path.is_dir():
            what = "is a file, not a run directory" if path.exists() else "does not exist"
            raise FileNotFoundError(
                f"{path} {what}; give the --out directory of `onceforall train CONFIG --out "
                "RUN_DIR`"
            )
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a onceforall run directory (no {CONFIG_FILE}); train one with "
                "`onceforall train CONFIG --out RUN_DIR`"
            )
        run = cls(path, load_config(path / CONFIG_FILE), torch.device(device))
        run.net  # noqa: B018 - fail now, with load_supernet's message, if the run is unfinished
        return run

    @cached_property
    def net(self) -> Supernet:
        """The trained supernet (eval mode)."""
        return load_supernet(self.path, device=self.device)

    @cached_property
    def data(self) -> DataBundle:
        """The run's dataset, split exactly as in training (same holdout).

        Raises:
            FileNotFoundError: the data is not where the run's ``config.yaml`` says, with the fix
                for a trained run (its config is edited, not overridden).
        """
        try:
            data = load_data(self.config.data)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{exc}\nThis run reads its data as {self.path / CONFIG_FILE} says: if the data "
                "moved, set data.root (or data.download) there; the run's commands take no "
                "data.root=DIR override (the same data gives the same split)."
            ) from exc
        check_data(self.path, data)  # the data it trained on, not what the folder holds now
        return data

    def parse(self, arch: ArchConfig | str) -> ArchConfig:
        """An arch of this run's space, from an :class:`ArchConfig` or its string.

        Raises:
            ValueError: malformed, or outside the space (naming the field and the choices).
        """
        return self.net.space.validate(arch)

    def calibration_batches(self, num_images: int | None = None):
        """The fixed holdout slice every subnet's batch norm is recalibrated on."""
        n = self.config.bn_calibration_images if num_images is None else num_images
        return batches(self.data.holdout, self.config.eval_batch_size, n)

    def subnet(self, arch: ArchConfig | str, *, weights: Path | None = None) -> nn.Module:
        """The standalone subnet at ``arch``, BN-recalibrated, in eval mode.

        Args:
            weights: a fine-tuned subnet's safetensors (``onceforall finetune``) to load instead
                of the supernet's weights; those already carry their own statistics.
        """
        arch = self.parse(arch)
        sub = self.net.extract(arch)
        if weights is not None:
            return load_weights(sub, weights).eval()
        return recalibrate_bn(sub, arch, self.calibration_batches())

    def teacher(self) -> nn.Module:
        """The full network as trained in the first phase (the distillation teacher), with batch
        norm of its own at each resolution of the space."""
        if (self.path / TEACHER_FILE).is_file():
            return load_teacher(self.net, self.path / TEACHER_FILE)
        # A run whose schedule never distilled: the trained supernet's largest subnet.
        return FullNetworkTeacher.build(self.net, self.calibration_batches)

    def accuracy(self, model: nn.Module, arch: ArchConfig | str, split: str = "holdout") -> float:
        """Top-1 accuracy (%) of a standalone subnet on ``holdout`` or ``test``."""
        if split not in ("holdout", "test"):
            raise ValueError(f"split={split!r}: choose holdout or test")
        dataset = self.data.holdout if split == "holdout" else self.data.test
        resolution = self.parse(arch).resolution
        return accuracy(model, dataset, resolution, batch_size=self.config.eval_batch_size)

    @property
    def supernet_file(self) -> Path:
        return self.path / SUPERNET_FILE


def train_or_reuse(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    fix: str = "choose another --out",
) -> tuple[Run, str]:
    """The finished run of ``config`` in ``run_dir``: reused if it finished with the same config,
    resumed if interrupted, trained otherwise (the demo and the benchmarks start here).

    Args:
        fix: what the error messages tell the user to do instead (e.g. which option to change).

    Returns:
        The run and what happened to it: ``"reused ..."``, ``"resumed ..."`` or ``"trained ..."``.

    Raises:
        FileExistsError: ``run_dir`` holds a run of another config (a finished run of another
            preset or family must never stand in for the one asked for), or files that are no run.
    """
    # The trainer imports this module's neighbours.
    from onceforall.training.trainer import train, with_load_size

    run_dir = Path(run_dir)
    if (run_dir / SUPERNET_FILE).is_file():
        run = Run.open(run_dir)
        wanted = with_load_size(config, run_dir)  # what training recorded of the same config
        diff = diff_keys(config_to_dict(run.config), config_to_dict(wanted))
        if diff:
            raise FileExistsError(
                f"{run_dir} holds a run of another config (keys: {', '.join(diff)}); {fix}"
            )
        return run, f"reused the finished run in {run_dir} (training skipped)"
    resume = (run_dir / STATE_FILE).is_file()
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise FileExistsError(f"{run_dir} exists but holds no onceforall checkpoint; {fix}")
    print(f"{'resuming' if resume else 'training'} the supernet in {run_dir}", flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    train(config, run_dir, resume=resume, progress=progress)
    return Run.open(run_dir), f"{'resumed' if resume else 'trained'} {run_dir}"
