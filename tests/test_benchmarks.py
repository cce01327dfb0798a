"""The evidence benchmarks (``python -m benchmarks``) end to end on the tiny synthetic run: each
writes a JSON of sane numbers and a Markdown section naming its command, and results.md keeps its
hand-written text while the generated sections are replaced."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pytest
import torch

import onceforall as ofa
from benchmarks.common import Settings, budget, median_arch, uniform_arch, uniform_family
from benchmarks.reporting import update_results
from onceforall.config import config_from_dict, config_to_dict, load_config, save_config
from onceforall.run import Run
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def settings(tiny_run, tmp_path_factory) -> Settings:
    """Quick settings on the tiny run (copied in as the benchmarks' progressive supernet)."""
    root = tmp_path_factory.mktemp("bench")
    config = root / "tiny.yaml"
    save_config(tiny_config(), config)
    shutil.copytree(tiny_run, root / "work" / "progressive")
    return Settings.quick_defaults(
        config=config,
        work=root / "work",
        out=root / "docs",
        seeds=2,
        finetune_epochs=0.4,
        accuracy_samples=12,
        calibration_images=64,
        eval_images=64,
        front_points=3,
        schedule_archs=3,
        backend="torch-cpu",
        latency_repeats=2,
        max_scratch_epochs=1.0,
        progress=False,
    )


def _write(settings: Settings, name: str, result: dict, md: str) -> dict:
    from benchmarks.reporting import write_outputs

    path = write_outputs(settings, name, result, md)
    assert json.loads(path.read_text())["name"] == name
    section = (settings.out / "results.md").read_text()
    assert f"<!-- benchmarks:{name} start" in section and result["command"] in section
    assert "Machine:" in md
    return result


def test_budget_counts_what_the_trainer_did(tiny_run):
    run = Run.open(tiny_run)
    b = budget(run.config, run.data, run.net.space)
    logged = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    # log_every=1: every step is logged with the subnets it trained.
    done = sum(run.config.batch_size * len(r["archs"]) for r in logged if r["kind"] == "train")
    assert b["gradient_images"] == done
    assert b["epoch_equivalents"] == pytest.approx(done / len(run.data.train))
    assert b["longest_phase_epochs"] == 1


def test_named_archs_scale_every_choice_together(tiny_run):
    space = Run.open(tiny_run).net.space
    assert uniform_arch(space, 0) == space.smallest()
    assert uniform_arch(space, 1) == space.largest()
    mid = median_arch(space)
    assert mid in space and mid.kernel_sizes[0][0] == space.kernel_sizes[1]
    family = [arch for _, arch in uniform_family(space)]
    # Three levels of kernel/expand/depth choices, each at both resolutions, all distinct.
    assert len(family) == len(set(family)) == 3 * len(space.resolutions)
    assert family[0] == space.smallest() and family[-1] == space.largest()


def test_results_sections_replace_only_their_markers(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nHand-written.\n\n## Later\n\nKeep me.\n")
    update_results(path, "costs", "## Costs\n\nfirst")
    update_results(path, "scratch", "## Scratch\n\nx")
    update_results(path, "costs", "## Costs\n\nsecond")
    text = path.read_text()
    assert text.startswith("# Results\n\nHand-written.\n\n## Later\n\nKeep me.\n")
    assert "second" in text and "first" not in text and text.count("## Costs") == 1
    assert text.index("## Costs") < text.index("## Scratch")


def test_scratch(settings):
    from benchmarks import scratch

    settings = dataclasses.replace(settings, seeds=1)  # 5 archs x 3 trainings per seed
    result, md = scratch.run(settings)
    _write(settings, "scratch", result, md)
    rows = result["rows"]
    assert [r["label"] for r in rows][:3] == ["largest", "median", "smallest"]
    assert len(rows) == 5 and all(r["label"].startswith("search") for r in rows[3:])
    for r in rows:
        tests = [r["extracted"]["test"]] + [
            x["test"]
            for k in ("finetuned", "scratch_longest_phase", "scratch_whole_budget")
            for x in r[k]
        ]
        assert len(tests) == 1 + 3 * settings.seeds
        assert all(0 <= t <= 100 for t in tests)
        assert r["verdict"] in ("met", "missed")
        # (d) trained on the supernet's whole budget (capped in quick mode).
        d = r["scratch_whole_budget"][0]
        cap = settings.max_scratch_epochs
        assert d["epochs"] == pytest.approx(min(cap, result["budget"]["epoch_equivalents"]))
    assert "(a) extracted + BN" in md and "capped" in md
    # Cached: a second run measures nothing again and gives the same numbers.
    again, _ = scratch.run(settings)
    assert again["rows"] == result["rows"]
    # A partial run (--archs) measures only its archs, flagged so that no section is written.
    part, part_md = scratch.run(dataclasses.replace(settings, archs=["smallest", "pick50"]))
    assert part["partial"] == ["smallest", "pick50"]
    assert part["rows"] == [result["rows"][2], result["rows"][4]] and "| smallest |" in part_md
    with pytest.raises(SystemExit, match=r"unknown.*bogus"):
        scratch.run(dataclasses.replace(settings, archs=["bogus"]))


def test_schedules(settings):
    from benchmarks import schedules

    result, md = schedules.run(settings)
    _write(settings, "schedules", result, md)
    p, s = result["schedules"]["progressive"], result["schedules"]["sandwich"]
    # Same budget in gradient-images, up to rounding to whole sandwich steps.
    # (a sandwich step whose random arch repeats the largest or smallest trains it once).
    step = s["budget"]["batch_size"] * (2 + result["sandwich_random"])
    total = p["budget"]["gradient_images"]
    assert abs(total - s["budget"]["gradient_images"]) <= max(step / 2, 0.02 * total)
    assert Run.open(s["run_dir"]).config.schedule.kind == "sandwich"
    for r in (p, s):
        assert len(r["rows"]) == 3 + settings.schedule_archs
        assert all(0 <= x["test"] <= 100 for x in r["rows"])
        assert r["front"] and r["hypervolume"] >= 0
    assert (settings.out / "schedules.png").stat().st_size > 0


def test_pareto(settings):
    from benchmarks import pareto

    result, md = pareto.run(settings)
    _write(settings, "pareto", result, md)
    assert 1 <= len(result["front"]) <= settings.front_points
    space = Run.open(settings.work / "progressive").net.space
    assert len(result["uniform"]) == 3 * len(space.resolutions)
    mb = result["mobilenet"]
    assert len(mb["test_runs"]) == settings.seeds and 0 <= mb["test"] <= 100
    assert all(0 <= r["test"] <= 100 for r in mb["test_runs"])
    assert mb["macs"] > 0 and mb["latency_ms"] > 0
    for p in [*result["front"], *result["uniform"]]:
        assert 0 <= p["test"] <= 100 and p["latency_ms"] > 0
    assert (settings.out / "pareto.png").stat().st_size > 0
    assert "MobileNetV3-Small" in md


def test_costs(settings):
    from benchmarks import costs

    result, md = costs.run(settings)
    _write(settings, "costs", result, md)
    st = result["stages"]
    assert [p["name"] for p in st["training"]] == [p.name for p in tiny_config().schedule.phases]
    assert all(p["seconds"] > 0 for p in st["training"])
    assert st["latency_table"]["entries"] > 0
    assert len(st["accuracy_dataset"]["points"]) == 2
    assert {e["format"] for e in st["export"]} == {"onnx", "torchscript"}
    # Each generated section is in results.md at most once (all of them when the module ran).
    text = (settings.out / "results.md").read_text()
    assert text.count("<!-- benchmarks:costs end -->") == 1
    for name in ("scratch", "schedules", "pareto"):
        assert text.count(f"<!-- benchmarks:{name} end -->") <= 1


def test_reference_reports_plainly_when_ofa_is_missing(settings, tmp_path, monkeypatch):
    import sys

    from benchmarks import reference

    if "ofa" in sys.modules:
        monkeypatch.delitem(sys.modules, "ofa")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "bench-ofa" not in p])
    monkeypatch.setitem(sys.modules, "ofa", None)  # import ofa -> ImportError
    quick = Settings.quick_defaults(ofa_env=tmp_path / "none", out=tmp_path, work=tmp_path)
    result, md = reference.run(quick)
    assert result["available"] is False
    assert "skipped" in md and reference.INSTALL in md and result["command"] in md


