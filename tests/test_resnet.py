"""OFA-ResNet50D specifics: the paper's space, ResNet-50-D inside it, width sorting of every width
group, the skippable stem, feature-map sizes and latency layers."""

from __future__ import annotations

import json

import pytest
import torch

import onceforall as ofa
from onceforall.static import ResidualBlock
from tests.conftest import randomize_, tiny_config


def _small(**kw) -> ofa.Supernet:
    return ofa.create_supernet("resnet_small_images", num_classes=10, in_channels=1, **kw)


def _arch(resolution: int, depths, e: float, w: float, stem: int = 3) -> ofa.ArchConfig:
    return ofa.ArchConfig(
        resolution,
        depths,
        tuple((3,) * d for d in depths),
        tuple((e,) * d for d in depths),
        (w,) * 6,
        stem,
    )


def test_paper_space_and_resnet50d_inside_it():
    net = ofa.create_supernet("resnet50d", num_classes=1000)
    sp = net.space
    assert (sp.kernel_sizes, sp.expand_ratios, sp.depths) == ((3,), (0.2, 0.25, 0.35), (0, 1, 2))
    assert sp.width_mults == (0.65, 0.8, 1.0) and sp.num_widths == 6
    assert sp.base_depths == (2, 2, 4, 2) and sp.stem_depths == (2, 3)
    assert sp.resolutions == (128, 160, 192, 224)
    # Depths 3, 4, 6, 3, expand 0.25, full width and stem: exactly ResNet-50-D (timm's resnet50d
    # has 25,576,264 parameters).
    r50d = _arch(224, (3, 4, 6, 3), 0.25, 1.0)
    assert net.num_params(r50d) == 25_576_264
    assert 4.3e9 < net.macs(r50d) < 4.4e9
    assert net.macs(sp.smallest()) < net.macs(r50d) < net.macs(sp.largest())
    # Feature maps: stem /2, max pool /2, then stages at 56, 28, 14, 7 for 224 px.
    sizes = [(s.kind, s.in_hw) for s in net.layer_specs(r50d)]
    assert sizes[:4] == [("conv", 224), ("conv", 112), ("conv", 112), ("maxpool", 112)]
    blocks = [hw for kind, hw in sizes if kind == "bottleneck"]
    assert blocks[0] == 56 and blocks[3] == 56 and blocks[7] == 28 and blocks[13] == 14
    assert sizes[-1] == ("head", 7)
    rebuilt = ofa.create_supernet(**net.config)
    assert rebuilt.space == sp and rebuilt.num_params(r50d) == net.num_params(r50d)


def test_small_images_shapes_widths_and_costs():
    net = _small()
    big, small = net.space.largest(), net.space.smallest()
    assert net.widths(big) == (16, 32, 64, 128, 256, 512)
    assert net.widths(small) == (16, 24, 40, 80, 168, 336)  # make_divisible(0.65 * c, 8)
    specs = net.layer_specs(_arch(28, (2, 2, 4, 2), 0.35, 1.0))
    assert [s.in_hw for s in specs if s.kind == "bottleneck"] == [14, 14, 14, 7, 7, 4, 4, 4, 4, 2]
    assert specs[-1].in_hw == 2 and not any(s.kind == "maxpool" for s in specs)
    mids = {s.mid_channels for s in specs if s.kind == "bottleneck"}
    assert mids == {24, 48, 88, 176}  # make_divisible(width * 0.35, 8) per stage
    assert 30e6 < net.macs(_arch(28, (4, 4, 6, 4), 0.35, 1.0)) < 40e6
    x = torch.randn(3, 1, 28, 28)
    for arch in (big, small):
        net.set_active(arch)
        assert net(x).shape == (3, 10)  # any resolution runs


@torch.no_grad()
def test_stem_skip():
    torch.manual_seed(0)
    net = randomize_(_small()).eval()
    deep = net.space.sample(4)
    deep = ofa.ArchConfig(**{**deep.to_dict(), "stem_depth": 3})
    shallow = ofa.ArchConfig(**{**deep.to_dict(), "stem_depth": 2})
    x = torch.randn(2, 1, deep.resolution, deep.resolution)
    assert (net.forward_arch(x, deep) - net.forward_arch(x, shallow)).abs().max() > 1e-3
    assert str(shallow).startswith(f"r{deep.resolution}-s2-")
    # Features: the stem's layers, then bottlenecks (residual blocks ending in a ReLU).
    stem = net.extract(deep).features[:3]
    assert isinstance(stem[1], ResidualBlock) and isinstance(stem[1].act, torch.nn.Identity)
    sub = net.extract(shallow)
    assert not isinstance(sub.features[1], ResidualBlock)
    assert isinstance(sub.features[2].act, torch.nn.ReLU)
    assert (sub(x) - net.forward_arch(x, shallow)).abs().max() <= 1e-5 * net(x).abs().max()
    kinds = [s.kind for s in net.layer_specs(shallow)][:3]
    assert kinds == ["conv", "conv", "bottleneck"]
    assert net.macs(shallow) < net.macs(deep) and net.num_params(shallow) < net.num_params(deep)
    with torch.enable_grad():  # the skipped layer gets no gradient
        net.train().zero_grad(set_to_none=True)
        net.forward_arch(x, shallow).sum().backward()
        assert net.stem_conv1.weight.grad is None and net.stem_conv0.weight.grad is not None
    with pytest.raises(ValueError, match=r"stem_depth=4 is not one of the allowed choices"):
        net.set_active(ofa.ArchConfig(**{**deep.to_dict(), "stem_depth": 4}))


