"""Latency tables: layer specs of the family, table construction per backend, prediction, I/O."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import onceforall as ofa
from onceforall.predictors import (
    BACKENDS,
    LatencyTable,
    build_latency_table,
    fit_line,
    measure_latency,
    onnx_session,
    round_validation,
    table_drift,
    validate_latency,
)
from onceforall.predictors.latency import fit_latency_model, fit_lines
from onceforall.predictors.latency_build import plan_table
from onceforall.predictors.timing import busy_cores, onnx_bytes
from onceforall.supernets.base import LayerSpec
from tests.conftest import small_mbv3

FAST = {"warmup": 2, "repeats": 5}


@pytest.fixture(scope="module")
def net() -> ofa.Supernet:
    return small_mbv3()


@pytest.fixture(scope="module")
def table(net) -> LatencyTable:
    return build_latency_table(net, "torch-cpu", fit_subnets=4, **FAST)


def _archs(net: ofa.Supernet, n: int, seed: int = 0) -> list[ofa.ArchConfig]:
    g = torch.Generator().manual_seed(seed)
    return [net.space.largest(), net.space.smallest()] + [net.space.sample(g) for _ in range(n)]


# ---------------------------------------------------------------- layer specs of the family
@torch.no_grad()
def test_layer_specs_chain_like_the_extracted_subnet(supernet):
    net = supernet  # every registered family
    for arch in _archs(net, 4):
        x = torch.randn(2, net.in_channels, arch.resolution, arch.resolution)
        h, layers = x, []
        for spec in net.layer_specs(arch):
            assert h.shape[1:] == spec.input_shape[1:], spec
            layers.append(net.build_layer(spec))
            h = layers[-1](h)
        assert h.shape == net.extract(arch)(x).shape == (2, 10)
        # Exactly the parameters of the extracted subnet: the specs describe the real layers.
        assert sum(p.numel() for m in layers for p in m.parameters()) == net.num_params(arch)


def test_latency_layer_specs_are_the_distinct_layers_of_every_arch():
    net = small_mbv3(expand_ratios=(6,), resolutions=(24, 28))  # 15552 archs: enumerable
    listed = net.latency_layer_specs()
    assert len(listed) == len(set(listed))
    seen = {spec for arch in net.space.enumerate() for spec in net.layer_specs(arch)}
    assert set(listed) == seen


def test_layer_spec_dict_round_trip_and_errors(net):
    for spec in net.latency_layer_specs():
        assert LayerSpec.from_dict(spec.to_dict()) == spec
        assert hash(LayerSpec.from_dict(spec.to_dict())) == hash(spec)
    with pytest.raises(ValueError, match=r"unknown LayerSpec keys \['colour'\]"):
        LayerSpec.from_dict({**spec.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="cannot build a 'lstm' layer"):
        net.build_layer(LayerSpec("lstm", 8, 8, 4))


# ---------------------------------------------------------------- the table
def test_table_has_one_entry_per_distinct_layer(net, table):
    # Independent count: stem, first block, final expand and head once (one resolution), and per
    # stage every (kernel, expand) for its first block and for the blocks after it (all alike).
    sp = net.space
    expected = 4 + sp.num_stages * len(sp.kernel_sizes) * len(sp.expand_ratios) * 2
    assert len(table) == expected
    g = torch.Generator().manual_seed(0)
    sampled = {s for _ in range(3000) for s in net.layer_specs(sp.sample(g))}
    assert set(table.entries) == sampled == set(net.latency_layer_specs())
    assert all(math.isfinite(ms) for ms in table.entries.values())
    meta = table.metadata
    for key in ("backend", "device", "cpu", "threads", "batch_size", "torch", "onnxruntime"):
        assert key in meta
    assert meta["backend"] == "torch-cpu" and meta["batch_size"] == 1
    assert len(meta["fit"]["archs"]) == 4


def test_table_sum_tracks_a_measured_subnet(net, table):
    for arch in (net.space.largest(), net.space.smallest()):
        measured = measure_latency(net.extract(arch), (1, 1, 24, 24), "torch-cpu", **FAST)
        # Loose on purpose: timing on a shared machine is noisy; this catches unit or
        # bookkeeping errors (a missing layer, seconds for milliseconds), not 10% drifts.
        assert 0.3 < table.layer_sum(arch) / measured < 3
        assert 0.3 < table.predict(arch) / measured < 3


def test_predict_many_equals_predict(net, table):
    archs = _archs(net, 30, seed=3)
    many = table.predict_many(archs)
    assert many.shape == (len(archs),) and many.dtype == np.float64
    assert many.tolist() == [table.predict(a) for a in archs]
    assert table.predict(str(archs[5])) == many[5]
    assert table.predict_many([]).shape == (0,)
    assert table.predict(net.space.largest()) > table.predict(net.space.smallest())


def test_save_load_round_trip(net, table, tmp_path):
    path = table.save(tmp_path / "latency.json")
    archs = _archs(net, 10)
    for loaded in (LatencyTable.load(path, net), LatencyTable.load(path)):  # net rebuilt
        assert loaded.entries == table.entries
        assert (loaded.overhead_ms, loaded.scale) == (table.overhead_ms, table.scale)
        assert loaded.metadata == table.metadata
        np.testing.assert_array_equal(loaded.predict_many(archs), table.predict_many(archs))
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable.from_dict({"format": "something else"})
    # A table saved before the slope was fitted predicts its layer sum plus the offset.
    old = table.to_dict()
    del old["scale"]
    loaded = LatencyTable.from_dict(old, net)
    assert loaded.scale == 1.0
    assert loaded.predict(archs[0]) == pytest.approx(table.layer_sum(archs[0]) + table.overhead_ms)
    with pytest.raises(ValueError, match=r"scale=0\.0 must be a positive number"):
        LatencyTable(table.entries, supernet_config=table.supernet_config, scale=0.0)


def test_fit_line_is_robust_and_falls_back_to_an_offset():
    x = np.linspace(0.1, 0.8, 16)
    scale, overhead = fit_line(x, 1.8 * x + 0.02)
    assert scale == pytest.approx(1.8) and overhead == pytest.approx(0.02)
    # Two points slowed 3x by a busy machine do not move the line; least squares they do.
    y = 1.8 * x + 0.02
    y[[3, 11]] *= 3
    assert fit_line(x, y) == pytest.approx((1.8, 0.02))
    lsq_scale, lsq_overhead = np.polyfit(x, y, 1)
    assert abs(lsq_scale - 1.8) > 0.2 and abs(lsq_overhead - 0.02) > 0.05
    # Too few points, equal sums or a falling line: slope 1 and the median offset.
    assert fit_line([0.2, 0.4], [0.3, 0.5]) == pytest.approx((1.0, 0.1))
    assert fit_line([0.2, 0.2, 0.2], [0.3, 0.35, 0.4]) == pytest.approx((1.0, 0.15))
    assert fit_line([0.1, 0.2, 0.3], [0.5, 0.4, 0.3])[0] == 1.0
    with pytest.raises(ValueError, match="matching 1-D"):
        fit_line([0.1, 0.2], [0.1])


def test_fitted_lines_never_predict_a_time_that_is_not_positive():
    """Times a busy machine disturbed can give a steep line with a negative offset; a negative
    latency would meet any budget. Each fit falls back until its smallest sum is positive."""
    x = np.array([1.0, 10, 11, 12, 13])
    y = np.array([0.5, 30, 34, 38, 42])  # Theil-Sen: slope 4, offset -10: -6 at x = 1
    assert fit_line(x, y) == pytest.approx((1.0, 23.0))  # the offset alone
    y_low = y / 10  # the offset alone is negative too (-7.6): the median ratio, no offset
    assert fit_line(x, y_low) == pytest.approx((float(np.median(y_low / x)), 0.0))
    scale, offsets = fit_lines(x, y, [24, 24, 28, 28, 28])  # group 24: 4 - 6.75 at x = 1
    assert scale == pytest.approx(1.0) and offsets == pytest.approx({24: 23.0, 28: 23.0})
    for measured in (y, y_low):
        for res in ([24] * 5, [24, 24, 28, 28, 28]):
            scale, overhead, by_res, _ = fit_latency_model(x, measured, res)
            for sum_ms, r in zip(x, res, strict=True):
                assert scale * sum_ms + by_res.get(r, overhead) > 0


def test_fit_lines_recovers_an_offset_per_resolution_and_resists_a_slowed_point():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.5, 24)
    res = np.array([24, 28, 32] * 8)
    offsets = {24: -0.05, 28: -0.10, 32: -0.15}
    y = 2.0 * x + np.array([offsets[r] for r in res])
    y_slowed = y.copy()
    y_slowed[3] *= 3  # one subnet a busy machine slowed
    for measured in (y, y_slowed):
        scale, fitted = fit_lines(x, measured, res)
        assert scale == pytest.approx(2.0, rel=0.02)
        assert fitted == pytest.approx(offsets, abs=0.01)
    # The model with offsets wins where they exist, the single line where they do not.
    scale, overhead, by_res, report = fit_latency_model(x, y, res)
    assert report["model"] == "line per resolution" and by_res == pytest.approx(offsets)
    assert report["loo_mape_per_resolution"] < report["loo_mape_line"]
    line = 2.0 * x - 0.1 + rng.normal(0, 0.01, 24)
    scale, overhead, by_res, report = fit_latency_model(x, line, res)
    assert report["model"] == "line" and by_res == {}
    assert (scale, overhead) == fit_line(x, line)
    # Too few subnets per resolution to judge: the line.
    assert fit_latency_model(x[:4], y[:4], [24, 28, 32, 24])[3] == {"model": "line"}


def test_table_predicts_with_the_offset_of_each_resolution(tmp_path):
    net = small_mbv3(resolutions=(24, 28))
    g = torch.Generator().manual_seed(0)
    table = LatencyTable(
        {s: 0.01 for s in net.latency_layer_specs()},
        supernet_config=net.config,
        overhead_ms=0.5,
        scale=2.0,
        overhead_by_resolution={28: 1.0},
        net=net,
    )
    archs = [net.space.sample(g) for _ in range(20)]
    for arch, predicted in zip(archs, table.predict_many(archs), strict=True):
        offset = 1.0 if arch.resolution == 28 else 0.5  # 24 has none: the common offset
        assert predicted == pytest.approx(2.0 * table.layer_sum(arch) + offset)
        assert table.predict(str(arch)) == pytest.approx(predicted)
    loaded = LatencyTable.load(table.save(tmp_path / "t.json"), net)
    assert loaded.overhead_by_resolution == {28: 1.0} and "r28: 1.0000" in repr(loaded)
    np.testing.assert_array_equal(loaded.predict_many(archs), table.predict_many(archs))
    with pytest.raises(ValueError, match="must be a positive number"):
        LatencyTable(table.entries, supernet_config=net.config, overhead_by_resolution={24: np.nan})


def test_fitting_subnets_cover_every_resolution_alike():
    net = small_mbv3(resolutions=(24, 28, 32))
    plan = plan_table(net, fit_subnets=11)
    counts = [sum(a.resolution == r for a in plan.archs) for r in (24, 28, 32)]
    assert len(plan.archs) == 11 and max(counts) - min(counts) <= 1
    assert plan.archs[:2] == (net.space.largest(), net.space.smallest())


def test_table_fits_the_line_through_its_fitting_subnets(table):
    fit = table.metadata["fit"]
    assert (table.scale, table.overhead_ms) == fit_line(fit["layer_sum_ms"], fit["measured_ms"])


def test_table_refuses_a_supernet_it_did_not_measure(table):
    bigger = small_mbv3(kernel_sizes=(3, 5, 7))  # k7 x 2 expand ratios x 2 slots x 5 stages new
    with pytest.raises(ValueError, match=r"lacks 20 layer\(s\) of this supernet"):
        table.bind(bigger)


def test_validate(net, table):
    result = validate_latency(net, table, n=4, seed=1, warmup=1, repeats=3)
    assert len(result.rows) == 4
    for arch, predicted, measured in result.rows:
        assert arch in net.space and predicted > 0 and measured > 0
    assert math.isfinite(result.mape) and -1 <= result.spearman <= 1
    # The fitting subnets, timed again alongside: the machine's speed against the build's.
    assert 0.2 < result.drift < 5
    with pytest.raises(ValueError, match="n=1 must be >= 2"):
        validate_latency(net, table, n=1)


def test_build_validates_on_subnets_timed_in_the_same_rounds(net, table, tmp_path):
    assert round_validation(table) is None  # built without validation subnets
    checked = build_latency_table(net, fit_subnets=4, validate_subnets=4, validate_seed=1, **FAST)
    v = round_validation(checked)
    assert v is not None and len(v.rows) == 4 and v.drift is None
    later = validate_latency(net, checked, n=4, seed=1, **FAST)
    assert [a for a, _, _ in v.rows] == [a for a, _, _ in later.rows]  # the same subnets
    for arch, predicted, measured in v.rows:
        assert predicted == checked.predict(arch) and measured > 0
        assert 0.2 < predicted / measured < 5  # loose: the same rounds as the layers
    assert checked.metadata["validation"]["mape"] == v.mape
    loaded = LatencyTable.load(checked.save(tmp_path / "t.json"), net)
    assert round_validation(loaded) == v
    with pytest.raises(ValueError, match="validate_subnets=-1"):
        build_latency_table(net, validate_subnets=-1)


# ---------------------------------------------------------------- backends
def test_onnxruntime_backend(tmp_path):
    net = small_mbv3(kernel_sizes=(3,), expand_ratios=(3,), depths=(1,))
    table = build_latency_table(net, "onnxruntime", fit_subnets=2, threads=1, progress=True, **FAST)
    assert len(table) == 9 and table.backend == "onnxruntime"
    arch = net.space.largest()
    assert 0.3 < table.layer_sum(arch) / table.metadata["fit"]["measured_ms"][0] < 3
    # Every form of model the onnxruntime backend takes.
    sub, shape = net.extract(arch), (1, 1, 24, 24)
    onnx = onnx_bytes(sub, shape)
    path = tmp_path / "sub.onnx"
    path.write_bytes(onnx)
    for model in (sub, onnx, path, onnx_session(path, threads=1)):
        assert measure_latency(model, shape, "onnxruntime", threads=1, **FAST) > 0


def test_cpu_clock_table():
    net = small_mbv3(kernel_sizes=(3,), expand_ratios=(3,))
    table = build_latency_table(net, threads=1, clock="cpu", fit_subnets=2, **FAST)
    assert table.metadata["clock"] == "cpu" and all(ms > 0 for ms in table.entries.values())
    result = validate_latency(net, table, n=2, repeats=2)  # times on the table's clock
    assert all(m > 0 for _, _, m in result.rows)


def test_backend_errors():
    assert BACKENDS == ("torch-cpu", "torch-cuda", "onnxruntime")
    m = torch.nn.Identity()
    with pytest.raises(
        ValueError, match=r"unknown latency backend 'tpu'; choose from \('torch-cpu'"
    ):
        measure_latency(m, (1, 1, 4, 4), "tpu")
    with pytest.raises(ValueError, match="unknown latency backend"):
        build_latency_table(small_mbv3(), "tensorrt")
    with pytest.raises(ValueError, match="use backend='onnxruntime' for ONNX models"):
        measure_latency(b"onnx", (1, 1, 4, 4), "torch-cpu")
    with pytest.raises(ValueError, match=r"input_shape=\(4,\) must be positive sizes"):
        measure_latency(m, (4,))
    with pytest.raises(ValueError, match="threads=0 must be a positive int"):
        measure_latency(m, (1, 1, 4, 4), threads=0)
    with pytest.raises(ValueError, match=r"unknown clock 'cycles'; choose from \('wall', 'cpu'\)"):
        measure_latency(m, (1, 1, 4, 4), clock="cycles")
    with pytest.raises(ValueError, match="clock='cpu' times only the calling thread"):
        build_latency_table(small_mbv3(), threads=2, clock="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'torch-cuda' needs a CUDA device"):
            measure_latency(m, (1, 1, 4, 4), "torch-cuda")
        with pytest.raises(ValueError, match="'torch-cuda' needs a CUDA device"):
            build_latency_table(small_mbv3(), "torch-cuda")


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="reads /proc/stat (Linux)")
def test_busy_cores_counts_other_processes():
    """The latency-table warning's measure: another process spinning a core shows up (this
    process sleeping meanwhile adds nothing)."""
    spin = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 3: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        busy_cores(0.5)  # the child starts meanwhile; it spins for 3 s in all
        assert busy_cores(0.5) >= 0.5
    finally:
        child.kill()
        child.wait()


def test_table_drift_times_the_fitting_subnets_again(net, table):
    assert 0.2 < table_drift(net, table, warmup=1, repeats=3) < 5
    bare = LatencyTable(table.entries, supernet_config=table.supernet_config, net=net)
    assert table_drift(net, bare) is None  # nothing recorded to compare with
