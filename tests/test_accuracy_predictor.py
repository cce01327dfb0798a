"""Accuracy dataset (sampling, evaluation, cache, resume, shards) and the accuracy predictor."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import onceforall as ofa
from onceforall.arch import SearchSpace
from onceforall.data import DataConfig, load_data
from onceforall.predictors.accuracy import (
    PREDICTOR_META,
    AccuracyPredictor,
    ensure_predictor,
    fit_accuracy_predictor,
)
from onceforall.predictors.accuracy_dataset import (
    DATASET_FILE,
    build_accuracy_dataset,
    sample_archs,
)

SPACE = ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1).space
SETTINGS = {"calibration_images": 32, "eval_images": 48, "batch_size": 16}


@pytest.fixture(scope="module")
def tiny():
    """An untrained supernet over a small space, and synthetic 20 px data."""
    torch.manual_seed(0)
    net = ofa.create_supernet(
        "mbv3_small_images",
        num_classes=4,
        in_channels=1,
        resolutions=(16, 20),
        kernel_sizes=(3, 5),
        expand_ratios=(3, 6),
        depths=(1, 2),
    ).eval()
    data = load_data(
        DataConfig(
            dataset="synthetic", holdout_size=64, synthetic_size=192, synthetic_resolution=20
        )
    )
    return net, data


def _synthetic_target(x: torch.Tensor, seed: int = 0) -> np.ndarray:
    """Linear-plus-interaction function of the encoding, in 'accuracy percent' units."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(x.shape[1], generator=g) * 0.3
    u, v = torch.randn(2, x.shape[1], generator=g) * 0.05
    return (85 + x @ w + (x @ u) * (x @ v)).double().numpy()


# ----------------------------------------------------------------------------- sampling, encoding


def test_sample_archs_prefix_stable_distinct_with_extremes():
    archs = sample_archs(SPACE, 50, seed=3)
    assert archs[:2] == [SPACE.largest(), SPACE.smallest()]
    assert len(set(archs)) == 50
    assert sample_archs(SPACE, 80, seed=3)[:50] == archs
    assert sample_archs(SPACE, 50, seed=4) != archs
    tiny_space = SearchSpace(1, (3,), (3,), (1, 2), (16,))
    with pytest.raises(ValueError, match="size of the space"):
        sample_archs(tiny_space, tiny_space.size + 1)


def test_predict_rejects_arch_outside_space():
    pred = AccuracyPredictor(SPACE, hidden=(8,))
    other = ofa.create_supernet("mbv3_small_images", num_classes=10, resolutions=(40,)).space
    with pytest.raises(ValueError, match="resolution=40"):
        pred.predict([other.largest()])


# ----------------------------------------------------------------------------- the predictor


def test_predictor_recovers_synthetic_function():
    archs = sample_archs(SPACE, 1000, seed=0)
    y = _synthetic_target(SPACE.encode_batch(archs))
    pred = fit_accuracy_predictor(SPACE, archs, y, test_fraction=0.2, seed=0)
    m = pred.metrics
    assert (m["n_train"], m["n_test"]) == (800, 200)
    assert m["rmse"] < 0.2 * y.std(), m
    assert m["kendall_tau"] > 0.88, m
    assert pred.predict(archs[:5]).shape == (5,)
    with pytest.raises(ValueError, match=r"3 archs are too few.*onceforall search --samples N"):
        fit_accuracy_predictor(SPACE, archs[:3], y[:3], test_fraction=0.2)


