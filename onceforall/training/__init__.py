"""Training: progressive shrinking, distillation, BN recalibration, checkpoints, DDP."""

from onceforall.training.bn import accuracy, evaluate_subnet, recalibrate_bn
from onceforall.training.checkpoint import load_supernet
from onceforall.training.trainer import TrainInterrupted, train

__all__ = [
    "TrainInterrupted",
    "accuracy",
    "evaluate_subnet",
    "load_supernet",
    "recalibrate_bn",
    "train",
]
