"""Shared test helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import onceforall as ofa
from onceforall.config import TrainConfig, config_from_dict

# Keep tests single-threaded: on 2 cores, intra-op threads fight pytest's own work for tiny tensors,
# and pytest-xdist runs one worker per core (pyproject.toml).
torch.set_num_threads(1)

# The file whose tests take longest in all (one demo run that every test of it reads): first, so
# that under pytest-xdist a worker starts it at once while the others share the rest.
_LONGEST_FILE = "test_demo.py"


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: item.path.name != _LONGEST_FILE)  # stable: the rest keep order


# Families too large to test at full width in seconds, and the factor that makes them small.
_TEST_WIDTH_MULT = {"resnet50d": 0.25}


def family_kwargs(name: str) -> dict:
    """Constructor arguments for a test-sized instance of a registered family: ImageNet-size
    families run at small resolutions (the same layers and code paths, a fraction of the time)."""
    if "small" in name:
        return {"num_classes": 10, "in_channels": 1}
    kwargs = {"num_classes": 10, "in_channels": 3, "resolutions": (48, 64)}
    if name in _TEST_WIDTH_MULT:
        kwargs["width_mult"] = _TEST_WIDTH_MULT[name]
    return kwargs


def small_mbv3(**space) -> ofa.Supernet:
    """A small ``mbv3_small_images`` space (44 distinct layers) for latency tests, in eval mode."""
    kw = {"kernel_sizes": (3, 5), "expand_ratios": (3, 6), "depths": (1, 2), "resolutions": (24,)}
    kw.update(space)
    return ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1, **kw).eval()


@torch.no_grad()
def randomize_(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every batch norm non-trivial statistics and affine terms, kernel transformation
    matrices a non-identity part, and residual branches non-zero output, so that equivalence
    tests compare meaningful outputs instead of near-zero ones."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
        elif isinstance(m, torch.nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
    for name, p in net.named_parameters():
        if ".transforms." in name:
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net


@pytest.fixture(params=ofa.list_supernets())
def family(request) -> str:
    return request.param


_CACHE: dict[str, ofa.Supernet] = {}


@pytest.fixture
def supernet(family) -> ofa.Supernet:
    """A randomized supernet of each family, built once per session (tests must not mutate it
    except through set_active; tests that change weights build their own)."""
    if family not in _CACHE:
        torch.manual_seed(0)
        _CACHE[family] = randomize_(ofa.create_supernet(family, **family_kwargs(family))).eval()
    return _CACHE[family]


# ----------------------------------------------------------------------------- a tiny trained run

# Every phase of the paper's schedule (full, kernel, depth x2, expand x2) on a tiny synthetic set:
# 96 training images in batches of 32 -> 3 steps per epoch.
TINY = {
    "model": {"family": "mbv3_small_images", "resolutions": [16, 20], "dropout": 0.0},
    "data": {
        "dataset": "synthetic",
        "synthetic_size": 160,
        "synthetic_resolution": 20,
        "holdout_size": 64,
    },
    "batch_size": 32,
    "eval_batch_size": 64,
    "bn_calibration_images": 64,
    "log_every": 1,
    "num_threads": 1,
    "checkpoint_minutes": 0.0,  # checkpoint after every step: interruption tests need it
    "schedule": {
        "kind": "progressive",
        "phases": [
            {"name": "full", "largest_only": True, "epochs": 1, "lr": 0.05, "distill": False},
            {"name": "kernel", "expand_ratios": [6], "depths": [4], "epochs": 1, "lr": 0.02},
            {"name": "depth_1", "expand_ratios": [6], "depths": [3, 4], "epochs": 0.67,
             "lr": 0.02, "subnets_per_step": 2},
            {"name": "depth_2", "expand_ratios": [6], "epochs": 0.67, "lr": 0.02,
             "subnets_per_step": 2},
            {"name": "expand_1", "expand_ratios": [4, 6], "epochs": 0.67, "lr": 0.02,
             "subnets_per_step": 2},
            {"name": "expand_2", "epochs": 1, "lr": 0.02, "subnets_per_step": 2},
        ],
    },
}  # fmt: skip


def tiny_config(**overrides) -> TrainConfig:
    data = json.loads(json.dumps(TINY))
    for key, value in overrides.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return config_from_dict(data)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run of :data:`TINY` (every phase, ~10 s), shared by tests that only read it."""
    from onceforall.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(), run_dir, progress=False)
    return run_dir


# ----------------------------------------------------------------------------- model cards


def apply_preprocessing(steps: list[dict], image) -> torch.Tensor:
    """Run a model card's ``preprocessing`` steps as a deployment would, on a PIL image (files)
    or a ``C×H×W`` uint8 tensor (in-memory datasets); returns the ``1×C×R×R`` model input."""
    import torch.nn.functional as F
    from torchvision.transforms import functional as TF

    x = image
    for step in steps:
        op = step["op"]
        if op == "decode":
            x = x.convert(step["mode"])
        elif op == "resize_shorter_side":
            x = TF.resize(x, step["size"], antialias=step["antialias"])
        elif op == "center_crop":
            x = TF.center_crop(x, step["size"])
        elif op == "scale":
            x = TF.pil_to_tensor(x) if not isinstance(x, torch.Tensor) else x
            x = x.float() * step["factor"]
        elif op == "resize":
            x = F.interpolate(x[None], size=step["size"], mode=step["interpolation"],
                              align_corners=step["align_corners"],
                              antialias=step["antialias"])[0]  # fmt: skip
        elif op == "normalize":
            x = TF.normalize(x, step["mean"], step["std"])
        elif op == "layout":
            assert step["value"] == "NCHW" and x.shape[0] == step["channels"]
            x = x[None].to(getattr(torch, step["dtype"]))
        else:
            raise AssertionError(f"unknown preprocessing step {op!r}")
    return x