def test_fit_is_deterministic_under_seed():
    archs = sample_archs(SPACE, 200, seed=1)
    y = _synthetic_target(SPACE.encode_batch(archs))
    kw = {"hidden": (32, 32), "epochs": 10}
    a = fit_accuracy_predictor(SPACE, archs, y, seed=5, **kw).predict(archs)
    b = fit_accuracy_predictor(SPACE, archs, y, seed=5, **kw).predict(archs)
    c = fit_accuracy_predictor(SPACE, archs, y, seed=6, **kw).predict(archs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_an_archs_prediction_does_not_depend_on_its_batch():
    """A search scores archs in populations and reports its picks alone: the two must agree (a
    float32 MLP rounds differently per batch size, by about 1e-7 relative)."""
    archs = sample_archs(SPACE, 300, seed=3)
    y = 85 + 5 * _synthetic_target(SPACE.encode_batch(archs))
    pred = AccuracyPredictor(SPACE, hidden=(64, 64)).fit(archs, y, epochs=3)
    batched = pred.predict(archs)
    alone = np.array([pred.predict([a])[0] for a in archs[:40]])
    np.testing.assert_allclose(alone, batched[:40], rtol=0, atol=1e-11)
    # A new fit, or new weights loaded in place, is what the next prediction uses.
    pred.fit(archs, y[::-1].copy(), epochs=3)
    refit = pred.predict(archs)
    assert np.abs(refit - batched).max() > 1e-3
    with torch.no_grad():
        pred.mlp[0].bias.add_(1.0)
    assert np.abs(pred.predict(archs) - refit).max() > 1e-6


def test_save_load_round_trip(tmp_path):
    archs = sample_archs(SPACE, 100, seed=2)
    y = _synthetic_target(SPACE.encode_batch(archs))
    pred = fit_accuracy_predictor(SPACE, archs, y, hidden=(16, 16), epochs=5)
    pred.save(tmp_path)
    meta = json.loads((tmp_path / PREDICTOR_META).read_text())
    assert meta["encoding_size"] == SPACE.encoding_size and "rmse" in meta["metrics"]
    loaded = AccuracyPredictor.load(tmp_path, SPACE)
    np.testing.assert_array_equal(loaded.predict(archs), pred.predict(archs))
    assert loaded.metrics == pred.metrics


def test_load_rejects_other_space(tmp_path):
    AccuracyPredictor(SPACE, hidden=(8,)).save(tmp_path)
    shallower = SPACE.restrict(depths=(2, 3))
    size = SPACE.encoding_size
    with pytest.raises(ValueError, match=rf"encoded as {size} features.*delete accuracy_predictor"):
        AccuracyPredictor.load(tmp_path, shallower)
    same_size = dataclasses.replace(SPACE, resolutions=(20, 28, 36))  # other meaning, same size
    with pytest.raises(ValueError, match="another supernet or space"):
        AccuracyPredictor.load(tmp_path, same_size)
    with pytest.raises(FileNotFoundError, match="ensure_predictor"):
        AccuracyPredictor.load(tmp_path / "nowhere", SPACE)


# ----------------------------------------------------------------------------- the dataset


@pytest.mark.parametrize("stream", [False, True], ids=["cached", "streamed"])
def test_dataset_values_equal_evaluate_subnet(tiny, tmp_path, monkeypatch, stream):
    net, data = tiny
    if stream:  # images too large to cache are read and resized for every subnet instead
        monkeypatch.setattr("onceforall.predictors.accuracy_dataset._CACHE_BYTES", 0)
    ds = build_accuracy_dataset(net, data, tmp_path, 4, **SETTINGS)
    assert ds.complete and ds.evaluated == 4 and ds.seconds_per_subnet > 0
    expected = [
        ofa.evaluate_subnet(
            net, a, data.holdout, data.holdout, calibration_images=32, batch_size=16, limit=48
        )
        for a in ds.archs
    ]
    assert ds.accuracies.tolist() == expected


def test_dataset_resumes_and_grows(tiny, tmp_path, monkeypatch):
    net, data = tiny
    first = build_accuracy_dataset(net, data, tmp_path, 8, limit=3, **SETTINGS)
    assert (first.evaluated, len(first), first.complete) == (3, 3, False)
    # A record cut off mid-write by a kill is dropped and measured again.
    path = tmp_path / DATASET_FILE
    path.write_text(path.read_text() + '{"arch": "r16-k3')
    resumed = build_accuracy_dataset(net, data, tmp_path, 8, **SETTINGS)
    assert (resumed.evaluated, len(resumed), resumed.complete) == (5, 8, True)
    np.testing.assert_array_equal(resumed.accuracies[:3], first.accuracies)
    grown = build_accuracy_dataset(net, data, tmp_path, 10, **SETTINGS)
    assert (grown.evaluated, len(grown)) == (2, 10)
    assert grown.archs[:8] == resumed.archs
    assert build_accuracy_dataset(net, data, tmp_path, 10, **SETTINGS).evaluated == 0
    assert len(path.read_text().splitlines()) == 10
    # A complete dataset is only read: a run directory the user may not write to serves it.
    real_open = open

    def read_only(file, mode="r", *args, **kwargs):
        if set(mode) & set("wax+"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    assert len(build_accuracy_dataset(net, data, tmp_path, 10, **SETTINGS)) == 10


def test_dataset_refuses_to_mix_settings(tiny, tmp_path):
    net, data = tiny
    build_accuracy_dataset(net, data, tmp_path, 2, **SETTINGS)
    # The message names the command line's options too, as `onceforall search` users set them.
    match = r"calibration_images=32 \(now 16\).*\(onceforall search: --calibration-images 32\)"
    with pytest.raises(ValueError, match=match):
        build_accuracy_dataset(net, data, tmp_path, 3, **{**SETTINGS, "calibration_images": 16})
    with pytest.raises(ValueError, match="seed"):
        build_accuracy_dataset(net, data, tmp_path, 3, seed=1, **SETTINGS)
    other_file = tmp_path / "other.jsonl"  # another path keeps both
    assert build_accuracy_dataset(net, data, other_file, 2, seed=1, **SETTINGS).evaluated == 2


def test_dataset_shards_cover_every_arch_once_and_merge(tiny, tmp_path):
    net, data = tiny
    n = 7
    whole = build_accuracy_dataset(net, data, tmp_path / "whole", n, **SETTINGS)
    sharded = tmp_path / "sharded"
    r0 = build_accuracy_dataset(net, data, sharded, n, rank=0, world=2, **SETTINGS)
    r1 = build_accuracy_dataset(net, data, sharded, n, rank=1, world=2, **SETTINGS)
    assert (r0.evaluated, r1.evaluated) == (4, 3)
    assert not r0.complete and r1.complete  # rank 1 ran last and sees both shards
    shards = sorted(sharded.glob("accuracy_dataset.rank*-of-2.jsonl"))
    assert len(shards) == 2
    recorded = [json.loads(line)["arch"] for s in shards for line in s.read_text().splitlines()]
    assert sorted(recorded) == sorted(str(a) for a in whole.archs)  # each exactly once
    merged = build_accuracy_dataset(net, data, sharded, n, **SETTINGS)  # merge: nothing to run
    assert merged.evaluated == 0 and merged.archs == whole.archs
    np.testing.assert_array_equal(merged.accuracies, whole.accuracies)
    assert not list(sharded.glob("*.rank*")) and (sharded / DATASET_FILE).is_file()


def test_ensure_predictor_builds_then_loads(tiny, tmp_path, monkeypatch):
    net, data = tiny
    pred = ensure_predictor(tmp_path, net, data, n=12, progress=False, **SETTINGS)
    assert (tmp_path / DATASET_FILE).is_file() and (tmp_path / PREDICTOR_META).is_file()
    assert pred.metrics["n_test"] == 2

    def no_refit(*args, **kwargs):
        raise AssertionError("a current predictor must be loaded, not refit")

    monkeypatch.setattr("onceforall.predictors.accuracy.fit_accuracy_predictor", no_refit)
    again = ensure_predictor(tmp_path, net, data, n=12, progress=False, **SETTINGS)
    archs = sample_archs(net.space, 12)
    np.testing.assert_array_equal(again.predict(archs), pred.predict(archs))
    monkeypatch.undo()
    grown = ensure_predictor(tmp_path, net, data, n=14, progress=False, **SETTINGS)
    assert grown.metrics["n_train"] + grown.metrics["n_test"] == 14  # refit on the larger dataset
    assert AccuracyPredictor.load(tmp_path, net.space).info["n"] == 14


def test_measured_archs_answer_with_their_measurement(tiny, tmp_path):
    """ensure_predictor's predictor carries the dataset's measurements (built or loaded); the
    searches' accuracy uses them for those archs and the prediction elsewhere."""
    net, data = tiny
    archs = sample_archs(net.space, 12)
    for _ in range(2):  # built, then loaded
        pred = ensure_predictor(tmp_path, net, data, n=12, progress=False, **SETTINGS)
        ds = build_accuracy_dataset(net, data, tmp_path, 12, **SETTINGS)
        assert pred.measured == dict(zip(ds.archs, ds.accuracies.tolist(), strict=True))
        np.testing.assert_array_equal(pred.accuracy(archs), ds.accuracies)
    others = sample_archs(net.space, 40)[12:]
    np.testing.assert_array_equal(pred.accuracy(others), pred.predict(others))
    mixed = [others[0], archs[3]]
    np.testing.assert_allclose(  # an MLP's output varies in the last bits with the batch
        pred.accuracy(mixed), [pred.predict(others[:1])[0], ds.accuracies[3]], rtol=1e-6
    )
    best = pred.best_measured()
    assert set(best) == set(archs) and pred.measured[best[0]] == ds.accuracies.max()
    assert AccuracyPredictor(net.space).accuracy(archs[:2]).shape == (2,)  # none measured
    # Arch strings, as the command line and the exported cards give them, answer alike.
    np.testing.assert_array_equal(pred.accuracy([str(a) for a in mixed]), pred.accuracy(mixed))
    np.testing.assert_array_equal(pred.predict([str(a) for a in archs]), pred.predict(archs))
