"""Export with model cards, fine-tuning, and the export/finetune CLI, on the tiny trained run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import onceforall as ofa
from onceforall.cli import main as cli_main
from onceforall.export import export_subnet, load_exported
from onceforall.run import Run
from onceforall.training.finetune import finetune, finetuned_path, train_subnet_loop

CARD_KEYS = {
    "arch",
    "resolution",
    "in_channels",
    "num_classes",
    "class_names",
    "mean",
    "std",
    "test_accuracy",
    "holdout_accuracy",
    "macs",
    "params",
    "latency_ms",
    "backend",
    "format",
    "file",
    "sha256",
    "preprocessing",
}


@pytest.fixture(scope="module")
def run(tiny_run) -> Run:
    return Run.open(tiny_run)


def _arch(run: Run) -> ofa.ArchConfig:
    return run.net.space.sample(3)


def _images(run: Run, arch: ofa.ArchConfig, n: int = 8) -> torch.Tensor:
    from onceforall.data import resize_batch
    from onceforall.training.bn import batches

    x, _ = next(iter(batches(run.data.test, n)))
    return resize_batch(x, arch.resolution)


def test_card_states_the_exact_preprocessing(run, tmp_path):
    """A deployment that follows the card's steps on a raw image feeds the model exactly what
    evaluation fed it."""
    from onceforall.data import resize_batch
    from tests.conftest import apply_preprocessing

    for arch in (run.net.space.smallest(), run.net.space.largest()):  # 16 and 20 px of 20
        card = export_subnet(run, arch, "safetensors", tmp_path / str(arch.resolution),
                             measure=False)  # fmt: skip
        holdout = run.data.holdout
        raw = holdout.images[holdout.indices[0]]  # the uint8 image as the dataset holds it
        evaluated = resize_batch(holdout[0][0][None], arch.resolution)
        deployed = apply_preprocessing(card["preprocessing"], raw)
        torch.testing.assert_close(deployed, evaluated, atol=1e-5, rtol=0)
        assert any(s["op"] == "resize" for s in card["preprocessing"]) == (arch.resolution != 20)


def test_onnx_export_runs_in_onnxruntime_alone_and_matches_torch(run, tmp_path):
    arch = _arch(run)
    card = export_subnet(run, arch, "onnx", tmp_path / "m", measure=True)
    assert set(card) >= CARD_KEYS
    assert json.loads((tmp_path / "m" / "card.json").read_text()) == card
    assert card["arch"] == str(arch) and card["file"] == "model.onnx"
    assert card["backend"] == "onnxruntime" and card["latency_ms"] > 0
    assert card["threads"] == 1  # as search's latency tables, so the two compare
    assert card["macs"] == run.net.macs(arch) and card["params"] == run.net.num_params(arch)
    assert card["class_names"] == list(run.data.class_names)
    assert 0 <= card["test_accuracy"] <= 100 and 0 <= card["holdout_accuracy"] <= 100
    x = _images(run, arch)
    expected = run.subnet(arch)(x).detach().numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    # A fresh interpreter that imports only onnxruntime and numpy: no onceforall, no torch.
    script = textwrap.dedent(f"""
        import json, sys, numpy as np, onnxruntime as ort
        card = json.load(open({str(tmp_path / "m" / "card.json")!r}))
        s = ort.InferenceSession({str(tmp_path / "m")!r} + "/" + card["file"])
        out = s.run(None, {{card["input_name"]: np.load({str(tmp_path / "x.npy")!r})}})[0]
        np.save({str(tmp_path / "y.npy")!r}, out)
        assert not any(m.startswith(("onceforall", "torch")) for m in sys.modules), "imported"
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors"])
def test_torchscript_and_safetensors_exports_match_torch(run, tmp_path, fmt):
    arch = _arch(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        card = export_subnet(run, arch, fmt, tmp_path / fmt, measure=False)
    # The format was asked for: PyTorch's deprecation of TorchScript is said in --format's help.
    assert not [w for w in caught if "jit.script" in str(w.message)]
    assert set(card) >= CARD_KEYS and card["latency_ms"] is None and card["format"] == fmt
    model = load_exported(tmp_path / fmt)
    x = _images(run, arch)
    torch.testing.assert_close(model(x), run.subnet(arch)(x), atol=1e-5, rtol=1e-5)


def test_export_cli_times_with_the_threads_asked_and_records_them(run, tmp_path, capsys):
    arch = str(_arch(run))
    out = tmp_path / "t2"
    argv = ["export", str(run.path), "--arch", arch, "--format", "torchscript", "--out", str(out)]
    assert cli_main([*argv, "--threads", "2"]) == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert card["threads"] == 2 and card["backend"] == "torch-cpu" and card["latency_ms"] > 0


def test_export_errors_name_the_problem(run, tmp_path, capsys):
    arch = _arch(run)
    export_subnet(run, arch, "safetensors", tmp_path / "a", measure=False)
    with pytest.raises(FileExistsError, match="--force"):
        export_subnet(run, arch, "safetensors", tmp_path / "a", measure=False)
    export_subnet(run, arch, "safetensors", tmp_path / "a", measure=False, force=True)
    with pytest.raises(ValueError, match="onnx, torchscript, safetensors"):
        export_subnet(run, arch, "tflite", tmp_path / "b")
    bad = str(arch).replace("k", "k9", 1)
    code = cli_main(
        ["export", str(run.path), "--arch", bad, "--format", "onnx", "--out", str(tmp_path / "c")]
    )
    assert code == 2 and "kernel" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    code = cli_main(
        [
            "export",
            str(tmp_path),
            "--arch",
            str(arch),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "d"),
        ]
    )
    assert code == 2 and "not a onceforall run directory" in capsys.readouterr().err


