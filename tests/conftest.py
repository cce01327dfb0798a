"""Shared test helpers."""

from __future__ import annotations

import pytest
import torch

import onceforall as ofa

# Keep tests single-threaded: on 2 cores, intra-op threads fight pytest's own work for tiny tensors.
torch.set_num_threads(1)


def family_kwargs(name: str) -> dict:
    """Constructor arguments for a test-sized instance of a registered family."""
    in_channels = 1 if "small" in name else 3
    return {"num_classes": 10, "in_channels": in_channels}


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
