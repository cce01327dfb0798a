"""Every registered family: forward/backward, extraction, costs, channel sorting, export."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import onceforall as ofa
from onceforall.elastic import (
    ElasticBatchNorm2d,
    ElasticDepthwiseConv,
    ElasticPointwiseConv,
    make_divisible,
)
from onceforall.elastic.utils import _ONE_OP_FROM, Slice, leading, take_slices
from onceforall.export import export_onnx, export_torchscript
from onceforall.static import SqueezeExcite
from onceforall.supernets.resnet import ResNetSupernet
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
    torch.nn.AvgPool2d,
    torch.nn.MaxPool2d,
)


def _input(net: ofa.Supernet, arch: ofa.ArchConfig, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, net.in_channels, arch.resolution, arch.resolution, generator=g)


def _archs(net: ofa.Supernet, n: int, seed: int = 0) -> list[ofa.ArchConfig]:
    g = torch.Generator().manual_seed(seed)
    return [net.space.largest(), net.space.smallest()] + [net.space.sample(g) for _ in range(n)]


def test_registry():
    assert {"mbv3", "mbv3_small_images", "proxyless", "proxyless_small_images"} <= set(
        ofa.list_supernets()
    )
    assert ofa.list_supernets("mbv3_small*") == ["mbv3_small_images"]
    with pytest.raises(ValueError, match="unknown supernet family 'nope'; choose from"):
        ofa.create_supernet("nope", num_classes=10)
    # An option the family lacks is a setting error naming the family and the option.
    with pytest.raises(ValueError, match=r"'resnet_small_images' does not take.*'kernel_sizes'"):
        ofa.create_supernet("resnet_small_images", num_classes=10, kernel_sizes=[3])


def test_info_cli_shows_a_familys_space_costs_and_samples(capsys):
    from onceforall.cli import main as cli_main

    assert cli_main(["info", "proxyless_small_images", "--samples", "2", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    net = ofa.create_supernet("proxyless_small_images", num_classes=10, in_channels=1)
    assert lines[0] == (
        f"supernet proxyless_small_images (10 classes, 1 input channel): {net.space.describe()}"
    )
    g = torch.Generator().manual_seed(3)
    archs = [net.space.largest(), net.space.smallest(), net.space.sample(g), net.space.sample(g)]
    for line, arch in zip(lines[2:], archs, strict=True):
        assert line.split()[-3:] == [f"{net.macs(arch) / 1e6:.2f}", f"{net.num_params(arch):,d}",
                                     str(arch)]  # fmt: skip
    # The family as an option too (as before), the default without either. An ImageNet-size
    # family is shown for ImageNet, as the paper's figures are, unless told otherwise.
    assert cli_main(["info", "--family", "mbv3", "--samples", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("supernet mbv3 (1000 classes, 3 input channels): ")
    imagenet = ofa.create_supernet("mbv3", num_classes=1000, in_channels=3)
    assert out[2].split()[2] == f"{imagenet.num_params(imagenet.space.largest()):,d}"
    assert cli_main(["info", "mbv3", "--num-classes", "10", "--samples", "0"]) == 0
    assert capsys.readouterr().out.startswith("supernet mbv3 (10 classes, 3 input channels)")
    assert cli_main(["info", "--samples", "0"]) == 0
    assert capsys.readouterr().out.startswith(
        "supernet mbv3_small_images (10 classes, 1 input channel)"
    )
    assert cli_main(["info", "mbv3", "--family", "proxyless"]) == 2
    assert "two families given: mbv3 and --family proxyless" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["info", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["info", "--samples", "-1"])
    assert "'-1' is not a whole number >= 0" in capsys.readouterr().err


def test_output_cut_short_by_its_reader_ends_quietly():
    """``onceforall ... | head``: the command stops with the shell's status for a writer whose
    reader left (141), without an error message or a traceback."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "onceforall.cli", "info", "--samples", "3000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"supernet mbv3_small_images")
    proc.stdout.close()  # far more than a pipe holds is still to come
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == b"", err


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