@torch.no_grad()
def test_width_sort_keeps_the_function_and_orders_every_width_group():
    torch.manual_seed(2)
    net = randomize_(_small(), seed=2)
    # Unequal importances for every width group: scale the weights reading each channel.
    for p in [net.stem_conv1.weight, net.stem_conv2.weight, net.classifier.weight] + [
        w for stage in net.stages for block in stage for w in block.input_readers()
    ]:
        p.mul_(torch.rand(p.shape[1], *(1,) * (p.dim() - 2)) * 2)
    net.eval()
    big = net.space.largest()
    narrow = ofa.ArchConfig(**{**big.to_dict(), "width_mults": [0.65] * 6})
    x = torch.randn(2, 1, 28, 28)
    before, before_narrow = net.forward_arch(x, big), net.forward_arch(x, narrow)
    net.sort_channels()
    after, after_narrow = net.forward_arch(x, big), net.forward_arch(x, narrow)
    assert (before - after).abs().max() <= 1e-5 * before.abs().max()
    assert (before_narrow - after_narrow).abs().max() > 1e-3, "narrow widths now keep others"

    def descending(readers):
        imp = sum(w.abs().transpose(0, 1).reshape(w.shape[1], -1).sum(1) for w in readers)
        return bool(torch.all(imp[:-1] >= imp[1:] - 1e-4 * imp.max()))

    assert descending([net.stem_conv1.weight, net.stem_conv2.weight])  # stem middle
    assert descending(net.stages[0][0].input_readers())  # stem output
    for s, stage in enumerate(net.stages):
        nxt = net.stages[s + 1][0].input_readers() if s < 3 else [net.classifier.weight]
        assert descending([w for b in stage[1:] for w in b.input_readers()] + nxt), s
        for block in stage:  # both middle widths
            assert descending([block.project.weight]) and descending([block.conv.weight])
    # Sorting again changes nothing: the order is already by importance.
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.sort_channels()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_latency_layer_specs_are_the_distinct_layers_of_every_arch():
    net = _small(expand_ratios=(0.25,), depths=(0, 1), width_mults=(0.65, 1.0), resolutions=(24,))
    listed = net.latency_layer_specs()
    assert len(listed) == len(set(listed))
    archs = net.space.enumerate()
    assert len(archs) == 2 * 2**6 * 2**4
    seen = {spec for arch in archs for spec in net.layer_specs(arch)}
    assert set(listed) == seen


# The quick preset's ResNet schedule on the tiny synthetic set of tests/conftest.py (3 steps/epoch).
RESNET_PHASES = [
    {"name": "full", "largest_only": True, "epochs": 1, "lr": 0.05, "distill": False},
    {"name": "depth", "expand_ratios": [0.35], "width_mults": [1.0], "epochs": 0.67, "lr": 0.02,
     "subnets_per_step": 2},
    {"name": "expand", "width_mults": [1.0], "epochs": 0.67, "lr": 0.02, "subnets_per_step": 2},
    {"name": "width", "epochs": 0.67, "lr": 0.02, "subnets_per_step": 2},
]  # fmt: skip


def test_progressive_shrinking_with_an_elastic_width_phase(tmp_path):
    from onceforall.training import train
    from onceforall.training.schedule import resolve_phases

    config = tiny_config(
        **{"model.family": "resnet_small_images", "schedule.phases": RESNET_PHASES}
    )
    net = ofa.create_supernet("resnet_small_images", num_classes=4, in_channels=1,
                              resolutions=(16, 20))  # fmt: skip
    phases = resolve_phases(config, net.space)
    full = phases[0].space
    assert full.size == 2 and full.stem_depths == (3,) and full.width_mults == (1.0,)
    assert [p.sort_channels for p in phases] == [False, False, True, True]
    assert not any(p.train_kernel_transforms for p in phases)
    assert phases[-1].space == net.space.restrict(resolutions=(16, 20))
    narrowed = {"name": "width_1", "width_mults": [0.8, 1.0]}
    bad = [*RESNET_PHASES, narrowed]  # a phase may not drop the choices of the one before
    with pytest.raises(ValueError, match=r"phase 4 \(width_1\) has width_mults=\(0.8, 1.0\)"):
        resolve_phases(tiny_config(**{"model.family": "resnet_small_images",
                                      "schedule.phases": bad}), net.space)  # fmt: skip

    run_dir = tmp_path / "run"
    train(config, run_dir, progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    spaces = {p.name: p.space for p in phases}
    assert {r["phase"] for r in steps} == set(spaces)
    assert all(ofa.ArchConfig.parse(a) in spaces[r["phase"]] for r in steps for a in r["archs"])
    widths = {w for r in steps if r["phase"] == "width" for a in r["archs"]
              for w in ofa.ArchConfig.parse(a).width_mults}  # fmt: skip
    assert 0.65 in widths
    trained = ofa.load_supernet(run_dir)
    arch = trained.space.sample(1)
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    trained.set_active(arch)
    assert torch.allclose(trained(x), trained.extract(arch)(x), atol=1e-4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["subnets"]["smallest"]["macs"] == trained.macs(trained.space.smallest())