def test_mean_and_spread_format():
    from benchmarks.reporting import fmt_mean_std

    assert fmt_mean_std([80.0, 82.0]) == "81.00 ± 1.41"
    assert fmt_mean_std([80.0]) == "80.00" and fmt_mean_std([]) == "—"


def test_cli_parses_quick_defaults():
    from benchmarks.__main__ import parse_settings

    names, s = parse_settings(["all", "--quick", "--seeds", "2"])
    assert names == ["scratch", "schedules", "pareto", "reference", "costs"]
    assert s.quick and s.seeds == 2 and s.config.name == "smoke.yaml"
    assert s.command("scratch").endswith("-m benchmarks all --quick --seeds 2")
    assert s.archs is None
    assert parse_settings(["scratch", "--archs", "smallest,pick50"])[1].archs == [
        "smallest",
        "pick50",
    ]


def test_label_noise_ceiling_matches_simulated_predictor_tau():
    """The tau ceiling estimated from split halves is what a perfect predictor scores against
    binomially noisy labels, and the holdout size it asks for does reach the target."""
    import numpy as np
    from scipy.stats import kendalltau

    from benchmarks.label_noise import images_for_tau, reliability, tau_ceiling

    rng = np.random.default_rng(0)
    true = rng.normal(0.87, 0.004, size=300)  # 0.4 pp spread, like a quick supernet's subnets
    correct = rng.random((300, 5000)) < true[:, None]
    stats = reliability(correct)
    measured = correct.mean(1)
    assert abs(stats["tau_ceiling"] - kendalltau(true, measured)[0]) < 0.06
    assert 0.3 < stats["reliability"] < 0.9  # noise sd ~0.48 pp vs a 0.4 pp spread
    n = images_for_tau(stats["reliability"], 5000, 0.8)
    rho_n = stats["reliability"] / (stats["reliability"] + (1 - stats["reliability"]) * 5000 / n)
    assert n > 5000 and tau_ceiling(rho_n) == pytest.approx(0.8)
    assert images_for_tau(0.99, 5000, 0.8) == 5000  # already there
    twins = np.repeat(correct[:, :2500], 2, axis=1)  # each image's outcome twice: no noise
    assert reliability(twins)["tau_ceiling"] == pytest.approx(1.0)
    assert tau_ceiling(1.0) == 1.0 and tau_ceiling(0.0) == 0.0


