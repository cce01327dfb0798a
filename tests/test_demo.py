"""The main job end to end: ``onceforall demo --preset smoke`` (train -> predictor -> latency table
-> search -> export -> onnxruntime evaluation -> report), and the report rendered in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import onceforall as ofa
from onceforall.cli import main as cli_main
from onceforall.data import FASHION_MNIST_SYSTEM_DIR

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _fashion_mnist_available() -> bool:
    return FASHION_MNIST_SYSTEM_DIR.is_dir() or (Path.home() / ".cache/onceforall").is_dir()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    if not _fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert cli_main(["demo", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def test_demo_writes_every_artifact_and_picks_meet_their_budgets(demo_dir):
    from onceforall.run import Run
    from onceforall.specialize import Specializer

    for name in ("report.html", "summary.md", "results.json", "pareto.png", "training.png"):
        assert (demo_dir / name).stat().st_size > 0, name
    results = json.loads((demo_dir / "results.json").read_text())
    picks = results["picks"]
    assert [p["label"] for p in picks] == ["tight", "middle", "loose"]
    budgets = [p["budget_ms"] for p in picks]
    assert budgets == sorted(budgets)
    # A looser budget never picks a less accurate subnet: each search starts from the tighter
    # budgets' picks, which fit it too.
    scores = [p["predicted_accuracy"] for p in picks]
    assert scores == sorted(scores)
    run = Run.open(demo_dir / "run")
    # Each pick meets its budget by the same latency model the search used.
    table = Specializer(run, "onnxruntime").latency_table
    for p in picks:
        assert table.predict(p["arch"]) <= p["budget_ms"] + 1e-9
        assert p["latency_ms"] == pytest.approx(table.predict(p["arch"]))
        card = json.loads((Path(p["file"]).parent / "card.json").read_text())
        assert card["arch"] == p["arch"] and card["format"] == "onnx"
        # onnxruntime on the test set agrees with torch's evaluation of the same model.
        assert p["test_accuracy"] == pytest.approx(card["test_accuracy"], abs=0.2)
    assert len(results["front"]) >= 3
    assert results["latency_drift"] > 0  # the machine's speed against the table's build
    # The table's own error: random subnets timed in the same rounds as its layers.
    check = results["latency_check"]
    assert check["n"] == 4 and check["mape"] >= 0 and -1 <= check["spearman"] <= 1
    assert "timed in the same rounds" in (demo_dir / "report.html").read_text()
    # The picks seed the front: each is matched or beaten by a front point no slower than it.
    front = [(f["score"], f["costs"]["latency_ms"]) for f in results["front"]]
    for p in picks:
        assert any(
            s >= p["predicted_accuracy"] - 1e-9 and ms <= p["latency_ms"] + 1e-9 for s, ms in front
        ), p["arch"]
    md = (demo_dir / "summary.md").read_text()
    assert md.count("\n") == 2 + len(picks) and "tight" in md


def test_exported_models_run_in_onnxruntime(demo_dir):
    import onnxruntime as ort

    for p in json.loads((demo_dir / "results.json").read_text())["picks"]:
        card = json.loads((Path(p["file"]).parent / "card.json").read_text())
        session = ort.InferenceSession(p["file"])
        r = card["resolution"]
        x = np.zeros((3, card["in_channels"], r, r), np.float32)
        (logits,) = session.run(None, {card["input_name"]: x})
        assert logits.shape == (3, card["num_classes"])


def test_rerun_reuses_the_finished_run(demo_dir, capsys):
    # What a re-run must not redo: training, the accuracy dataset and predictor, the latency table.
    run = demo_dir / "run"
    kept = [
        run / name
        for name in ("supernet.safetensors", "accuracy_dataset.jsonl", "accuracy_predictor.json")
    ]
    kept += sorted((run / "latency").glob("*.json"))
    assert len(kept) == 4
    before = [p.stat().st_mtime_ns for p in kept]
    assert cli_main(["demo", "--preset", "smoke", "--out", str(demo_dir), "--no-progress"]) == 0
    assert "training skipped" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in kept] == before


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(demo_dir, tmp_path):
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (demo_dir / "report.html").resolve().as_uri()
    # The DOM after load: the table holds the three picks and both plots are images that decoded
    # (naturalWidth > 0 is written into the title by a script Chromium runs).
    probe = tmp_path / "probe.html"
    probe.write_text(
        (demo_dir / "report.html")
        .read_text()
        .replace(
            "</body>",
            "<script>window.onload = () => { document.title = 'imgs:' + "
            "[...document.images].map(i => i.naturalWidth).join(','); };</script></body>",
        )
    )
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<tr>") >= 4 and "tight" in dom and "loose" in dom
    title = dom.split("<title>")[1].split("</title>")[0]
    widths = [int(w) for w in title.removeprefix("imgs:").split(",")]
    assert len(widths) == 2 and min(widths) > 100, title
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1200) and pixels.std() > 10  # not a blank page


def test_demo_resumes_an_interrupted_run_and_reuses_a_finished_one(tmp_path, capsys):
    import yaml

    from onceforall.config import load_config
    from onceforall.run import train_or_reuse
    from onceforall.training import TrainInterrupted, train
    from tests.conftest import TINY, tiny_config

    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "demo"
    with pytest.raises(TrainInterrupted):
        train(tiny_config(), out / "run", progress=False, stop_after_steps=5)

    config = load_config(config_path)
    run, how = train_or_reuse(config, out / "run", progress=False)
    assert how.startswith("resumed") and run.supernet_file.is_file()
    steps = [json.loads(line)["global_step"] for line in (out / "run" / "metrics.jsonl").open()]
    assert steps == sorted(steps)  # one uninterrupted log
    run, how = train_or_reuse(config, out / "run", progress=False)
    assert "training skipped" in how
    # A finished run of another family (demo --family) is never reused in its place.
    with pytest.raises(FileExistsError, match=r"another config \(keys: model\.family\)"):
        train_or_reuse(load_config(config_path, ["model.family=mbv3"]), out / "run", progress=False)
    (tmp_path / "other" / "run").mkdir(parents=True)
    (tmp_path / "other" / "run" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="another --out"):
        train_or_reuse(config, tmp_path / "other" / "run", progress=False)


def test_demo_refuses_a_directory_it_did_not_write(tmp_path):
    """The demo replaces its report, plots and models on every run: a directory holding files
    it did not write (no marker, no results.json) is refused before anything runs."""
    from onceforall.demo import _MARKER, _claim, run_demo

    out = tmp_path / "mine"
    (out / "models" / "tight").mkdir(parents=True)
    (out / "models" / "tight" / "model.onnx").write_bytes(b"my model")
    (out / "report.html").write_text("my report")
    (out / "run").mkdir()
    before = sorted((p, p.read_bytes()) for p in out.rglob("*") if p.is_file())
    with pytest.raises(FileExistsError, match="is not a directory `onceforall demo` wrote"):
        run_demo(out, "smoke", progress=False)
    assert sorted((p, p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before
    with pytest.raises(FileExistsError, match="is a file"):
        run_demo(out / "report.html", "smoke", progress=False)
    fresh = tmp_path / "fresh"
    _claim(fresh)  # new or empty: the demo's from now on, and so on every later run
    (fresh / "report.html").write_text("the demo's")
    _claim(fresh)
    assert (fresh / _MARKER).is_file()
    # A results.json is the demo's only with the demo's keys: the name is common.
    (out / "results.json").write_text('{"accuracy": 0.9}')
    with pytest.raises(FileExistsError, match="is not a directory `onceforall demo` wrote"):
        _claim(out)
    # An interrupted demo of a version without the mark left only its run: continued.
    older = tmp_path / "older"
    (older / "run").mkdir(parents=True)
    (older / "run" / "config.yaml").write_text(
        "# resolved config of this run; `onceforall train` wrote it\nseed: 0\n"
    )
    _claim(older)
    assert (older / _MARKER).is_file()


def test_demo_family_overrides_the_presets_family(monkeypatch, tmp_path):
    import onceforall.demo

    seen = {}

    def fake_run_demo(out, preset, *, family, backend, progress):
        seen.update(preset=preset, family=family)
        return {"picks": [], "run_dir": str(tmp_path / "run"), "latency_drift": 1.0}

    monkeypatch.setattr(onceforall.demo, "run_demo", fake_run_demo)
    argv = ["demo", "--preset", "smoke", "--out", str(tmp_path), "--no-progress"]
    assert cli_main([*argv, "--family", "mbv3"]) == 0
    assert seen == {"preset": "smoke", "family": "mbv3"}
    assert cli_main(argv) == 0 and seen["family"] is None  # the preset's own family
    with pytest.raises(SystemExit):
        cli_main([*argv, "--family", "nope"])


def test_every_family_gets_a_preset_schedule_that_fits_its_space():
    """`onceforall demo --family F` trains the preset's schedule, or the preset's variant for F
    (a family whose choice values differ, as OFA-ResNet's, needs its own schedule)."""
    from onceforall.demo import CONFIG_DIR, PRESETS, preset_config

    assert preset_config("quick") == (CONFIG_DIR / "fashion_mnist_quick.yaml", [])
    for preset in PRESETS:
        for family in ofa.list_supernets():
            path, overrides = preset_config(preset, family)
            assert overrides == [f"model.family={family}"] and path.is_file()
    assert preset_config("quick", "mbv3")[0].name == "fashion_mnist_quick.yaml"
    assert (
        preset_config("quick", "resnet_small_images")[0].name == "fashion_mnist_resnet_quick.yaml"
    )
    assert preset_config("smoke", "resnet50d")[0].name == "smoke_resnet.yaml"


def test_a_latency_table_of_older_layers_is_measured_again(demo_dir, tmp_path, capsys):
    """A table that timed an older version of the subnet layers (or recorded none: version 1)
    is not reused: it is measured again and saved over the stale one."""
    from onceforall.run import Run
    from onceforall.specialize import Specializer, latency_table_path
    from onceforall.static import LAYERS_VERSION

    shutil.copytree(demo_dir / "run", tmp_path / "run")
    run = Run.open(tmp_path / "run")
    # Few timed calls per layer: what matters here is which table is measured, not how well.
    spec = Specializer(run, "onnxruntime", latency_warmup=1, latency_repeats=3)
    path = latency_table_path(run, "onnxruntime", spec.threads)
    stale = json.loads(path.read_text())
    assert stale["metadata"]["layers_version"] == LAYERS_VERSION
    del stale["metadata"]["layers_version"]
    stale["entries"][0]["ms"] = 1e6  # a value no measurement gives
    path.write_text(json.dumps(stale))
    table = spec.latency_table
    assert "measuring it again" in capsys.readouterr().err
    assert table.metadata["layers_version"] == LAYERS_VERSION
    assert max(table.entries.values()) < 1e6
    saved = json.loads(path.read_text())
    assert saved["metadata"]["layers_version"] == LAYERS_VERSION
    # The fresh table is reused as it is.
    assert Specializer(run, "onnxruntime").latency_table.entries == table.entries


def test_picks_vs_dataset_benchmark_reads_a_demo(demo_dir):
    """benchmarks.picks_vs_dataset: membership and gaps as the demo's own files state them."""
    from benchmarks.picks_vs_dataset import compare

    out = compare(demo_dir)
    results = json.loads((demo_dir / "results.json").read_text())
    lines = (demo_dir / "run" / "accuracy_dataset.jsonl").read_text().splitlines()
    labels = {r["arch"]: r["accuracy"] for r in map(json.loads, lines)}
    archs = [p["arch"] for p in results["picks"] + results["front_measured"]]
    assert [r["in_dataset"] for r in out["rows"]] == [a in labels for a in archs]
    assert out["members"] == sum(a in labels for a in archs)
    assert out["labels"]["n"] == len(labels) and out["labels"]["max"] == max(labels.values())
    top = max(r["predicted"] for r in out["rows"])
    assert out["highest_prediction_above_highest_label"] == top - max(labels.values())


def test_measure_takes_an_arch_given_twice_once(demo_dir, monkeypatch):
    """A pick that is also a point of the front is extracted, evaluated and timed once; both
    labels report the same figures."""
    import onceforall.specialize as specialize
    from onceforall.demo import PRESETS
    from onceforall.run import Run

    run = Run.open(demo_dir / "run")
    # The demo's own settings: its predictor is reused (the library's defaults would build one
    # from 500 subnets, minutes here, and replace the demo's).
    spec = PRESETS["smoke"].specializer(run, "onnxruntime", progress=False)
    predictor = (run.path / "accuracy_predictor.json").stat().st_mtime_ns
    extracted, timed = [], []
    subnet = run.subnet
    monkeypatch.setattr(run, "subnet", lambda arch: extracted.append(arch) or subnet(arch))

    def fake_timing(table, models, archs):
        timed.append(list(archs))
        return [float(i + 1) for i in range(len(models))], 1.25

    monkeypatch.setattr(specialize, "time_with_drift", fake_timing)
    a, b = run.net.space.largest(), run.net.space.smallest()
    picks = spec.measure([a, b, a], ["front 1", "tight", "front 2"])
    assert extracted == [a, b] and timed == [[a, b]]
    assert [p.label for p in picks] == ["front 1", "tight", "front 2"]
    assert [p.measured_latency_ms for p in picks] == [1.0, 2.0, 1.0]
    same = {k: v for k, v in picks[0].to_dict().items() if k != "label"}
    assert same == {k: v for k, v in picks[2].to_dict().items() if k != "label"}
    assert picks[1].holdout_accuracy is not None and picks[1].latency_drift == 1.25
    with pytest.raises(ValueError, match="2 labels for 3 archs"):
        spec.measure([a, b, a], ["x", "y"])
    # An arch's string is the arch: the same figures, and the run's accuracy takes it too.
    by_name = spec.measure([str(b)], ["tight"], latency=False)[0]
    assert by_name.arch == picks[1].arch and by_name.holdout_accuracy == picks[1].holdout_accuracy
    assert run.accuracy(run.subnet(b), str(b)) == picks[1].holdout_accuracy
    # Seeds (a tighter budget's pick, as its string too) start the search, before the measured.
    given = {}
    real_search = specialize.evolutionary_search
    monkeypatch.setattr(
        specialize,
        "evolutionary_search",
        lambda *args, **kw: given.update(kw) or real_search(*args, **kw),
    )
    best = spec.search(spec.constraints(macs=2 * run.net.macs(b)), seeds=[str(b)])[0]
    assert given["seeds"][0] == b and best.score >= spec.predictor.accuracy([b])[0]
    assert (run.path / "accuracy_predictor.json").stat().st_mtime_ns == predictor


def test_readme_specializes_from_python(demo_dir, tmp_path, monkeypatch):
    """README's "Specializing from Python" block, run as written on the demo's run."""
    import onceforall.specialize as specialize
    from onceforall.demo import PRESETS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"Specializing from Python.*?```python\n(.*?)```", readme, re.S)
    assert block, "README's 'Specializing from Python' block is gone"
    code = block.group(1)
    assert '"runs/fm"' in code and '"models/phone"' in code
    code = code.replace('"runs/fm"', repr(str(demo_dir / "run")))
    code = code.replace('"models/phone"', repr(str(tmp_path / "phone")))
    # The demo's own specializer settings (see test_measure_takes_an_arch_given_twice_once).
    monkeypatch.setattr(
        specialize,
        "Specializer",
        lambda run, backend: PRESETS["smoke"].specializer(run, backend, progress=False),
    )
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    best, picks, card = scope["best"], scope["picks"], scope["card"]
    assert 1 <= len(best) <= 3 and [p.arch for p in picks] == [str(c.arch) for c in best]
    assert all(c.costs["latency_ms"] <= 0.5 and c.costs["macs"] <= 5e6 for c in best)
    assert all(p.holdout_accuracy is not None and p.measured_latency_ms for p in picks)
    assert card["arch"] == str(best[0].arch) and (tmp_path / "phone" / "model.onnx").is_file()