def test_extracted_subnet_takes_the_supernets_dtype_and_is_trainable(family):
    net = randomize_(ofa.create_supernet(family, **family_kwargs(family)), seed=2).double()
    net.requires_grad_(False)  # a frozen supernet (a teacher): its subnets still fine-tune
    arch = net.space.sample(4)
    sub = net.extract(arch)
    assert {p.dtype for p in sub.state_dict().values() if p.is_floating_point()} == {torch.float64}
    assert all(p.requires_grad for p in sub.parameters())
    x = _input(net, arch).double()
    net.set_active(arch)
    with torch.no_grad():
        # Built in float64, not copied through float32: the same function to float64 rounding.
        assert (net.eval()(x) - sub(x)).abs().max() <= 1e-12
    # Calibration batches (float32 images, as loaders give them) take the subnet's dtype.
    images = [torch.randn(4, net.in_channels, 40, 40) for _ in range(2)]
    ofa.recalibrate_bn(sub, arch, images)
    ofa.recalibrate_bn(net, str(arch), images)  # an arch's string, as set_active takes
    assert net.active_arch == arch


def test_forward_refuses_images_with_other_channels(supernet):
    arch = supernet.space.smallest()
    supernet.set_active(arch)
    other = supernet.in_channels + 1
    x = torch.randn(1, other, arch.resolution, arch.resolution)
    with pytest.raises(ValueError, match=rf"takes \(N, {supernet.in_channels}, H, W\).*"
                       rf"in_channels={other}"):  # fmt: skip
        supernet(x)
    with pytest.raises(ValueError, match="image batches"):
        supernet(torch.randn(supernet.in_channels, arch.resolution, arch.resolution))
    supernet.set_active(supernet.space.largest())


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
    # Up to float rounding: sums over reordered channels round differently, and deep residual
    # stacks with randomized batch norms reach large logits.
    assert (before - after).abs().max() <= 1e-5 * max(1.0, before.abs().max())
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