def test_label_noise_calibration_noise_is_recovered_and_counted():
    """Two calibrations' accuracies differing by independent noise of known sd give back that
    sd, and counting it as noise lowers the reliability by its share of the variance."""
    import numpy as np

    from benchmarks.label_noise import calibration_noise

    rng = np.random.default_rng(0)
    true = rng.normal(88.0, 0.5, size=4000)
    first, second = true + rng.normal(0, 0.1, 4000), true + rng.normal(0, 0.1, 4000)
    stats = {"reliability": 0.9, "accuracy_sd_pp": 0.5}
    bn = calibration_noise(first, second, stats)
    assert bn["calibration_noise_sd_pp"] == pytest.approx(0.1, rel=0.05)
    assert bn["reliability_with_calibration"] == pytest.approx(0.9 - 0.04, abs=0.005)
    assert bn["tau_ceiling_with_calibration"] < 0.8 and bn["calibration_r"] > 0.9


def test_label_noise_calibration_overlap_is_recovered():
    """Images scored by a subnet calibrated on them succeed 2 pp more often: the gap comes back,
    and its share in a whole-holdout accuracy is the calibration slice's share of the images."""
    import numpy as np

    from benchmarks.label_noise import calibration_overlap

    rng = np.random.default_rng(0)
    subnets, images, n_cal = 4000, 300, 100
    p_first, p_second = np.full(images, 0.85), np.full(images, 0.85)
    p_first[:n_cal] += 0.02  # calibrated on the first slice
    p_second[n_cal : 2 * n_cal] += 0.02  # calibrated on the second
    first = rng.random((subnets, images)) < p_first
    second = rng.random((subnets, images)) < p_second
    over = calibration_overlap(first, second, n_cal)
    assert over["calibration_overlap_pp"] == pytest.approx(
        2.0, abs=4 * over["calibration_overlap_se_pp"]
    )
    assert over["holdout_accuracy_shift_pp"] == pytest.approx(over["calibration_overlap_pp"] / 3)
    none = calibration_overlap(first, first, n_cal)  # the same calibration both times: no gap
    assert none["calibration_overlap_pp"] == pytest.approx(0.0, abs=1e-9)


