"""The reference implementation's supernets (the ``ofa`` package) load into ours and compute the
same function at every subnet; its arch dicts translate both ways."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch

from onceforall.reference import (
    arch_from_reference,
    arch_to_reference,
    from_reference,
    load_reference_state_dict,
)

networks = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _reference(family: str, num_classes: int = 1000, width_mult: float | None = None):
    """A reference supernet as its model zoo builds the released ones, with random weights and
    non-trivial batch-norm statistics and kernel transforms (so equal outputs mean something)."""
    torch.manual_seed(0)
    mb = {"ks_list": [3, 5, 7], "expand_ratio_list": [3, 4, 6], "depth_list": [2, 3, 4]}
    if family == "mbv3":
        net = networks.OFAMobileNetV3(n_classes=num_classes, width_mult=width_mult or 1.0, **mb)
    elif family == "proxyless":
        net = networks.OFAProxylessNASNets(
            n_classes=num_classes, width_mult=width_mult or 1.3, **mb
        )
    else:
        net = networks.OFAResNets(
            n_classes=num_classes,
            depth_list=[0, 1, 2],
            expand_ratio_list=[0.2, 0.25, 0.35],
            width_mult_list=[0.65, 0.8, 1.0],
        )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("_matrix"):
                t.add_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            elif ".bn." in name and name.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.startswith("classifier"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return net.eval()


@pytest.mark.parametrize(
    ("family", "width_mult"),
    [("mbv3", 1.0), ("mbv3", 1.2), ("proxyless", 1.3), ("resnet50d", None)],
)
def test_reference_supernets_load_and_compute_the_same_at_every_subnet(
    family, width_mult, tmp_path
):
    ref = _reference(family, num_classes=20, width_mult=width_mult)
    path = tmp_path / "ofa.pth"
    torch.save({"state_dict": ref.state_dict()}, path)  # the model zoo's format
    ours = from_reference(path, resolutions=(64, 96)).eval()  # family and width read off the file
    assert ours.config.get("width_mult") == (width_mult or 1.0)
    assert ours.classifier.out_features == 20

    g = torch.Generator().manual_seed(2)
    space = ours.space
    archs = [space.largest(), space.smallest(), *(space.sample(g) for _ in range(3))]
    outputs = []
    for arch in archs:
        config = arch_to_reference(space, arch)
        assert arch_from_reference(space, json.loads(json.dumps(config))) == arch
        r = config["image_size"]
        ref.set_active_subnet(**config)
        ours.set_active(arch)
        x = torch.randn(2, 3, r, r, generator=g)
        with torch.no_grad():
            expected, got, static = ref(x), ours(x), ours.extract(arch)(x)
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()
        assert torch.allclose(static, expected, atol=1e-5, rtol=1e-4)
        outputs.append(got)
    # The subnets compute different functions, far beyond the tolerance above.
    assert min((a - b).abs().max() for a, b in itertools.pairwise(outputs)) > 1e-3


def test_reference_arch_dicts_as_its_search_code_writes_them():
    ref = _reference("mbv3")
    ours = from_reference(ref.state_dict())
    space = ours.space
    # The reference's ArchManager.random_sample: per-slot lists (skipped slots hold values
    # too), the resolution as a one-element list ("image_size", a number, elsewhere).
    sample = {"ks": [7, 5, 3, 3] * 5, "e": [6, 4, 3, 3] * 5, "d": [2, 3, 4, 2, 3], "r": [160]}
    arch = arch_from_reference(space, sample)
    assert arch.resolution == 160 and arch.depths == (2, 3, 4, 2, 3)
    assert arch.kernel_sizes[0] == (7, 5) and arch.kernel_sizes[2] == (7, 5, 3, 3)
    assert arch.expand_ratios[1] == (6.0, 4.0, 3.0)
    no_resolution = {k: v for k, v in sample.items() if k != "r"}
    assert arch_from_reference(space, no_resolution).resolution == max(space.resolutions)
    with pytest.raises(ValueError, match="'ks' must be a list of 20"):
        arch_from_reference(space, {**sample, "ks": [3] * 19})
    with pytest.raises(ValueError, match="no 'd'"):
        arch_from_reference(space, {"ks": sample["ks"], "e": sample["e"]})
    with pytest.raises(ValueError, match="kernel"):
        arch_from_reference(space, {**sample, "ks": [4] * 20})


def test_proxyless_last_block_must_be_the_largest():
    ours = from_reference(_reference("proxyless").state_dict())
    config = arch_to_reference(ours.space, ours.space.smallest())
    assert len(config["ks"]) == 20  # the last block is not a slot: it runs at the largest
    with pytest.raises(ValueError, match="last block"):
        arch_from_reference(ours.space, {**config, "ks": [*config["ks"], 3]})
    assert arch_from_reference(ours.space, {**config, "ks": [*config["ks"], 7]}) == (
        ours.space.smallest()
    )


def test_bad_checkpoints_are_refused_with_the_reason(tmp_path):
    ref = _reference("mbv3", num_classes=10)
    sd = ref.state_dict()
    with pytest.raises(FileNotFoundError):
        load_reference_state_dict(tmp_path / "missing.pth")
    pickled = tmp_path / "module.pth"
    torch.save(ref, pickled)  # a whole pickled module: never unpickled
    with pytest.raises(ValueError, match="weights_only"):
        load_reference_state_dict(pickled)
    with pytest.raises(ValueError, match="not a reference Once-for-All supernet"):
        from_reference({"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="use family 'mbv3'"):
        from_reference(sd, family="resnet50d")
    with pytest.raises(ValueError, match="shapes differ"):
        from_reference(sd, width_mult=1.2)
    extra = {**sd, "blocks.1.conv.extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"no place for \(1\): blocks\.1\.conv\.extra\.weight"):
        from_reference(extra, width_mult=1.0)
    # A checkpoint saved from DistributedDataParallel loads too.
    ddp = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, ddp)
    assert set(load_reference_state_dict(ddp)) == set(sd)


def test_import_reference_cli_makes_a_run_that_exports(tmp_path, capsys):
    """`onceforall import-reference` writes a run directory; `export` works on it as on a
    trained run (BN recalibration on the config's data, ONNX equal to torch)."""
    import onnxruntime as ort
    from PIL import Image

    from onceforall.cli import main
    from onceforall.run import Run

    g = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 6), ("val", 2)):
        for cls in ("a", "b", "c"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(tmp_path / "data" / split / cls / f"{i}.png")
    ckpt = tmp_path / "ofa_mbv3_d234_e346_k357_w1.2"
    ref = _reference("mbv3", num_classes=3, width_mult=1.2)
    torch.save({"state_dict": ref.state_dict()}, ckpt)
    run_dir = tmp_path / "run"
    settings = [
        f"data.root={tmp_path / 'data'}",
        "data.image_size=32",
        "data.holdout_size=6",
        "data.num_workers=0",
        "model.resolutions=[32]",
        "eval_batch_size=4",
        "bn_calibration_images=6",
        "device=cpu",
    ]
    config = str(CONFIGS / "imagenet_mbv3.yaml")
    argv = ["import-reference", config, str(ckpt), "--out", str(run_dir)]
    assert main([*argv, *settings]) == 0
    printed = capsys.readouterr().out
    assert "imported the reference OFAMobileNetV3 as mbv3" in printed
    assert "model.width_mult: 1.2, the checkpoint's (the config said 1.0)" in printed
    run = Run.open(run_dir)
    assert run.config.model.width_mult == 1.2  # read off the checkpoint
    arch = run.net.space.smallest()
    ref.set_active_subnet(**arch_to_reference(run.net.space, arch))
    x = torch.randn(1, 3, 32, 32)
    run.net.set_active(arch)
    with torch.no_grad():
        assert torch.allclose(run.net(x), ref(x), atol=1e-5, rtol=1e-4)

    # Never overwritten without --force, and replaced with it (an imported run is a run).
    assert main([*argv, *settings]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, *settings, "--force"]) == 0
    capsys.readouterr()
    # A family the checkpoint is not is refused.
    other = ["import-reference", str(CONFIGS / "imagenet_resnet50d.yaml"), str(ckpt), "--out", "x"]
    assert main([*other, *settings]) == 2
    assert "pass model.family=mbv3" in capsys.readouterr().err
    # Data of other classes or channels than the checkpoint's is refused before anything is
    # written.
    fmnist = [*argv[:-1], str(tmp_path / "fm"), *settings, "data.dataset=fashion_mnist"]
    assert main(fmnist) == 2
    assert "3 classes of 3-channel images but data.dataset=fashion_mnist has 10 of 1" in (
        capsys.readouterr().err
    )
    twenty = tmp_path / "twenty.pth"
    torch.save({"state_dict": _reference("mbv3", num_classes=20).state_dict()}, twenty)
    assert main(["import-reference", config, str(twenty), "--out", "y", *settings]) == 2
    assert "(3 class folders) has 3 of 3" in capsys.readouterr().err
    assert not (tmp_path / "fm").exists() and not Path("y").exists()

    out = tmp_path / "export"
    export = ["export", str(run_dir), "--arch", str(arch), "--format", "onnx", "--out", str(out)]
    assert main([*export, "--no-measure"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["num_classes"] == 3 and card["arch"] == str(arch)
    session = ort.InferenceSession(str(out / card["file"]), providers=["CPUExecutionProvider"])
    sub = run.subnet(arch)
    with torch.no_grad():
        expected = sub(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() <= 1e-5 * abs(expected).max() + 1e-4


def _reference_predictor(image_sizes):
    from ofa.nas.accuracy_predictor import AccuracyPredictor, MobileNetArchEncoder

    torch.manual_seed(0)
    encoder = MobileNetArchEncoder(
        image_size_list=list(image_sizes), ks_list=[3, 5, 7], expand_list=[3, 4, 6],
        depth_list=[2, 3, 4],
    )  # fmt: skip
    pred = AccuracyPredictor(encoder, hidden_size=64, n_layers=3, device="cpu").eval()
    with torch.no_grad():
        pred.base_acc.fill_(0.75)
    return pred


def test_reference_accuracy_predictor_predicts_what_the_reference_predicts():
    from onceforall.reference import predictor_from_reference

    ref = _reference_predictor(range(128, 225, 4))  # the reference tutorial's encoder
    net = from_reference(_reference("mbv3").state_dict())
    space = net.space
    ours = predictor_from_reference(ref.state_dict(), space)
    archs = [space.largest(), space.smallest()]
    g = torch.Generator().manual_seed(0)
    archs += [space.sample(g) for _ in range(48)]
    with torch.no_grad():
        expected = ref.predict_acc([arch_to_reference(space, a) for a in archs]).numpy() * 100
    got = ours.predict(archs)
    assert abs(got - expected).max() < 1e-3 and got.std() > 0.1  # percent, and not constant

    # A space of other resolutions among the predictor's reads the same columns.
    narrow = dataclasses.replace(space, resolutions=(132, 224))
    archs = [narrow.sample(g) for _ in range(16)]
    with torch.no_grad():
        expected = ref.predict_acc([arch_to_reference(narrow, a) for a in archs]).numpy() * 100
    assert (
        abs(predictor_from_reference(ref.state_dict(), narrow).predict(archs) - expected).max()
        < 1e-3
    )

    with pytest.raises(ValueError, match="never saw resolutions"):
        predictor_from_reference(ref.state_dict(), dataclasses.replace(space, resolutions=(130,)))
    with pytest.raises(ValueError, match="image sizes given"):
        predictor_from_reference(ref.state_dict(), space, image_sizes=[128, 224])
    with pytest.raises(ValueError, match="not a reference accuracy predictor"):
        predictor_from_reference(net.state_dict(), space)


def test_import_reference_with_its_accuracy_predictor_searches_without_a_dataset(tmp_path, capsys):
    from PIL import Image

    from onceforall.cli import main

    g = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(tmp_path / "data" / split / cls / f"{i}.png")
    ckpt, pred_file = tmp_path / "ofa.pth", tmp_path / "acc_predictor.pth"
    torch.save({"state_dict": _reference("mbv3", num_classes=2).state_dict()}, ckpt)
    ref_pred = _reference_predictor([32])
    torch.save(ref_pred.state_dict(), pred_file)
    run_dir = tmp_path / "run"
    settings = [
        f"data.root={tmp_path / 'data'}",
        "data.image_size=32",
        "data.holdout_size=4",
        "data.num_workers=0",
        "model.resolutions=[32]",
        "eval_batch_size=4",
        "bn_calibration_images=4",
    ]
    argv = ["import-reference", str(CONFIGS / "imagenet_mbv3.yaml"), str(ckpt)]
    assert main([*argv, "--out", str(run_dir), "--predictor", str(pred_file), *settings]) == 0
    assert "search uses it" in capsys.readouterr().out

    from onceforall.run import Run

    net = Run.open(run_dir).net
    space = net.space
    budget = (net.macs(space.smallest()) + net.macs(space.largest())) // 2
    # Its latency table is built too (the rows report latency): torch's, with few timed calls
    # per layer (onnxruntime's exports every layer first, most of a minute for this space).
    fast = ["--backend", "torch-cpu", "--warmup", "1", "--repeats", "3"]
    assert (
        main(["search", str(run_dir), "--macs", str(budget), "--no-measure", "--json", *fast]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows and not (run_dir / "accuracy_dataset.jsonl").exists()  # nothing evaluated
    for row in rows:
        arch = space.parse(row["arch"])
        with torch.no_grad():
            expected = float(ref_pred.predict_acc([arch_to_reference(space, arch)])) * 100
        assert row["predicted_accuracy"] == pytest.approx(expected, abs=1e-3)
        assert row["macs"] <= budget and row["holdout_accuracy"] is not None
