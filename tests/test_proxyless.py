"""The OFA-ProxylessNAS families' own layout: widths, strides, ReLU6, no squeeze-excite, the head.

What every family must do (forward/backward, extraction, costs, export) is tested over the
registry in test_supernets.py; here is what makes these two families ProxylessNAS.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import onceforall as ofa
from onceforall.static import MBConv, SqueezeExcite


def _arch(net: ofa.Supernet, resolution: int, pick: int) -> ofa.ArchConfig:
    """The largest (pick -1) or smallest (pick 0) arch at ``resolution``."""
    a = net.space.largest() if pick else net.space.smallest()
    return ofa.ArchConfig(resolution, a.depths, a.kernel_sizes, a.expand_ratios)


def _stage_outputs(net: ofa.Supernet, arch: ofa.ArchConfig) -> list[tuple[int, int]]:
    """(channels, side) after the stem, the first block, each elastic stage and the last block,
    read from the layer specs the latency tables use (no forward needed at 224 px)."""
    specs = net.layer_specs(arch)
    stem, first, *blocks = specs[:-2]  # the final expand conv and the head come last

    def out(spec) -> tuple[int, int]:
        return spec.out_channels, -(-spec.in_hw // spec.stride)

    ends = [sum(arch.depths[: s + 1]) - 1 for s in range(len(arch.depths))]
    return [out(stem), out(first)] + [out(blocks[i]) for i in ends] + [out(blocks[-1])]


@pytest.mark.parametrize(
    "resolution, sides",
    [(224, [112, 112, 56, 28, 14, 14, 7, 7]), (128, [64, 64, 32, 16, 8, 8, 4, 4])],
)
def test_imagenet_layout_is_the_references(resolution, sides):
    net = ofa.create_supernet("proxyless", num_classes=1000)
    widths = [32, 16, 24, 40, 80, 96, 192, 320]  # the reference's base_stage_width
    for pick in (0, -1):
        arch = _arch(net, resolution, pick)
        assert _stage_outputs(net, arch) == list(zip(widths, sides, strict=True))
    assert net.final_expand[0].out_channels == net.classifier.in_features == 1280
    # The released supernet (ofa_proxyless_d234_e346_k357_w1.3) widens every layer, head too.
    wide = ofa.create_supernet("proxyless", num_classes=1000, width_mult=1.3)
    assert wide.stem[0].out_channels == 40 and wide.classifier.in_features == 1664
    assert (wide.stages[0][0].out_channels, wide.last_block.out_channels) == (32, 416)
    # OFA-MobileNetV3's space: kernel {3, 5, 7}, expand {3, 4, 6}, depth {2, 3, 4}, 128-224 px.
    assert net.space == ofa.create_supernet("mbv3", num_classes=10).space


@pytest.mark.parametrize(
    "resolution, sides", [(28, [14, 14, 7, 7, 4, 4, 4, 4]), (32, [16, 16, 8, 8, 4, 4, 4, 4])]
)
def test_small_images_layout_ends_at_4x4(resolution, sides):
    net = ofa.create_supernet("proxyless_small_images", num_classes=10, in_channels=1)
    widths = [32, 16, 16, 24, 32, 48, 64, 96]
    arch = _arch(net, resolution, -1)
    assert _stage_outputs(net, arch) == list(zip(widths, sides, strict=True))
    sub = net.extract(arch)
    assert sub.features(torch.zeros(1, 1, resolution, resolution)).shape == (1, 384, 4, 4)
    assert net.space.resolutions == (24, 28, 32)
    # Small enough to train in minutes on a CPU (the quick preset's budget).
    assert net.macs(_arch(net, 28, -1)) < 20e6 and net.macs(_arch(net, 28, 0)) < 5e6


@pytest.mark.parametrize("family", ["proxyless", "proxyless_small_images"])
def test_relu6_everywhere_no_squeeze_excite_and_a_plain_head(family):
    net = ofa.create_supernet(family, num_classes=10, in_channels=3, resolutions=(32,))
    blocks = [net.first_block, *(b for stage in net.stages for b in stage), net.last_block]
    assert all(b.se is None and b.act_name == "relu6" for b in blocks)
    assert not net.first_block.has_expand and not net.first_block.residual  # 32 -> 16, k3 e1
    for arch in (net.space.largest(), net.space.smallest(), net.space.sample(0)):
        sub = net.extract(arch)
        acts = {type(m) for m in sub.modules() if not list(m.children())} - {
            torch.nn.Conv2d,
            torch.nn.BatchNorm2d,
            torch.nn.Linear,
            torch.nn.Identity,
            torch.nn.Dropout,
            torch.nn.Flatten,
            torch.nn.AdaptiveAvgPool2d,
        }
        assert acts == {torch.nn.ReLU6}, acts
        assert not any(isinstance(m, SqueezeExcite) for m in sub.modules())
        # Head: 1x1 conv + BN + ReLU6 before the pool, then only dropout and the classifier.
        assert [type(m) for m in sub.features[-3:]] == [
            torch.nn.Conv2d,
            torch.nn.BatchNorm2d,
            torch.nn.ReLU6,
        ]
        assert [type(m) for m in sub.head] == [torch.nn.Flatten, torch.nn.Dropout, torch.nn.Linear]
        # Every subnet ends with the fixed last block at the largest kernel and expand ratio.
        last = [m for m in sub.features if isinstance(m, MBConv)][-1]
        conv = last.depthwise[0]
        assert conv.kernel_size == (7, 7) and conv.out_channels == 6 * last.expand[0].in_channels
        assert len([m for m in sub.features if isinstance(m, MBConv)]) == arch.num_blocks + 2


def test_last_block_is_fixed_and_trained_in_every_subnet():
    net = ofa.create_supernet("proxyless_small_images", num_classes=10, in_channels=1)
    assert net.last_block.kernel_sizes == (7,) and net.last_block.expand_ratios == (6.0,)
    assert not net.last_block.depthwise.transforms  # one kernel size: nothing to transform
    arch = net.space.smallest()
    net.set_active(arch)
    net(torch.randn(2, 1, arch.resolution, arch.resolution)).sum().backward()
    assert net.last_block.project.weight.grad is not None
    assert any(name.startswith("last_block.") for name in net.state_dict())  # checkpointed


def test_quick_preset_is_the_mbv3_quick_preset_with_the_family_replaced():
    """So `onceforall demo --family proxyless_small_images` trains exactly this preset."""
    from onceforall.config import config_to_dict, load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    ours = load_config(configs / "fashion_mnist_proxyless_quick.yaml")
    demo = load_config(configs / "fashion_mnist_quick.yaml", [f"model.family={ours.model.family}"])
    assert ours.model.family == "proxyless_small_images"
    assert config_to_dict(ours) == config_to_dict(demo)