def test_label_noise_bn_noise_rolls_the_calibration_slice(tiny_run, capsys):
    from benchmarks.label_noise import main, rolled
    from onceforall.data import load_data

    holdout = load_data(load_config(tiny_run / "config.yaml").data).holdout
    moved = rolled(holdout, 16)
    assert torch.equal(moved.batch(range(48))[0], holdout.batch(range(16, 64))[0])
    assert sorted(moved.indices.tolist()) == sorted(holdout.indices.tolist())  # the same images
    main([str(tiny_run), "--n", "4", "--calibration-images", "32", "--threads", "1", "--bn-noise"])
    out = capsys.readouterr().out
    assert "calibration noise sd" in out and "tau ceiling" in out.splitlines()[-2]
    assert "calibration overlap" in out.splitlines()[-1]
    with pytest.raises(SystemExit):  # a second slice of 40 does not fit in 64 images
        main([str(tiny_run), "--n", "4", "--calibration-images", "40", "--bn-noise"])


def test_landscape_summary_counts_subnets_a_cheaper_family_member_beats():
    from benchmarks.landscape import summarize

    family = [("small", 1.0, 87.0), ("mid", 5.0, 86.0), ("large", 10.0, 89.0)]
    randoms = [(2.0, 85.0), (6.0, 86.5), (6.0, 87.5), (12.0, 88.0), (3.0, 86.0)]
    s = summarize(family, randoms)
    assert s["subnets"] == 5 and s["median"] == 86.5
    assert s["below_smallest"] == pytest.approx(3 / 5)  # 85.0, 86.5 and 86.0
    # 85.0, 86.5 and 86.0 lose to the 1-MMAC family member; 88.0 loses to the 89.0 at 10.
    assert s["beaten_by_cheaper_family"] == pytest.approx(4 / 5)
    assert s["spearman_macs"] == pytest.approx(0.9, abs=0.1)


def test_teacher_benchmark_prints_both_statistics_per_resolution(tiny_run, monkeypatch, capsys):
    from benchmarks import teacher

    monkeypatch.setattr(sys, "argv", ["teacher", str(tiny_run), "--threads", "1"])
    teacher.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows] == [str(r) for r in Run.open(tiny_run).net.space.resolutions]
    assert all(len(row) == 7 and row[1].endswith("%") and row[6].endswith("%") for row in rows)


def test_depthwise_grad_benchmark_compares_every_depthwise_layer(capsys):
    from benchmarks import depthwise_grad

    depthwise_grad.main(["--batch", "4", "--rounds", "1", "--threads", "1", "--resolution", "24"])
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if " k" in line and " s" in line and "(" in line]
    assert len(rows) == 21 and {r[-6] for r in rows} == {"k3", "k5"}  # the largest subnet's
    assert all(float(r[-1]) < 1e-3 for r in rows)  # the two gradients agree
    assert out[-1].startswith("training step: pytorch's gradient")


