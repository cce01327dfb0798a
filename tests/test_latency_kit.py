"""Latency kits: a table measured on another device with onnxruntime alone, then imported."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import onceforall as ofa
from benchmarks.latency_kit import measure_without_torch
from onceforall.cli import main as cli_main
from onceforall.predictors import onnx_timing
from onceforall.predictors.kit import import_measurements, read_measurements, write_kit
from onceforall.predictors.latency_build import plan_table
from onceforall.run import Run
from tests.conftest import small_mbv3

# Medians of 7 calls: a few calls stalled by the other test processes on a loaded machine move
# nothing (3 calls once let one subnet time 25 times its table prediction).
FAST = {"warmup": 2, "repeats": 7}


def _measure(kit: Path, *args: str) -> subprocess.CompletedProcess:
    return measure_without_torch(kit, *args, timeout=300)


@pytest.fixture(scope="module")
def net() -> ofa.Supernet:
    return small_mbv3()


@pytest.fixture(scope="module")
def measured_kit(net, tmp_path_factory) -> Path:
    """A kit of the small net, measured by its measure.py with torch unimportable."""
    kit = write_kit(
        net, tmp_path_factory.mktemp("kits") / "kit", fit_subnets=4, validate_subnets=4, **FAST
    )
    done = _measure(kit, str(kit), "--name", "Test Board", "--quiet")
    assert done.returncode == 0, done.stderr
    return kit


def test_measure_script_needs_only_numpy_and_onnxruntime_on_python_3_8():
    source = Path(onnx_timing.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))  # a device's Python may be old
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    third_party = imported - set(sys.stdlib_module_names)
    assert third_party == {"numpy", "onnxruntime"}


def test_kit_holds_what_a_table_times_plus_validation_subnets(net, measured_kit):
    manifest = onnx_timing.read_manifest(measured_kit)
    plan = plan_table(net, 1, 4, 0)
    kinds = [m["kind"] for m in manifest["models"]]
    assert kinds.count("layer") == len(net.latency_layer_specs()) == len(plan.specs)
    assert kinds.count("empty") == len(plan.inputs) and kinds.count("fit") == 4
    assert kinds.count("validate") == 4
    assert manifest["supernet"] == net.config and manifest["threads"] == 1
    for m in manifest["models"]:
        assert (measured_kit / m["file"]).stat().st_size > 0
    assert (measured_kit / "measure.py").read_text() == Path(onnx_timing.__file__).read_text()
    assert "measure.py" in (measured_kit / "README.md").read_text()


def test_imported_table_predicts_the_device_subnets(net, measured_kit):
    data = read_measurements(measured_kit / "measurements.json")
    assert data["device"]["name"] == "Test Board" and data["repeats"] == FAST["repeats"]
    table, validation = import_measurements(net, data)
    assert len(table) == len(net.latency_layer_specs())
    assert table.backend == "onnxruntime" and table.metadata["device"] == "Test Board"
    assert table.metadata["source"] == "latency kit" and table.scale > 0
    assert validation is not None and len(validation.rows) == 4
    # The device timed these subnets in the same rounds: the table tracks them (loose bound).
    for _, predicted, measured in validation.rows:
        assert 0.25 < predicted / measured < 4
    assert table.metadata["validation"]["mape"] == validation.mape
    renamed, _ = import_measurements(net, data, device="Other Name")
    assert renamed.metadata["device"] == "Other Name"
    assert renamed.predict(net.space.largest()) == table.predict(net.space.largest())


def test_measurements_of_another_supernet_or_altered_are_refused(net, measured_kit, tmp_path):
    data = read_measurements(measured_kit / "measurements.json")
    with pytest.raises(ValueError, match="written for the supernet"):
        import_measurements(small_mbv3(expand_ratios=(3, 4)), data)
    altered = json.loads(json.dumps(data))
    altered["manifest"]["seed"] = 7
    path = tmp_path / "altered.json"
    path.write_text(json.dumps(altered))
    with pytest.raises(ValueError, match="manifest was altered"):
        read_measurements(path)
    short = json.loads(json.dumps(data))
    short["ms"] = short["ms"][:-1]
    path.write_text(json.dumps(short))
    with pytest.raises(ValueError, match="times for the kit's"):
        read_measurements(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        read_measurements(path)
    with pytest.raises(FileNotFoundError, match=r"measure\.py"):
        read_measurements(tmp_path / "missing.json")
    # The kit directory stands for the measurements.json its measure.py wrote into it.
    assert read_measurements(measured_kit) == data
    (tmp_path / "unmeasured").mkdir()
    with pytest.raises(FileNotFoundError, match=r"a directory without measurements\.json"):
        read_measurements(tmp_path / "unmeasured")


def test_another_harness_measurements_import_with_the_kit_beside_them(net, measured_kit, tmp_path):
    """An app or C++ harness writes only what the module doc of onnx_timing asks for."""
    data = read_measurements(measured_kit / "measurements.json")
    minimal = {k: data[k] for k in ("format", "version", "kit_id", "threads", "warmup", "repeats")}
    minimal.update(device={"name": "App Harness"}, ms=data["ms"])
    beside = measured_kit / "app.json"
    beside.write_text(json.dumps(minimal))
    try:
        table, validation = import_measurements(net, beside)
        reference, _ = import_measurements(net, data)
        assert table.metadata["device"] == "App Harness" and validation is not None
        assert table.predict(net.space.smallest()) == reference.predict(net.space.smallest())
        elsewhere = tmp_path / "app.json"
        elsewhere.write_text(json.dumps(minimal))
        with pytest.raises(FileNotFoundError, match="--kit KIT"):
            read_measurements(elsewhere)
        assert read_measurements(elsewhere, measured_kit)["manifest"] == data["manifest"]
        elsewhere.write_text(json.dumps({**minimal, "kit_id": "0" * 16}))
        with pytest.raises(ValueError, match="import it with the kit it came from"):
            read_measurements(elsewhere, measured_kit)
        elsewhere.write_text(json.dumps({k: v for k, v in minimal.items() if k != "device"}))
        with pytest.raises(ValueError, match="lacks"):
            read_measurements(elsewhere, measured_kit)
        # Hand-edited files: each a clear error, not a traceback or a table of nonsense.
        for edited, message in (
            ([minimal], "holds a JSON list"),
            ({**minimal, "device": "x"}, "lacks"),
            ({**minimal, "ms": [True] * len(minimal["ms"])}, "positive numbers"),
            ({**minimal, "ms": [float("inf")] * len(minimal["ms"])}, "positive numbers"),
            ({**minimal, "threads": -3}, "threads=-3 must be a whole number >= 1"),
        ):
            elsewhere.write_text(json.dumps(edited))
            with pytest.raises(ValueError, match=message):
                read_measurements(elsewhere, measured_kit)
    finally:
        beside.unlink()
    copy = tmp_path / "kit_copy"
    shutil.copytree(measured_kit, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["repeats"] = 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="altered after the kit was written"):
        onnx_timing.read_manifest(copy)


def test_write_kit_never_writes_into_existing_files(net, measured_kit, tmp_path):
    before = sorted(p.name for p in measured_kit.iterdir())
    with pytest.raises(FileExistsError, match="another --out"):
        write_kit(net, measured_kit, fit_subnets=2, validate_subnets=0, **FAST)
    assert sorted(p.name for p in measured_kit.iterdir()) == before
    assert not [p for p in measured_kit.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_measure_script_refuses_to_overwrite_and_times_one_model(measured_kit):
    again = _measure(measured_kit, str(measured_kit), "--quiet")
    assert again.returncode == 2 and "--force" in again.stderr
    model = next((measured_kit / "models").glob("*-fit.onnx"))
    one = _measure(measured_kit, "--model", str(model), "--shape", "1,1,24,24", "--repeats", "3")
    assert one.returncode == 0, one.stderr
    assert f"{model}: " in one.stdout and " ms (median of 3 calls" in one.stdout
    bad = _measure(measured_kit, "--model", str(model))
    assert bad.returncode == 2 and "--shape" in bad.stderr
    missing = _measure(measured_kit, str(measured_kit.parent / "nope"))
    assert missing.returncode == 2 and "latency kit" in missing.stderr


def test_measure_script_names_a_bad_model_file_or_shape_without_a_traceback(measured_kit, tmp_path):
    """A missing, non-ONNX or misshapen --model, or a kit with a lost or damaged model file:
    one `measure.py: error:` line naming the problem and the fix, exit 2, no traceback."""
    model = next((measured_kit / "models").glob("*-fit.onnx"))
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    torchscript = tmp_path / "model.pt"
    torchscript.write_bytes(b"PK\x03\x04 a TorchScript zip archive")
    kit = tmp_path / "kit"
    shutil.copytree(measured_kit, kit)
    (kit / "measurements.json").unlink()
    files = sorted((kit / "models").glob("*.onnx"))
    lost = tmp_path / "lost_kit"
    shutil.copytree(kit, lost)
    (lost / "models" / files[1].name).unlink()
    one = ("--repeats", "2")
    for args, message in (
        (("--model", str(tmp_path / "nofile.onnx"), "--shape", "1,1,24,24", *one),
         "nofile.onnx does not exist: check the --model path"),
        (("--model", str(text), "--shape", "1,1,24,24", *one), "notes.txt (INVALID_PROTOBUF"),
        (("--model", str(torchscript), "--shape", "1,1,24,24", *one), "pass an .onnx file"),
        (("--model", str(model), "--shape", "1,3,24,24", *one),
         "takes an input of shape [batch, 1, 24, 24], not [1, 3, 24, 24]: pass --shape 1,1,24,24"),
        (("--model", str(model), "--shape", "1,1,x", *one), "--shape 1,1,x is not positive"),
        ((str(lost), "--quiet"), f"{files[1].name} does not exist: the kit is incomplete; copy"),
    ):  # fmt: skip
        done = _measure(kit, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and message in done.stderr
        assert done.stderr.startswith("measure.py: error: ") and done.stderr.count("\n") == 1
    files[2].write_bytes(files[2].read_bytes()[:200])  # a copy cut short
    damaged = _measure(kit, str(kit), "--quiet")
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr
    assert f"cannot load {files[2]} (" in damaged.stderr and "copy the whole kit" in damaged.stderr
    files[2].write_bytes((measured_kit / "models" / files[-1].name).read_bytes())  # swapped
    swapped = _measure(kit, str(kit), "--quiet")
    assert swapped.returncode == 2 and "Traceback" not in swapped.stderr
    assert "the kit's models were changed" in swapped.stderr
    assert not (kit / "measurements.json").exists()


def test_cli_kit_measure_import_then_search_on_the_device(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    kit = tmp_path / "board_kit"
    timing = ["--warmup", str(FAST["warmup"]), "--repeats", str(FAST["repeats"])]
    assert cli_main(["latency", "kit", str(run_dir), "--out", str(kit), "--n", "3", *timing]) == 0
    assert "measure.py" in capsys.readouterr().out
    done = _measure(kit, str(kit), "--name", "Board X", "--quiet")
    assert done.returncode == 0, done.stderr
    measurements = str(kit / "measurements.json")
    assert cli_main(["latency", "import", str(run_dir), measurements]) == 0
    out = capsys.readouterr().out
    assert "3 random subnets on Board X: MAPE" in out and "--device 'Board X'" in out
    tables = list((run_dir / "latency").glob("onnxruntime-t1-b1-board-x.json"))
    assert len(tables) == 1
    before = tables[0].read_bytes()
    assert cli_main(["latency", "import", str(run_dir), measurements]) == 2
    assert "--force" in capsys.readouterr().err and tables[0].read_bytes() == before
    # Timings a busy device disturbed: the table's own error is far off, and that is said.
    data = json.loads((kit / "measurements.json").read_text())
    data["ms"] = [t * (3.0 if i % 2 else 1.0) for i, t in enumerate(data["ms"])]
    (kit / "disturbed.json").write_text(json.dumps(data))
    argv = ["latency", "import", str(run_dir), str(kit / "disturbed.json"), "--device", "Busy"]
    assert cli_main(argv) == 0
    assert "disturbed the timings" in capsys.readouterr().err

    assert cli_main(["latency", "list", str(run_dir)]) == 0
    listed = capsys.readouterr().out
    assert "Board X" in listed and "latency kit" in listed and tables[0].name in listed
    assert cli_main(["latency", "list", str(run_dir), "extra.json"]) == 2
    assert "only `latency import" in capsys.readouterr().err
    run = Run.open(run_dir)
    largest = run.net.space.largest()
    common = ["--samples", "24", "--json", "--device", "Board X"]
    budget = ofa.predictors.LatencyTable.load(tables[0]).predict(largest)
    assert cli_main(["search", str(run_dir), "--latency-ms", str(budget), *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["latency_ms"] <= budget for r in rows)
    assert all(r["measured_latency_ms"] is None for r in rows)  # the device is elsewhere
    assert not list((run_dir / "latency").glob("onnxruntime-t1-b1-intel*"))  # no local table
    assert cli_main(["search", str(run_dir), "--latency-ms", "1", "--device", "Phone"]) == 2
    err = capsys.readouterr().err
    assert "no latency table for device 'Phone'" in err and "Board X" in err
    assert "onceforall latency kit" in err
    code = cli_main(["search", str(run_dir), "--backend", "torch-cpu", "--device", "Board X"])
    assert code == 2 and "use backend onnxruntime" in capsys.readouterr().err
    pareto = ["search", str(run_dir), "--pareto", "--points", "2", "--samples", "24"]
    assert cli_main([*pareto, "--device", "Board X"]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert (run_dir / "pareto-latency_ms-onnxruntime-board-x.png").stat().st_size > 0
    out_dir = tmp_path / "export"
    arch = rows[0]["arch"]
    argv = ["export", str(run_dir), "--arch", arch, "--format", "onnx", "--out", str(out_dir)]
    assert cli_main([*argv, "--no-measure", "--device", "Board X"]) == 0
    assert "ms predicted on Board X" in capsys.readouterr().out
    card = json.loads((out_dir / "card.json").read_text())
    assert card["device"] == "Board X" and card["device_latency_ms"] == rows[0]["latency_ms"]
    assert cli_main([*argv, "--force", "--device", "Phone"]) == 2
    assert "no latency table for device 'Phone'" in capsys.readouterr().err
    assert json.loads((out_dir / "card.json").read_text()) == card  # untouched
    assert cli_main(["latency", "import", str(run_dir)]) == 2
    assert "needs the measurements file" in capsys.readouterr().err
    assert cli_main(["latency", "kit", str(run_dir)]) == 2
    assert "--out DIR" in capsys.readouterr().err
    # A table cut short (a full disk, a copy stopped half-way) is named, with the fix.
    tables[0].write_text(before.decode()[:500])
    assert cli_main(["search", str(run_dir), "--latency-ms", "1", *common]) == 2
    err = capsys.readouterr().err
    assert f"{tables[0]} is not a readable latency table" in err and "--force" in err
    assert cli_main(["latency", "list", str(run_dir)]) == 1
    listed = capsys.readouterr()
    assert f"{tables[0].name}: unreadable" in listed.err and "Busy" in listed.out
