"""Every registered family: forward/backward, extraction, costs, channel sorting, export."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import onceforall as ofa
from onceforall.elastic import ElasticDepthwiseConv
from onceforall.export import export_onnx, export_torchscript
from tests.conftest import family_kwargs, randomize_

STANDARD_LEAVES = (
    torch.nn.Conv2d,
    torch.nn.BatchNorm2d,
    torch.nn.Linear,
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.Hardswish,
    torch.nn.Hardsigmoid,
    torch.nn.Identity,
    torch.nn.Dropout,
    torch.nn.Flatten,
    torch.nn.AdaptiveAvgPool2d,
)


def _input(net: ofa.Supernet, arch: ofa.ArchConfig, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, net.in_channels, arch.resolution, arch.resolution, generator=g)


def _archs(net: ofa.Supernet, n: int, seed: int = 0) -> list[ofa.ArchConfig]:
    g = torch.Generator().manual_seed(seed)
    return [net.space.largest(), net.space.smallest()] + [net.space.sample(g) for _ in range(n)]


def test_registry():
    assert {"mbv3", "mbv3_small_images"} <= set(ofa.list_supernets())
    assert ofa.list_supernets("mbv3_small*") == ["mbv3_small_images"]
    with pytest.raises(ValueError, match="unknown supernet family 'nope'; choose from"):
        ofa.create_supernet("nope", num_classes=10)


def test_public_api_example():
    net = ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1)
    arch = net.space.sample(torch.Generator().manual_seed(0))
    net.set_active(arch)
    y = net(torch.randn(2, 1, arch.resolution, arch.resolution))
    assert y.shape == (2, 10)
    sub = net.extract(arch)
    assert isinstance(sub, torch.nn.Module)
    assert ofa.ArchConfig.parse(str(arch)) == arch
    assert net.macs(arch) > 0 and net.num_params(arch) > 0


def test_forward_backward_reaches_only_active_weights(family):
    net = ofa.create_supernet(family, **family_kwargs(family)).train()
    for arch in _archs(net, 2):
        net.set_active(arch)
        net.zero_grad(set_to_none=True)
        out = net(_input(net, arch, 4))
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        out.logsumexp(1).mean().backward()
        for s, stage in enumerate(net.stages):
            for b, block in enumerate(stage):
                has_grad = block.project.weight.grad is not None
                assert has_grad == (b < arch.depths[s]), (arch, s, b)
        assert net.classifier.weight.grad is not None


def test_kernel_transform_matrices_receive_gradients_and_start_as_centre_crop():
    conv = ElasticDepthwiseConv(8, (3, 5, 7))
    w = conv.weight.detach()
    assert torch.equal(conv.kernel(5).detach(), w[:, :, 1:6, 1:6])
    assert torch.equal(conv.kernel(3).detach(), w[:, :, 2:5, 2:5])
    assert conv.kernel(7) is conv.weight
    conv(torch.randn(2, 8, 9, 9), 3).sum().backward()
    assert conv.transforms["7to5"].grad is not None and conv.transforms["5to3"].grad is not None
    with torch.no_grad():
        conv.transforms["5to3"].add_(torch.randn(9, 9))
    assert not torch.allclose(conv.kernel(3).detach(), w[:, :, 2:5, 2:5])


def test_set_active_validates(supernet):
    with pytest.raises(ValueError, match="outside the search space"):
        supernet.set_active("r999-k3e3,k3e3_k3e3,k3e3_k3e3,k3e3_k3e3,k3e3_k3e3,k3e3")
    arch = supernet.set_active(str(supernet.space.smallest()))
    assert supernet.active_arch == arch == supernet.space.smallest()
    supernet.set_active(supernet.space.largest())


def test_extraction_matches_supernet_for_50_random_archs(supernet):
    for arch in _archs(supernet, 48, seed=1):
        supernet.set_active(arch)
        x = _input(supernet, arch, seed=len(str(arch)))
        with torch.no_grad():
            ref = supernet(x)
            sub = supernet.extract(arch)
            out = sub(x)
        assert ref.abs().max() > 1e-2, "outputs too small to compare meaningfully"
        assert (ref - out).abs().max() <= 1e-5, arch
    supernet.set_active(supernet.space.largest())


def test_extracted_subnet_is_standalone(supernet):
    arch = supernet.space.sample(3)
    sub = supernet.extract(arch)
    assert ofa.ArchConfig.parse(sub.arch) == arch and not sub.training
    for m in sub.modules():
        assert not any(
            type(m).__module__.startswith(f"onceforall.{p}") for p in ("elastic", "supernets")
        )
        if not list(m.children()):
            assert isinstance(m, STANDARD_LEAVES), type(m)
    sub_ptrs = {p.data_ptr() for p in sub.state_dict().values()}
    assert not sub_ptrs & {p.data_ptr() for p in supernet.state_dict().values()}


def test_costs_match_flop_counter_and_parameter_count(supernet):
    for arch in _archs(supernet, 3, seed=2):
        sub = supernet.extract(arch)
        with FlopCounterMode(display=False) as counter:
            sub(_input(supernet, arch, n=1))
        assert supernet.macs(arch) == counter.get_total_flops() // 2, arch
        assert supernet.num_params(arch) == sum(p.numel() for p in sub.parameters()), arch
    assert supernet.macs(supernet.space.smallest()) < supernet.macs(supernet.space.largest())


def test_sort_channels_keeps_the_function_and_nests_widths(family):
    torch.manual_seed(1)
    net = randomize_(ofa.create_supernet(family, **family_kwargs(family)), seed=1)
    with torch.no_grad():  # unequal importances, so the sort has something to do
        for stage in net.stages:
            for block in stage:
                block.project.weight.mul_(torch.rand(block.project.weight.shape[1], 1, 1) * 2)
    net.eval()
    big = net.space.largest()
    mid = net.space.sample(5)
    x, xm = _input(net, big), _input(net, mid)
    with torch.no_grad():
        before, before_mid = net.forward_arch(x, big), net.forward_arch(xm, mid)
        net.sort_channels()
        after, after_mid = net.forward_arch(x, big), net.forward_arch(xm, mid)
    assert (before - after).abs().max() <= 1e-5
    assert (before_mid - after_mid).abs().max() > 1e-4, "narrower widths should now differ"
    for stage in net.stages:
        for block in stage:
            imp = block.project.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])


def test_torchscript_and_onnx_exports_match(supernet, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    arch = supernet.space.sample(11)
    sub = supernet.extract(arch)
    x = _input(supernet, arch, n=3)
    with torch.no_grad():
        ref = sub(x)
    scripted = torch.jit.load(str(export_torchscript(sub, tmp_path / "m.pt")))
    with torch.no_grad():
        assert (scripted(x) - ref).abs().max() <= 1e-5
    path = export_onnx(
        sub, tmp_path / "m.onnx", in_channels=supernet.in_channels, resolution=arch.resolution
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=1e-4)


def test_mbv3_width_multiplier_and_paper_space():
    net = ofa.create_supernet("mbv3", num_classes=1000)
    wide = ofa.create_supernet("mbv3", num_classes=1000, width_mult=1.2)
    space = net.space
    assert (space.kernel_sizes, space.expand_ratios, space.depths) == (
        (3, 5, 7),
        (3, 4, 6),
        (2, 3, 4),
    )
    assert space.resolutions == (128, 160, 192, 224) and space.num_stages == 5
    assert net.num_params(space.largest()) < wide.num_params(space.largest())
    assert wide.config["width_mult"] == 1.2
    rebuilt = ofa.create_supernet(**copy.deepcopy(wide.config))
    assert rebuilt.num_params(space.largest()) == wide.num_params(space.largest())