def test_take_slices_benchmark_times_both_ways_per_count(capsys):
    from benchmarks import take_slices

    take_slices.main(["--counts", "1,3", "--rounds", "2", "--kind", "blocks"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("threshold in use: _ONE_OP_FROM = ")
    rows = [json.loads(line) for line in lines[1:]]
    assert [r["slices"] for r in rows] == [1, 3]
    assert all(r["ordinary_us"] > 0 and r["one_op_us"] > 0 and r["ratio"] > 0 for r in rows)


def test_elastic_overhead_benchmark_ab_and_profile(capsys, monkeypatch):
    from benchmarks import elastic_overhead
    from onceforall.elastic import utils

    monkeypatch.setattr(utils, "_ONE_OP_FROM", utils._ONE_OP_FROM)  # main() sets it; restored
    elastic_overhead.main(
        ["--batch", "2", "--rounds", "1", "--warmup", "1", "--threads", "1", "--breakdown",
         "--one-op-from", "1000000", "--profile", "3", "--profile-steps", "1"]
    )  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert "slices in one op from 1000000 on" in out[0]
    rows = [line.split() for line in out if line.split()[0] in ("largest", "median", "smallest")]
    assert [r[0] for r in rows] == ["largest", "median", "smallest"]
    assert all(len(r) == 6 and float(r[-2]) > 0 and float(r[-1]) > 0 for r in rows)  # ratios
    profiled = [i for i, line in enumerate(out) if "profiled step" in line]
    assert len(profiled) == 3
    for i in profiled:  # TOP ops follow, each with supernet, static and added microseconds
        for line in out[i + 1 : i + 4]:
            a, b, added = (float(v) for v in line.split()[-4:-1])
            assert abs(a - b - added) < 0.1 + 1e-6


def test_elastic_branches_continue_one_full_network(tmp_path, capsys):
    from benchmarks import elastic_branches

    config = tmp_path / "tiny.yaml"
    save_config(tiny_config(), config)
    out = tmp_path / "branches"
    argv = [str(config), "--out", str(out), "--no-progress", "--variant", "a", ""]
    argv += ["--variant", "again", "", "--variant", "slow", "schedule.phases.1.lr=0.001"]
    results = elastic_branches.main(argv)
    assert set(results) == {"a", "again", "slow"}
    full = [json.loads(line) for line in (out / "full/metrics.jsonl").read_text().splitlines()]
    for name in results:
        records = [
            json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()
        ]
        # Each branch holds the full run's records, then its own elastic phases.
        assert records[: len(full)] == full
        assert {r["phase"] for r in records[len(full) :]} == {
            p.name for p in tiny_config().schedule.phases[1:]
        }
    # One full network and one saved random state: a branch of the same config is the same run.
    assert results["a"] == {**results["again"], "elastic_seconds": results["a"]["elastic_seconds"]}
    assert results["slow"]["phase_ends"]["kernel"] != results["a"]["phase_ends"]["kernel"]
    printed = capsys.readouterr().out
    assert "a: phase ends" in printed and "slow: phase ends" in printed
    # Finished branches are reused; a variant that changes the full phase is refused.
    assert elastic_branches.main(argv[:7])["a"] == results["a"]
    with pytest.raises(ValueError, match=r"changes what the full-network phase used \(seed\)"):
        elastic_branches.main([*argv[:4], "--variant", "bad", "seed=3"])
    # The full run there is of another config: an error, not a silent stand-in.
    with pytest.raises(FileExistsError, match="another config"):
        elastic_branches.main([argv[0], "seed=3", *argv[1:7]])


def test_elastic_branches_may_change_distillation_when_the_full_phase_does_not_distil():
    from benchmarks.elastic_branches import check_branch, full_phase_config

    for full_distils in (False, True):
        data = config_to_dict(tiny_config())
        data["schedule"]["phases"][0]["distill"] = full_distils
        base = config_from_dict(data)
        data["distill"]["kd_ratio"] = 0.5
        variant = config_from_dict(data)
        if full_distils:
            with pytest.raises(ValueError, match=r"phase used \(distill\.kd_ratio\)"):
                check_branch(full_phase_config(base), variant, "kd")
        else:
            check_branch(full_phase_config(base), variant, "kd")


def test_weight_prep_benchmark_times_each_variant_and_checks_they_do_the_same_work(
    capsys, monkeypatch
):
    from benchmarks import weight_prep
    from onceforall.elastic.utils import Slice

    weight_prep.main(["--rounds", "1", "--steps", "1", "--channels-last"])
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        (a, v) for a in ("largest", "median", "smallest") for v in weight_prep.VARIANTS
    ]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    # A variant that takes other slices trains other weights: refused, not timed.
    monkeypatch.setattr(
        weight_prep,
        "_unfolded",
        lambda conv: lambda channels=None, kernel_size=None: [Slice(conv.weight, (8, 1, 7, 7))],
    )
    with pytest.raises(AssertionError, match="unfolded prepares other weights than present"):
        weight_prep.main(["--rounds", "1", "--steps", "1"])


def test_train_throughput_times_the_trainer_and_a_static_loop_on_one_subnet(tmp_path, capsys):
    from benchmarks import train_throughput

    config_path = tmp_path / "tiny.yaml"
    save_config(tiny_config(), config_path)
    argv = [
        "--config", str(config_path), "--steps", "4", "--log-every", "2", "--rounds", "2",
        "batch_size=16",
    ]  # fmt: skip
    train_throughput.main(argv)
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == ["largest", "median", "smallest"]

    def printed_ratio_of(a: float, b: float):
        # The rates are printed to 0.1 image/s and the ratio to 0.001: at a few images/s the
        # rates' rounding alone moves their quotient by more than the ratio's.
        return pytest.approx(a / b, abs=a / b * (0.05 / a + 0.05 / b) + 5e-4)

    for _, macs, trainer, static, ratio, fast, fast_ratio in rows:
        assert float(macs) > 0 and float(trainer) > 0 and float(static) > 0 and float(fast) > 0
        assert float(ratio) == printed_ratio_of(float(trainer), float(static))
        assert float(fast_ratio) == printed_ratio_of(float(trainer), float(fast))

    # The trainer's run trains the one subnet at every step, without a teacher.
    config = load_config(config_path, ["batch_size=16"])
    with torch.device("meta"):
        net = ofa.create_supernet(
            config.model.family, num_classes=10, in_channels=1, **config.model.family_kwargs()
        )
    arch = net.space.smallest()
    one = train_throughput.one_arch_config(config, arch, log_every=1)
    windows = train_throughput.trainer_windows(one, 3, tmp_path / "work")
    assert len(windows) == 2 and all(w > 0 for w in windows)
    (metrics,) = (tmp_path / "work").glob("run-*/metrics.jsonl")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["archs"] for r in records if r["kind"] == "train"] == [[str(arch)]] * 3
    assert not list((tmp_path / "work").glob("run-*/teacher*"))
    train_throughput.main([*argv, "--archs", "smallest"])
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]] == ["smallest"]
    with pytest.raises(SystemExit):  # a name that is none of the three: an argparse error
        train_throughput.main([*argv, "--archs", "tiny"])
    # A subnet with different choices per block is no phase's whole space: refused.
    mixed = dataclasses.replace(arch, kernel_sizes=((3, 5), *arch.kernel_sizes[1:]))
    with pytest.raises(ValueError, match="not uniform"):
        train_throughput.one_arch_config(config, mixed, log_every=1)


def test_memory_format_benchmark_times_both_formats(capsys):
    from benchmarks import memory_format

    memory_format.main(
        ["--families", "mbv3_small_images", "--archs", "smallest", "--batch", "2", "--rounds",
         "1", "--warmup", "0", "--threads", "1", "--subnets", "1"]
    )  # fmt: skip
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith("mbv3_small_images")]  # fmt: skip
    assert [len(r) for r in rows] == [5, 4]  # the eval forward, then the per-subnet work
    assert all(float(v) > 0 for r in rows for v in r[-3:])


def test_rescore_agrees_with_the_summary_of_a_run(tiny_run):
    """benchmarks.rescore: the saved supernet, scored again in this process, gives the summary
    the trainer wrote (and names the subnets it scored)."""
    from benchmarks.rescore import rescore

    rows = rescore(tiny_run, threads=1)
    written = json.loads((tiny_run / "summary.json").read_text())["subnets"]
    assert set(rows) == set(written) == {"largest", "smallest"}
    for label, row in rows.items():
        assert row["arch"] == written[label]["arch"]
        assert row["rescored"] == row["summary"]
        assert row["summary"]["test_accuracy"] == written[label]["test_accuracy"]