def _export_argv(run: Run, arch, fmt: str, out, *more: str) -> list[str]:
    return ["export", str(run.path), "--arch", str(arch), "--format", fmt, "--out", str(out),
            *more]  # fmt: skip


def _contents(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_never_overwrites_a_file_it_would_write_without_force(run, tmp_path, capsys, fmt):
    """A directory holding a model file of the name the export writes, and no card: refused
    before any work, the file named and left as it was."""
    out = tmp_path / "mine"
    out.mkdir()
    name = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": "model.safetensors"}
    (out / name[fmt]).write_bytes(b"the user's own model")
    code = cli_main(_export_argv(run, _arch(run), fmt, out, "--no-measure"))
    err = capsys.readouterr().err
    assert code == 2 and str(out / name[fmt]) in err and "--force" in err
    assert _contents(out) == {name[fmt]: b"the user's own model"}  # no card, no stray file


def test_exported_files_get_the_usual_permissions(run, tmp_path):
    """Staged through a temporary file (which mkstemp makes readable by its owner alone), the
    model and card still get what a new file gets (the umask's), so a server running as
    another user can read them; a --force export keeps a replaced file's mode."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "m"
        assert cli_main(_export_argv(run, _arch(run), "onnx", out, "--no-measure")) == 0
        assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
            "model.onnx": 0o644, "card.json": 0o644}  # fmt: skip
        (out / "model.onnx").chmod(0o640)
        argv = _export_argv(run, _arch(run), "onnx", out, "--no-measure", "--force")
        assert cli_main(argv) == 0
        assert (out / "model.onnx").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_failed_forced_export_keeps_the_previous_export(run, tmp_path, capsys, monkeypatch):
    """An export over another with --force either lands whole or leaves the previous model and
    its card byte for byte: bad input is refused before anything is written, and a failure
    while writing (here, in the timing after the model file is written) loses nothing."""
    import onceforall.predictors

    small, large = run.net.space.smallest(), run.net.space.largest()
    out = tmp_path / "e"
    for fmt in ("safetensors", "onnx"):
        assert cli_main(_export_argv(run, small, fmt, out, "--no-measure", "--force")) == 0
        before = _contents(out)
        if not torch.cuda.is_available():  # an unusable backend, refused up front
            argv = _export_argv(run, large, fmt, out, "--force", "--backend", "torch-cuda")
            assert cli_main(argv) == 2 and "torch-cuda" in capsys.readouterr().err
            assert _contents(out) == before

        def fail(*args, **kwargs):
            raise RuntimeError("the machine failed while timing")

        monkeypatch.setattr(onceforall.predictors, "measure_latency", fail)
        with pytest.raises(RuntimeError, match="while timing"):
            export_subnet(run, large, fmt, out, force=True)
        assert _contents(out) == before  # no temporary file left either
        monkeypatch.undo()
    # The forced export lands whole: the largest arch's model and card.
    card = export_subnet(run, large, "onnx", out, force=True, measure=False)
    assert json.loads((out / "card.json").read_text()) == card and card["arch"] == str(large)
    assert (out / "model.onnx").read_bytes() != before["model.onnx"]
    assert card["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()


def test_forced_export_in_another_format_leaves_no_stale_model(run, tmp_path):
    """The card names one model file: a forced export in another format removes the one the
    previous card named (a deployment picking up model.onnx would get the old subnet), and
    a model that is not the card's (a crash between the renames, or a replaced file) is refused
    by its sha256."""
    small, large = run.net.space.smallest(), run.net.space.largest()
    out = tmp_path / "e"
    (tmp_path / "e").mkdir()
    (out / "notes.txt").write_text("mine")
    export_subnet(run, small, "onnx", out, measure=False)
    card = export_subnet(run, large, "torchscript", out, force=True, measure=False)
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.pt", "notes.txt"]
    x = _images(run, large)
    torch.testing.assert_close(load_exported(out)(x), run.subnet(large)(x), atol=1e-5, rtol=1e-5)
    # The previous model, as a crash between the renames would leave it beside this card.
    export_subnet(run, small, "torchscript", tmp_path / "old", measure=False)
    shutil.copy(tmp_path / "old" / "model.pt", out / "model.pt")
    with pytest.raises(ValueError, match=r"sha256 differs.*export again"):
        load_exported(out)
    assert card["file"] == "model.pt"
    # A card edited to name another file (or no string) never gets that file deleted.
    for name in ("notes.txt", ["notes.txt"]):
        (out / "card.json").write_text(json.dumps({**card, "file": name}))
        export_subnet(run, small, "safetensors", out, force=True, measure=False)
        assert (out / "notes.txt").read_text() == "mine"


def test_export_to_a_file_is_a_clear_error(run, tmp_path, capsys):
    arch = _arch(run)
    user_file = tmp_path / "notes.txt"
    user_file.write_text("keep me")
    code = cli_main(_export_argv(run, arch, "onnx", user_file, "--no-measure"))
    err = capsys.readouterr().err
    assert code == 2 and f"{user_file} is a file, not a directory" in err
    code = cli_main(_export_argv(run, arch, "onnx", user_file / "sub", "--no-measure", "--force"))
    err = capsys.readouterr().err
    assert code == 2 and f"{user_file} is a file, so {user_file / 'sub'} cannot be created" in err
    assert user_file.read_text() == "keep me"


def test_unwritable_destinations_are_refused_before_any_work(
    tiny_run, tmp_path, capsys, monkeypatch
):
    from onceforall.files import check_writable
    from onceforall.training.finetune import finetune

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = _contents(run_dir)
    user_file = tmp_path / "notes.txt"
    user_file.write_text("keep me")
    plot = user_file / "front.png"
    argv = ["search", str(run_dir), "--pareto", "--plot", str(plot), "--samples", "8"]
    assert cli_main(argv) == 2
    assert f"{user_file} is a file, so {plot} cannot be created" in capsys.readouterr().err
    argv[4] = str(tmp_path / "plots.png")  # a directory where the plot's file goes
    (tmp_path / "plots.png").mkdir()
    assert cli_main(argv) == 2
    assert f"--plot {tmp_path / 'plots.png'} is a directory" in capsys.readouterr().err
    cfg = run_dir / "config.yaml"
    assert cli_main(["train", str(cfg), "--out", str(user_file / "run"), "--no-progress"]) == 2
    assert f"{user_file} is a file, so" in capsys.readouterr().err
    # A folder this user may not write to (root may write anywhere, so the check is simulated).
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: Path(p) not in (locked, run_dir) and real_access(p, mode)
    )
    with pytest.raises(PermissionError, match=f"{locked} is not writable, so {locked / 'm'}"):
        check_writable(locked / "m" / "x.onnx", folder=False)
    argv = ["latency", "kit", str(run_dir), "--out", str(locked / "kit")]
    assert cli_main(argv) == 2 and f"{locked} is not writable" in capsys.readouterr().err
    with pytest.raises(PermissionError, match=r"choose another run directory"):
        finetune(Run.open(run_dir), _arch(Run.open(run_dir)), epochs=0.1, progress=False)
    assert _contents(run_dir) == before and user_file.read_text() == "keep me"
    assert not list(locked.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_export_to_an_unwritable_directory_is_a_clear_error(run, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code = cli_main(_export_argv(run, _arch(run), "onnx", locked / "m", "--no-measure"))
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and f"{locked} is not writable" in err and not (locked / "m").exists()


def test_finetune_saves_beside_the_run_and_exports(tiny_run, tmp_path, capsys, monkeypatch):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = Run.open(run_dir)
    arch = run.net.space.smallest()
    # The full network is the teacher: every step asks it for targets.
    targets = []
    make_teacher = Run.teacher

    def counted_teacher(self):
        teacher = make_teacher(self)
        teacher.register_forward_hook(lambda m, i, out: targets.append(out.shape))
        return teacher

    monkeypatch.setattr(Run, "teacher", counted_teacher)
    argv = ["finetune", str(run_dir), "--arch", str(arch), "--epochs", "0.7", "--no-progress"]
    assert cli_main(argv) == 0
    assert "distilled from the full network, kd_ratio 1" in capsys.readouterr().out
    assert len(targets) == 2  # 0.7 of 3 steps per epoch
    path = finetuned_path(run, arch)
    rec = json.loads(path.with_suffix(".json").read_text())
    assert rec["path"] == str(path) and path.is_file()
    assert rec["arch"] == str(arch) and rec["kd_ratio"] == 1.0
    assert {"holdout_before", "holdout_after"} <= set(rec)
    # kd_ratio 0: labels alone, no teacher built.
    alone = finetune(run, _arch(run), epochs=0.7, kd_ratio=0.0, progress=False)
    assert alone["kd_ratio"] == 0.0 and len(targets) == 2

    # The loop trains the weights in the batches' channels-last format (faster on CPU), and
    # leaves them so; extraction gives contiguous ones.
    # (Compared by strides: a 1x1 or one-input-channel kernel passes both is_contiguous tests,
    # and oneDNN reads its format from the strides.)
    def strides(model, memory_format):
        kernels = [p for p in model.parameters() if p.dim() == 4]
        have = [p.stride() for p in kernels]
        return have, [torch.empty_like(p, memory_format=memory_format).stride() for p in kernels]

    model = run.subnet(arch)
    have, contiguous = strides(model, torch.contiguous_format)
    assert have == contiguous
    train_subnet_loop(model, run, arch.resolution, epochs=0.3, lr=0.01)
    have, channels_last = strides(model, torch.channels_last)
    assert have == channels_last != contiguous
    with pytest.raises(ValueError, match="kd_ratio=-1"):
        finetune(run, arch, kd_ratio=-1.0, force=True, progress=False)
    for bad in ({"epochs": float("nan")}, {"lr": float("inf")}, {"kd_ratio": float("nan")}):
        with pytest.raises(ValueError, match="finite"):  # would train NaN weights, or crash
            finetune(run, arch, force=True, progress=False, **bad)
    with pytest.raises(FileExistsError, match="--force"):
        finetune(run, arch, epochs=0.2, progress=False)
    # The fine-tuned weights differ from the supernet's and are what --finetuned exports.
    tuned = run.subnet(arch, weights=path)
    plain = run.subnet(arch)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(tuned.state_dict().values(), plain.state_dict().values(), strict=True)
    )
    code = cli_main(
        [
            "export",
            str(run_dir),
            "--arch",
            str(arch),
            "--format",
            "safetensors",
            "--out",
            str(tmp_path / "ft"),
            "--finetuned",
            "--no-measure",
        ]
    )
    assert code == 0, capsys.readouterr().err
    x = _images(run, arch)
    torch.testing.assert_close(load_exported(tmp_path / "ft")(x), tuned(x))
    other = run.net.space.largest()
    code = cli_main(
        [
            "export",
            str(run_dir),
            "--arch",
            str(other),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "x"),
            "--finetuned",
        ]
    )
    assert code == 2 and "onceforall finetune" in capsys.readouterr().err


# ----------------------------------------------------------------------------- onceforall search


def test_search_cli_infeasible_budget_fails_at_once(run, capsys):
    import time

    start = time.monotonic()
    code = cli_main(["search", str(run.path), "--macs", "1000", "--json"])
    assert code == 2 and time.monotonic() - start < 1.0
    err = capsys.readouterr().err
    smallest = run.net.macs(run.net.space.smallest())
    assert f"{smallest:,}" in err and "infeasible" in err
    assert not (run.path / "accuracy_dataset.jsonl").exists()  # nothing slow ran


@pytest.mark.parametrize("limit", [-1.0, 0.0, float("nan"), float("inf")])
def test_specializer_refuses_a_latency_budget_that_is_no_positive_number_before_measuring(
    run, monkeypatch, limit
):
    from onceforall.specialize import Specializer

    def measured(self):
        raise AssertionError("no latency table may be measured for this budget")

    monkeypatch.setattr(Specializer, "latency_table", property(measured))
    with pytest.raises(ValueError, match="a latency budget must be a positive number"):
        Specializer(run, "onnxruntime").constraints(latency_ms=limit)


@pytest.mark.parametrize(
    "flag, value",
    [("--macs", "-5M"), ("--macs", "0"), ("--params", "-500K"), ("--latency-ms", "-1"),
     ("--latency-ms", "-.5"), ("--latency-ms", "0"), ("--latency-ms", "nan")],
)  # fmt: skip
def test_search_cli_refuses_a_budget_that_is_no_positive_number(tmp_path, capsys, flag, value):
    """While parsing, before any run is opened or latency table measured; a negative value is
    read as the option's value, not as an unknown option."""
    with pytest.raises(SystemExit) as exc:
        cli_main(["search", str(tmp_path / "no-run"), flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {flag}: {value!r}: a budget must be a positive" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_search_and_latency_on_torch_cuda_without_a_gpu_are_refused(run, capsys):
    for argv in (["search", str(run.path), "--backend", "torch-cuda", "--latency-ms", "5"],
                 ["latency", "build", str(run.path), "--backend", "torch-cuda"]):  # fmt: skip
        assert cli_main(argv) == 2
        assert "'torch-cuda' needs a CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_search_under_torchrun_shares_the_accuracy_dataset(tiny_run, tmp_path):
    """Two ranks measure the accuracy dataset together (every other subnet each); rank 0 alone
    searches and prints; the same dataset and answer as one process."""
    import os
    import shutil
    from pathlib import Path

    from onceforall.predictors.accuracy_dataset import build_accuracy_dataset

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = Run.open(run_dir)
    budget = (run.net.macs(run.net.space.smallest()) + run.net.macs(run.net.space.largest())) // 2
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    args = ["search", str(run_dir), "--macs", str(budget), "--samples", "10", "--top", "1",
            "--no-measure", "--json"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "onceforall.cli", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)  # one JSON document: rank 0 alone printed
    assert len(rows) == 1 and rows[0]["macs"] <= budget
    lines = (run_dir / "accuracy_dataset.jsonl").read_text().splitlines()
    assert len(lines) == 10 and not list(run_dir.glob("accuracy_dataset.jsonl.rank*"))
    assert (run_dir / "accuracy_predictor.json").is_file()
    # Each subnet's accuracy is what one process measures (one thread, like each rank).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = build_accuracy_dataset(run.net, run.data, tmp_path / "alone.jsonl", 10,
                                       calibration_images=2000)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    shared = {r["arch"]: r["accuracy"] for r in map(json.loads, lines)}
    assert shared == {str(a): acc for a, acc in zip(alone.archs, alone.accuracies, strict=True)}
    # In one process, the same answer from the files the ranks wrote.
    code = subprocess.run([sys.executable, "-m", "onceforall.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert code.returncode == 0, code.stderr[-3000:]
    assert json.loads(code.stdout)[0]["arch"] == rows[0]["arch"]


def test_search_cli_json_meets_budgets_and_pareto_plots(tiny_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = Run.open(run_dir)
    space = run.net.space
    budget = (run.net.macs(space.smallest()) + run.net.macs(space.largest())) // 2
    # Few timed calls per layer: this checks what search builds and answers, not timing quality.
    common = ["--backend", "torch-cpu", "--samples", "24", "--threads", "1", "--warmup", "1",
              "--repeats", "3"]  # fmt: skip
    code = cli_main(
        ["search", str(run_dir), "--macs", str(budget), "--top", "2", "--json", *common]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    rows = json.loads(out)
    assert 1 <= len(rows) <= 2
    for r in rows:
        assert {
            "arch",
            "predicted_accuracy",
            "holdout_accuracy",
            "latency_ms",
            "macs",
            "params",
            "measured_latency_ms",
        } <= set(r)
        assert r["macs"] == run.net.macs(r["arch"]) <= budget
        assert 0 <= r["holdout_accuracy"] <= 100 and r["measured_latency_ms"] > 0
        # Timed in the same rounds as the table's fitting subnets: the machine's drift with it.
        assert r["latency_drift"] == rows[0]["latency_drift"] > 0
    assert cli_main(["search", str(run_dir), *common, "--repeats", "0"]) != 0
    assert "--repeats 0 must be >= 1" in capsys.readouterr().err
    # The table was built with the timing asked for, and the picks were timed as it was.
    from onceforall.specialize import latency_table_path

    meta = json.loads(latency_table_path(run, "torch-cpu", 1).read_text())["metadata"]
    assert (meta["warmup"], meta["repeats"]) == (1, 3)
    # Everything it built is reused: same answer, and the latency budget works on that table.
    again = cli_main(
        [
            "search",
            str(run_dir),
            "--macs",
            str(budget),
            "--top",
            "2",
            "--json",
            "--no-measure",
            *common,
        ]
    )
    assert again == 0
    assert [r["arch"] for r in json.loads(capsys.readouterr().out)] == [r["arch"] for r in rows]
    limit = max(r["latency_ms"] for r in rows)
    assert (
        cli_main(
            ["search", str(run_dir), "--latency-ms", str(limit), "--json", "--no-measure", *common]
        )
        == 0
    )
    assert all(r["latency_ms"] <= limit for r in json.loads(capsys.readouterr().out))
    # No budget at all: the most accurate arch found anywhere in the space. Measured archs seed
    # the first population, so it is never behind the most accurate of them (a budgeted search
    # may still find a better predicted arch: evolution is not exhaustive, and which one wins
    # changed with the CPU the tiny run trained on).
    assert cli_main(["search", str(run_dir), "--json", "--no-measure", *common]) == 0
    best = json.loads(capsys.readouterr().out)[0]
    lines = (run_dir / "accuracy_dataset.jsonl").read_text().splitlines()
    measured = [json.loads(line)["accuracy"] for line in lines]
    assert len(measured) == 24 and best["predicted_accuracy"] >= max(measured)
    plot = tmp_path / "front.png"
    assert (
        cli_main(
            [
                "search",
                str(run_dir),
                "--pareto",
                "--points",
                "3",
                "--plot",
                str(plot),
                "--no-measure",
                *common,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "Pareto front" in out
    # The printed table: a header with every pick column, one row per measured front arch.
    from onceforall.cli.common import PICK_COLUMNS

    header = next(line for line in out.splitlines() if "pred acc %" in line)
    assert all(title in header for _, title, _ in PICK_COLUMNS)
    assert sum(line.lstrip().startswith("front ") for line in out.splitlines()) == 3
    metrics = json.loads((run_dir / "accuracy_predictor.json").read_text())["metrics"]
    assert f"RMSE {metrics['rmse']:.2f} pp, Kendall tau {metrics['kendall_tau']:.2f}" in out
    # --no-progress: a table still to build is built without bars.
    table = latency_table_path(run, "torch-cpu", 1)
    table.unlink()
    capsys.readouterr()
    argv = ["search", str(run_dir), "--latency-ms", "1e6", "--no-measure", *common]
    assert cli_main([*argv, "--no-progress"]) == 0
    assert "%|" not in capsys.readouterr().err and table.is_file()


# ----------------------------------------------------------------------------- onceforall latency
def test_latency_cli_builds_refuses_to_overwrite_and_validates(tiny_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    common = ["--backend", "torch-cpu", "--threads", "1", "--warmup", "1", "--repeats", "3"]
    assert cli_main(["latency", "build", str(run_dir), *common, "--n", "3"]) == 0
    out, err = capsys.readouterr()
    assert "LatencyTable(" in out and "3 random subnets timed in the same rounds" in out
    assert "%|" in err  # the layers' progress bar
    tables = list((run_dir / "latency").glob("torch-cpu-t1-*.json"))
    assert len(tables) == 1
    before = tables[0].read_bytes()
    assert cli_main(["latency", "build", str(run_dir), *common]) != 0
    assert "pass --force" in capsys.readouterr().err and tables[0].read_bytes() == before
    argv = ["latency", "validate", str(run_dir), *common, "--n", "3", "--no-progress"]
    assert cli_main(argv) == 0
    out, err = capsys.readouterr()
    assert "3 random subnets, torch-cpu: MAPE" in out
    assert "%|" not in err
    assert "the latency table's fitting subnets now take" in out
    assert cli_main(["latency", "validate", str(run_dir), *common[:4], "--repeats", "0"]) != 0
    assert "--repeats 0 must be >= 1" in capsys.readouterr().err


def test_latency_build_force_keeps_the_old_table_until_the_new_one_is_complete(
    tiny_run, tmp_path, capsys, monkeypatch
):
    """`latency build --force` measures first and replaces the old table only with a complete
    new one: interrupted (Ctrl-C) while measuring, the old table stays as it was."""
    import shutil

    from onceforall.predictors import latency_build

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    argv = ["latency", "build", str(run_dir), "--backend", "torch-cpu", "--threads", "1",
            "--warmup", "0", "--repeats", "1", "--n", "0"]  # fmt: skip
    assert cli_main(argv) == 0
    (table,) = (run_dir / "latency").iterdir()
    before = table.read_bytes()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(latency_build, "measure_many", interrupt)
        code = cli_main([*argv, "--force"])
    assert code == 130  # the status the CLI gives an interruption
    assert list((run_dir / "latency").iterdir()) == [table] and table.read_bytes() == before
    capsys.readouterr()
    assert cli_main([*argv, "--force"]) == 0  # measured again, in its place
    assert list((run_dir / "latency").iterdir()) == [table] and table.read_bytes() != before


def test_cli_counts_and_paths_are_checked_before_any_work(run, tmp_path, capsys):
    """Counts that cannot mean anything, and a plot format matplotlib cannot write, stop the
    command at once with the option named (no accuracy dataset or table is measured first)."""
    for option, value in (("--top", "0"), ("--points", "0"), ("--samples", "-1"),
                          ("--threads", "0"), ("--plot", "notes.txt")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["search", str(run.path), "--macs", "5M", option, value])
        assert exit_info.value.code == 2
        assert option in capsys.readouterr().err
    for argv, message in (
        (["latency", "list", str(tmp_path / "nope")], "does not exist"),
        (["search", str(run.path / "config.yaml")], "is a file, not a run directory"),
    ):
        assert cli_main(argv) == 2
        assert message in capsys.readouterr().err