def _reference_kernel(conv: ElasticDepthwiseConv, k: int, c: int) -> torch.Tensor:
    """The paper's elastic kernel written out: centre crop of the next larger (already
    transformed) kernel, then that transition's matrix, 7 -> 5 -> 3."""
    w = conv.weight[:c]
    for big, small in zip(conv.kernel_sizes[:0:-1], conv.kernel_sizes[-2::-1], strict=True):
        if big <= k:
            break
        lo = (big - small) // 2
        crop = w[:, :, lo : lo + small, lo : lo + small].reshape(c, small * small)
        w = F.linear(crop, conv.transforms[f"{big}to{small}"]).reshape(c, 1, small, small)
    return w


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("c", [16, 24])
def test_kernel_transform_matches_reference(k, c):
    """The folded crop-and-transform matrix computes the paper's chain: the same values and
    gradients up to float rounding (one product of sums over 49 terms instead of two over 25
    and 9), for every weight and transform it touches."""
    torch.manual_seed(k + c)
    conv = ElasticDepthwiseConv(24, (3, 5, 7))
    with torch.no_grad():
        for t in conv.transforms.values():
            t.add_(torch.randn(t.shape) * 0.1)
    grad = torch.randn(c, 1, k, k)
    results = []
    for fn in (conv.kernel, lambda k, c: _reference_kernel(conv, k, c)):
        conv.zero_grad(set_to_none=True)
        out = fn(k, c)
        out.backward(grad)
        results.append([out, *(p.grad for p in conv.parameters())])
    for a, b in zip(*results, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    trained = {name for name, t in conv.transforms.items() if t.grad is not None}
    assert trained == {7: set(), 5: {"7to5"}, 3: {"7to5", "5to3"}}[k]


def test_frozen_kernel_transforms_are_folded_once_and_follow_changes():
    """With the matrices frozen, the folded matrix is kept between calls, and any change of a
    transform (an in-place update, a new dtype) is seen at the next call."""
    torch.manual_seed(0)
    conv = ElasticDepthwiseConv(16, (3, 5, 7))
    for t in conv.transforms.values():
        t.requires_grad_(False)
        t.add_(torch.randn(t.shape) * 0.1)
    first = conv.kernel(3, 8)
    assert torch.allclose(first, _reference_kernel(conv, 3, 8), rtol=1e-5, atol=1e-6)
    folded = conv._matrices[3][1]
    conv.kernel(3, 8).sum().backward()  # gradients reach the weight only, through the kept matrix
    assert conv._matrices[3][1] is folded and conv.weight.grad is not None
    assert conv.weight.grad[8:].abs().sum() == 0 and conv.weight.grad[:8].abs().sum() > 0
    with torch.no_grad():
        conv.transforms["5to3"].mul_(2)
    assert torch.allclose(conv.kernel(3, 8), _reference_kernel(conv, 3, 8), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(conv.kernel(3, 8), first)
    conv.double()
    kernel = conv.kernel(3, 8)
    assert kernel.dtype == torch.float64
    assert torch.allclose(kernel, _reference_kernel(conv, 3, 8), rtol=1e-9, atol=1e-12)


def test_trained_kernel_transforms_are_never_served_stale():
    """The fused SGD kernel (the trainer's optimizer) updates the transforms without a version
    count. An evaluation between training steps (no gradients: the folded matrix is asked for)
    must not keep a matrix that later evaluations, or a later phase with the transforms frozen,
    would take for the current one."""

    def matches(conv: ElasticDepthwiseConv, k: int) -> bool:
        with torch.no_grad():  # as an epoch-end validation or an extraction asks
            return torch.allclose(
                conv.kernel(k, 8), _reference_kernel(conv, k, 8), rtol=1e-5, atol=1e-6
            )

    def train(conv: ElasticDepthwiseConv, k: int, steps: int) -> None:
        opt = torch.optim.SGD(conv.parameters(), lr=0.5, momentum=0.9, fused=True)
        for _ in range(steps):
            opt.zero_grad()
            conv.kernel(k, 8).square().sum().backward()
            opt.step()
            assert matches(conv, 3)

    torch.manual_seed(0)
    conv = ElasticDepthwiseConv(16, (3, 5, 7))
    assert matches(conv, 3)
    before = conv.transforms["5to3"].clone()
    train(conv, 3, steps=3)  # the elastic kernel phase, validated between steps
    assert not torch.equal(conv.transforms["5to3"], before)  # the steps did change them
    for t in conv.transforms.values():  # a phase with the transforms frozen: the trained ones
        t.requires_grad_(False)
    assert matches(conv, 3) and matches(conv, 5)
    assert 3 in conv._matrices  # frozen, the folded matrix is kept again
    # Trainable again, trained at 5x5 only: 7 -> 5, the first step of 3's chain too, changes.
    for t in conv.transforms.values():
        t.requires_grad_(True)
    train(conv, 5, steps=2)
    for t in conv.transforms.values():
        t.requires_grad_(False)
    assert matches(conv, 3)


def _blockwise_forward(net: ofa.Supernet, x: torch.Tensor, arch: ofa.ArchConfig) -> torch.Tensor:
    """forward_arch as a plain block-after-block loop: each block slices its own weights."""
    if isinstance(net, ResNetSupernet):
        return _resnet_blockwise_forward(net, x, arch)
    x = net.first_block(net.stem(x), 3, 1.0)
    for stage, ks, es in zip(net.stages, arch.kernel_sizes, arch.expand_ratios, strict=True):
        for block, k, e in zip(stage, ks, es, strict=False):
            x = block(x, k, e)
    if net.last_block is not None:  # fixed: the space's largest choice
        x = net.last_block(x, net.space.kernel_sizes[-1], net.space.expand_ratios[-1])
    x = net.final_expand(x).mean((2, 3), keepdim=True)
    return net.classifier(net.dropout(torch.flatten(net.feature_mix(x), 1)))


def _resnet_blockwise_forward(net, x: torch.Tensor, arch: ofa.ArchConfig) -> torch.Tensor:
    mid_c, stem_c, *stage_c = net.widths(arch)
    x = net.act(net.stem_bn0(net.stem_conv0(x, mid_c)))
    if arch.stem_depth == 3:
        x = x + net.act(net.stem_bn1(net.stem_conv1(x, mid_c)))
    x = net.act(net.stem_bn2(net.stem_conv2(x, stem_c)))
    if net.layout.max_pool:
        x = F.max_pool2d(x, 3, 2, 1)
    for stage, c, es in zip(net.stages, stage_c, arch.expand_ratios, strict=True):
        for block, e in zip(stage, es, strict=False):
            x = block(x, c, make_divisible(round(c * e), 8))
    x = net.dropout(x.mean((2, 3)))
    return F.linear(x, leading(net.classifier.weight, net.num_classes, x.shape[1]),
                    net.classifier.bias)  # fmt: skip


@pytest.mark.parametrize("frozen", [False, True], ids=["trained transforms", "frozen"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_precomputed_block_params_change_nothing(family, channels_last, frozen):
    """forward_arch slices all active weights before running any block (in one autograd op,
    which also transforms the kernels while their matrices are frozen); outputs, gradients and
    batch-norm statistics must be bit-identical to slicing inside each block."""
    torch.manual_seed(0)
    net = randomize_(ofa.create_supernet(family, **family_kwargs(family))).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    for name, p in net.named_parameters():
        p.requires_grad_(not (frozen and ".transforms." in name))
    twin = copy.deepcopy(net)
    for arch in _archs(net, 3, seed=4):
        x = _input(net, arch, n=4).contiguous(memory_format=fmt)
        outs = []
        for model, run in (
            (net, net.forward_arch),
            (twin, lambda x, a: _blockwise_forward(twin, x, a)),
        ):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(1)  # same dropout mask
            out = run(x, arch)
            out.square().mean().backward()
            outs.append(out)
        assert torch.equal(*outs), arch
        for (name, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
            assert (a.grad is None) == (b.grad is None), name
            assert a.grad is None or torch.equal(a.grad, b.grad), name
        for (name, a), b in zip(net.named_buffers(), twin.buffers(), strict=True):
            assert torch.equal(a, b), name


def test_kept_slice_plans_follow_replaced_parameters_and_modules(family):
    """Blocks keep their stated slices between forwards (SlicePlans). Whatever replaces a
    parameter or a submodule, the next forward must use and train the new one, exactly as a
    supernet that never stated any slices does."""
    torch.manual_seed(0)
    kwargs = family_kwargs(family)
    net = randomize_(ofa.create_supernet(family, **kwargs)).train()
    arch = net.space.smallest()  # every elastic weight of the active blocks is sliced
    x = _input(net, arch, n=4)

    def fresh_like(state: dict) -> ofa.Supernet:
        fresh = ofa.create_supernet(family, **kwargs).train()
        fresh.load_state_dict(state)
        return fresh

    def check(model: ofa.Supernet) -> None:
        fresh = fresh_like(model.state_dict())
        outs = []
        for m in (model, fresh):
            m.zero_grad(set_to_none=True)
            torch.manual_seed(1)  # same dropout mask
            out = m.forward_arch(x, arch)
            out.square().mean().backward()
            outs.append(out)
        assert torch.equal(*outs)
        for (name, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
            assert (a.grad is None) == (b.grad is None), name
            assert a.grad is None or torch.equal(a.grad, b.grad), name

    check(net)  # states and keeps the plans
    other = randomize_(ofa.create_supernet(family, **kwargs), seed=1)
    net.load_state_dict({k: v.clone() for k, v in other.state_dict().items()}, assign=True)
    check(net)
    block = net.stages[0][0]
    conv = next(m for m in block.modules() if isinstance(m, ElasticPointwiseConv))
    conv.weight = torch.nn.Parameter(torch.randn_like(conv.weight))
    check(net)
    name = next(n for n, m in block.named_children() if isinstance(m, ElasticPointwiseConv))
    setattr(block, name, copy.deepcopy(getattr(block, name)))  # same values, new objects
    check(net)
    twin = copy.deepcopy(net)
    net.zero_grad(set_to_none=True)
    check(twin)
    assert all(p.grad is None for p in net.parameters())

    weight_name = f"stages.0.0.{name}.weight"
    new = torch.randn_like(net.get_parameter(weight_name))
    net.set_active(arch)
    torch.manual_seed(1)
    got = torch.func.functional_call(net, {weight_name: new}, (x,))
    fresh = fresh_like({**net.state_dict(), weight_name: new})
    torch.manual_seed(1)
    assert torch.equal(got, fresh.forward_arch(x, arch))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_elastic_batchnorm_prefix_matches_batchnorm_and_updates_shared_stats(momentum):
    torch.manual_seed(0)
    bn = ElasticBatchNorm2d(16, momentum=momentum).train()
    ref = torch.nn.BatchNorm2d(8, momentum=momentum).train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        ref.weight.copy_(bn.weight[:8])
        ref.bias.copy_(bn.bias[:8])
    for _ in range(3):  # several steps: the cumulative average (momentum None) must follow too
        x = torch.randn(4, 8, 5, 5)
        assert torch.equal(bn(x), ref(x))
    assert torch.allclose(bn.running_mean[:8], ref.running_mean)
    assert torch.allclose(bn.running_var[:8], ref.running_var)
    assert torch.equal(bn.running_mean[8:], torch.zeros(8))  # the other channels untouched
    assert torch.equal(bn.running_var[8:], torch.ones(8))
    assert int(bn.num_batches_tracked) == 3
    bn.eval(), ref.eval()
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(bn(x), ref(x))


def test_leading_slices_are_exact_and_keep_the_memory_format():
    torch.manual_seed(0)
    for fmt in (torch.contiguous_format, torch.channels_last):
        w = torch.randn(12, 10, 1, 1).contiguous(memory_format=fmt).requires_grad_()
        assert leading(w, 12, 10) is w
        assert leading(w, 6).data_ptr() == w.data_ptr()  # a row prefix stays a view
        for rows, cols in ((12, 4), (5, 4), (5, 10)):
            sub = leading(w, rows, cols)
            assert torch.equal(sub, w[:rows, :cols])
            assert sub.is_contiguous(memory_format=fmt)
            g = torch.randn(sub.shape)
            (grad,) = torch.autograd.grad(sub, w, g)
            expected = torch.zeros(w.shape)
            expected[:rows, :cols] = g
            assert torch.equal(grad, expected)


@pytest.mark.parametrize("many", [True, False], ids=["one op", "ordinary ops"])
def test_take_slices_match_ordinary_slicing_in_one_autograd_op(many):
    """take_slices gives the values, memory formats and gradients of ordinary slicing (full-size
    gradients in each parameter's own memory format), records one op for all of its slices when
    there are many (ordinary ops for a few), and leaves frozen tensors, unused slices and whole
    tensors alone."""
    torch.manual_seed(0)
    conv = torch.randn(12, 10, 3, 3).contiguous(memory_format=torch.channels_last)
    se = torch.randn(8, 16, 1, 1)
    bias, frozen, whole = torch.randn(12), torch.randn(6, 5), torch.randn(4, 3)
    for t in (conv, se, bias, whole):
        t.requires_grad_()
    slices = [
        Slice(conv, (5, 4, 3, 3), True),  # a column slice, copied
        Slice(conv, (12, 7, 3, 3), True),  # the same tensor again: gradients add up
        Slice(se, (6, 16)),  # trailing 1x1 dims dropped
        Slice(bias, (7,)),
        Slice(frozen, (2, 5)),
        Slice(whole, (4, 3)),
        Slice(bias, (3,)),  # unused below
    ]
    if many:  # enough recorded slices for one op (unused below)
        pad = torch.randn(4, 2, requires_grad=True)
        slices += [Slice(pad, (1, 2))] * _ONE_OP_FROM
    expected = [
        conv[:5, :4],
        conv[:, :7],
        se[:6, :, 0, 0],
        bias[:7],
        frozen[:2],
        whole,
        bias[:3],
    ]
    taken = take_slices(slices)
    assert taken[5] is whole
    assert taken[0].is_contiguous(memory_format=torch.channels_last)
    nodes = {t.grad_fn for i, t in enumerate(taken[:7]) if i not in (4, 5)}
    assert len(nodes) == (1 if many else 5) and not taken[4].requires_grad
    taken = taken[:7]
    weights = [torch.randn(t.shape) for t in taken[:6]]
    loss = sum((t * w).sum() for t, w in zip(taken, weights, strict=False))
    ref = sum((t * w).sum() for t, w in zip(expected, weights, strict=False))
    for got, want in zip(taken, expected, strict=True):
        assert torch.equal(got, want)
    params = (conv, se, bias, whole)
    grads = torch.autograd.grad(loss, params)
    ref_grads = torch.autograd.grad(ref, params)
    for p, g, r in zip(params, grads, ref_grads, strict=True):
        assert torch.equal(g, r)
        assert g.stride() == p.stride()  # the parameter's memory format
    with torch.no_grad():
        for got, want in zip(take_slices(slices)[:7], expected, strict=True):
            assert torch.equal(got, want) and got.grad_fn is None


def test_squeeze_excite_loads_subnets_saved_with_conv_weights():
    """Extracted subnets saved before the SE layers became linear (1x1 conv weights of shape
    ``(out, in, 1, 1)``) load into the present layout and compute the same function."""
    torch.manual_seed(0)
    se = SqueezeExcite(16, 8)
    legacy = {k: v.view(*v.shape, 1, 1) if k.endswith("weight") else v
              for k, v in se.state_dict().items()}  # fmt: skip
    restored = SqueezeExcite(16, 8)
    restored.load_state_dict(legacy)
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(restored(x), se(x))
    # The same gate as the reference's 1x1 convs on the pooled map.
    s = x.mean((2, 3), keepdim=True)
    s = F.relu(F.conv2d(s, legacy["reduce.weight"], legacy["reduce.bias"]))
    gate = F.hardsigmoid(F.conv2d(s, legacy["expand.weight"], legacy["expand.bias"]))
    assert torch.allclose(se(x), x * gate, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("kh", "kw", "stride", "hw"),
    [
        (5, 5, 1, (14, 14)),
        (7, 7, 2, (13, 11)),
        (5, 5, 2, (4, 4)),  # maps shorter than the kernel
        (7, 7, 1, (2, 3)),
        (9, 9, 1, (12, 12)),  # two column shifts each side
        (3, 5, 1, (6, 9)),
        (5, 3, 1, (6, 6)),  # three columns: the plain call
        (7, 7, 1, (1, 1)),
    ],
)
def test_depthwise_conv2d_matches_conv2d_and_its_gradients(kh, kw, stride, hw, channels_last):
    from onceforall.elastic.depthwise import depthwise_conv2d

    g = torch.Generator().manual_seed(kh * 100 + kw * 10 + stride)
    c = 6
    x = torch.randn(3, c, *hw, generator=g, dtype=torch.float64)
    w = torch.randn(c, 1, kh, kw, generator=g, dtype=torch.float64)
    if channels_last:  # as Module.to(memory_format=...) makes them (strides of a channels-last
        # (C, 1, kh, kw) weight differ from a contiguous one's in the size-1 dim only)
        x = x.to(memory_format=torch.channels_last)
        w = w.to(memory_format=torch.channels_last)
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = F.conv2d(x1, w1, None, stride, (kh // 2, kw // 2), 1, c)
    out = depthwise_conv2d(x2, w2, stride)
    assert (out.grad_fn.name() == "_DepthwiseConvBackward") == (kw > 3)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-10)
    if kw > 3:  # the assembled gradient comes in the weight's own strides (DDP's bucket views)
        (gw,) = torch.autograd.grad(depthwise_conv2d(x2, w2, stride), w2, grad)
        assert gw.stride() == w2.stride()


def test_depthwise_conv2d_without_weight_gradient_is_plain_conv2d():
    from onceforall.elastic.depthwise import depthwise_conv2d

    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 1, 5, 5)
    out = depthwise_conv2d(x, w)
    assert out.grad_fn.name() == "ConvolutionBackward0"
    with torch.no_grad():
        assert depthwise_conv2d(x, w.requires_grad_()).grad_fn is None


@pytest.mark.parametrize("family", ["mbv3_small_images", "proxyless_small_images", "mbv3"])
def test_fast_depthwise_grad_trains_a_standalone_subnet_alike_and_leaves_it_standard(
    family, supernet
):
    from onceforall.elastic.depthwise import fast_depthwise_grad

    arch = supernet.space.largest()
    a = supernet.extract(arch).train().double()
    b = copy.deepcopy(a)
    channels = family_kwargs(family)["in_channels"]
    x = torch.randn(4, channels, arch.resolution, arch.resolution).double()
    torch.manual_seed(0)  # the same dropout mask for both
    a(x).square().sum().backward()
    with fast_depthwise_grad(b) as model:
        torch.manual_seed(0)
        out = model(x)
        names = {n for n, _ in _grad_fns(out.grad_fn)}
        out.square().sum().backward()
    assert "_DepthwiseConvBackward" in names  # the families' largest kernels are wider than 3
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-9, msg=name)
    assert all("forward" not in vars(m) for m in b.modules())
    torch.jit.script(b)  # a plain torch.nn module again


def _grad_fns(fn, seen=None):
    seen = set() if seen is None else seen
    stack = [fn]
    while stack:
        f = stack.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        yield f.name(), f
        stack.extend(g for g, _ in f.next_functions)


@pytest.mark.parametrize("backward_in_autocast", [False, True], ids=["backward after", "inside"])
def test_mixed_precision_keeps_parameter_precision_in_the_slicing_op(backward_in_autocast):
    """Under autocast (bfloat16 on CPU runs the same dispatch as float16 on CUDA), the one
    slicing op gives the parameters' own precision forward and backward: the folded kernel
    matrices it caches stay float32, so a later float32 forward (an evaluation's extract) works,
    and every gradient reaches its parameter as float32, wherever the backward runs."""
    torch.manual_seed(0)
    net = ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1)
    with torch.no_grad():
        randomize_(net)
    for name, p in net.named_parameters():
        p.requires_grad_(".transforms." not in name)  # frozen, as after the kernel phase
    arch = net.space.smallest()  # 3x3 kernels: every depthwise kernel is a folded product
    net.set_active(arch)
    net.eval()  # batch statistics of a few images would amplify bfloat16's rounding
    x = _input(net, arch, n=8)
    net(x).sum().backward()
    reference = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    for conv in net.modules():
        if isinstance(conv, ElasticDepthwiseConv):
            conv._matrices.clear()  # first folded inside autocast, as after a resume
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(x).float().sum()
        if backward_in_autocast:
            loss.backward()
    if not backward_in_autocast:
        loss.backward()
    matrices = [m for c in net.modules() if isinstance(c, ElasticDepthwiseConv)
                for _, m in c._matrices.values()]  # fmt: skip
    assert matrices and all(m.dtype == torch.float32 for m in matrices)
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert grads.keys() == reference.keys()
    for name, g in grads.items():
        assert g.dtype == torch.float32, name
        # bfloat16 keeps about 3 significant digits
        assert (g - reference[name]).norm() <= 0.05 * reference[name].norm(), name
    with torch.no_grad():
        assert torch.allclose(net.extract(arch)(x), net(x), atol=1e-5)
