"""Training configs: YAML files and ``key=value`` overrides mapped onto the typed dataclasses of
``onceforall.config``, and the errors that name the key, the value and the fix (pure parsing: no
data, no training)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from onceforall.cli import main as cli_main
from onceforall.config import config_from_dict, config_to_dict, load_config

REPO = Path(__file__).resolve().parents[1]

# A small valid config; the tests change one thing at a time.
BASE = {
    "model": {"family": "mbv3_small_images", "resolutions": [16, 20]},
    "data": {"dataset": "synthetic", "holdout_size": 64},
    "batch_size": 32,
    "optimizer": {"name": "sgd", "weight_decay": 3.0e-5, "grad_clip": 5.0},
    "schedule": {
        "phases": [
            {"name": "full", "largest_only": True, "epochs": 1, "lr": 0.05, "distill": False},
            {"name": "kernel", "expand_ratios": [6], "depths": [4], "epochs": 1, "lr": 0.02},
        ]
    },
}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    return path


def _write(tmp_path: Path, text: str | bytes, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_the_checks(path):
    config = load_config(path)
    # The loader that refuses duplicate keys reads them as yaml.safe_load does.
    assert config_to_dict(config) == config_to_dict(
        config_from_dict(yaml.safe_load(path.read_text()))
    )


# ----------------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(
    "override, key",
    [
        ("schedule.phases.0.lr=.nan", "schedule.phases.0.lr"),
        ("schedule.phases.0.epochs=.inf", "schedule.phases.0.epochs"),
        ("schedule.phases.1.warmup_epochs=.NaN", "schedule.phases.1.warmup_epochs"),
        ("schedule.phases.1.weight_decay=.nan", "schedule.phases.1.weight_decay"),
        ("optimizer.weight_decay=.nan", "optimizer.weight_decay"),
        ("optimizer.weight_decay=-.inf", "optimizer.weight_decay"),
        ("optimizer.momentum=.nan", "optimizer.momentum"),
        ("optimizer.label_smoothing=.nan", "optimizer.label_smoothing"),
        ("optimizer.grad_clip=+.inf", "optimizer.grad_clip"),
        ("distill.temperature=.Inf", "distill.temperature"),
        ("distill.kd_ratio=.nan", "distill.kd_ratio"),
        ("checkpoint_minutes=.inf", "checkpoint_minutes"),
        ("model.width_mult=.inf", "model.width_mult"),
        ("model.dropout=.nan", "model.dropout"),
        ("model.expand_ratios=[3, .nan]", "model.expand_ratios.1"),
        ("optimizer.weight_decay=1e999", "optimizer.weight_decay"),  # overflows to inf
        (f"optimizer.weight_decay={'9' * 400}", "optimizer.weight_decay"),  # no float that big
    ],
)
def test_non_finite_numbers_are_refused(cfg, override, key):
    with pytest.raises(ValueError, match=rf"^{key}: expected a finite number, got "):
        load_config(cfg, [override])


def test_non_finite_numbers_are_refused_in_files_and_dicts(tmp_path):
    text = yaml.safe_dump(BASE, sort_keys=False).replace("lr: 0.05", "lr: .nan")
    with pytest.raises(ValueError, match=r"schedule\.phases\.0\.lr: expected a finite number"):
        load_config(_write(tmp_path, text))
    data = {**BASE, "distill": {"temperature": math.inf}}
    with pytest.raises(
        ValueError, match=r"distill\.temperature: expected a finite number, got inf"
    ):
        config_from_dict(data)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_nan_and_inf_words_are_not_numbers(cfg, value):
    # Strings, in YAML (only .nan and .inf are floats); refused as before.
    with pytest.raises(ValueError, match=r"optimizer\.weight_decay: expected a number"):
        load_config(cfg, [f"optimizer.weight_decay={value}"])


# ----------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["distill.temperature=0"], r"distill\.temperature=0\.0 must be > 0"),
        (["distill.temperature=-2"], r"distill\.temperature=-2\.0 must be > 0"),
        (["distill.kd_ratio=-1"], r"distill\.kd_ratio=-1\.0 must be >= 0 \(0: no distillation\)"),
        (["optimizer.grad_clip=-1"], r"optimizer\.grad_clip=-1\.0 must be >= 0 \(0 or null: no"),
        (["optimizer.label_smoothing=2"], r"optimizer\.label_smoothing=2\.0 must be in \[0, 1\)"),
        (["optimizer.label_smoothing=1"], r"optimizer\.label_smoothing=1\.0 must be in \[0, 1\)"),
        (["optimizer.label_smoothing=-0.1"], r"optimizer\.label_smoothing=-0\.1 must be in"),
        (["optimizer.momentum=1"], r"optimizer\.momentum=1\.0 must be in \[0, 1\)"),
        (["optimizer.momentum=-0.5"], r"optimizer\.momentum=-0\.5 must be in \[0, 1\)"),
        # torch's SGD refuses Nesterov without momentum (when the optimizer is built).
        (
            ["optimizer.momentum=0"],
            r"optimizer\.momentum=0\.0 with optimizer\.nesterov=true: .*"
            r"set optimizer\.nesterov=false",
        ),
        (["schedule.sandwich_random=-1"], r"schedule\.sandwich_random=-1 must be >= 0"),
        (["num_threads=-1"], r"num_threads=-1 must be >= 0 \(0 or null: torch's default\)"),
        (["eval_images=0"], r"eval_images=0 must be positive \(or null: the whole holdout\)"),
        (["eval_images=-5"], r"eval_images=-5 must be positive"),
        (["bn_calibration_images=0"], r"bn_calibration_images=0 must be positive"),
        (["data.holdout_size=0"], r"data\.holdout_size=0 must be positive"),
        (["checkpoint_minutes=-1"], r"checkpoint_minutes=-1\.0 must be >= 0 \(0: every step\)"),
        (["model.dropout=1"], r"model\.dropout=1\.0 must be in \[0, 1\)"),
        (["model.dropout=-0.1"], r"model\.dropout=-0\.1 must be in \[0, 1\)"),
        (["model.width_mult=0"], r"model\.width_mult=0\.0 must be > 0"),
        (["seed=18446744073709551616"], r"seed=18446744073709551616 must be in \[-2\*\*63, 2"),
        (["data.split_seed=-9223372036854775809"], r"data\.split_seed=-9223372036854775809 must"),
        (["data.train_subset=0"], r"data\.train_subset must be positive"),
        (
            ["schedule.phases.1.warmup_epochs=-1"],
            r"schedule\.phases\.1 \(kernel\): warmup_epochs=-1\.0 must be >= 0",
        ),
        (["schedule.phases.0.epochs=0"], r"schedule\.phases\.0 \(full\): epochs=0\.0 must be > 0"),
        (["schedule.phases.0.lr=-0.1"], r"schedule\.phases\.0 \(full\): lr=-0\.1 must be > 0"),
        (
            ["schedule.phases.1.subnets_per_step=0"],
            r"schedule\.phases\.1 \(kernel\): subnets_per_step=0 must be positive",
        ),
    ],
)
def test_out_of_range_values_are_refused(cfg, overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(cfg, overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["distill.kd_ratio=0"],
        ["optimizer.grad_clip=0"],
        ["optimizer.grad_clip=null"],
        ["optimizer.label_smoothing=0"],
        ["optimizer.momentum=0", "optimizer.nesterov=false"],
        ["optimizer.name=adamw", "optimizer.momentum=0"],
        ["schedule.sandwich_random=0", "schedule.kind=sandwich"],
        ["num_threads=0"],
        ["num_threads=null"],
        ["eval_images=1"],
        ["eval_images=null"],
        ["checkpoint_minutes=0"],
        ["model.dropout=0"],
        ["seed=-1"],
        ["data.holdout_size=1"],
        ["schedule.phases.1.warmup_epochs=1"],
    ],
)
def test_boundary_values_are_accepted(cfg, overrides):
    load_config(cfg, overrides)


# ----------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    "text, key, line, first",
    [
        (
            "data: {dataset: synthetic, holdout_size: 64}\n"
            "schedule: {phases: [{name: full, largest_only: true}]}\n"
            "data:\n  dataset: cifar10\n",
            "data",
            3,
            1,
        ),
        ("batch_size: 32\nseed: 1\nbatch_size: 64\n", "batch_size", 3, 1),
        ("batch_size: 32\n'batch_size': 64\n", "batch_size", 2, 1),  # the same key, quoted
        ("optimizer:\n  name: sgd\n  momentum: 0.9\n  name: adamw\n", "name", 4, 2),
        ("schedule:\n  phases:\n    - {name: full, lr: 0.1, lr: 0.2}\n", "lr", 3, 3),
    ],
)
def test_duplicate_yaml_keys_are_refused(tmp_path, text, key, line, first):
    path = _write(tmp_path, text)
    message = (
        f"{path} is not valid YAML: duplicate key '{key}' at line {line} (first at line {first})"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(path)


def test_merge_keys_may_still_override_what_they_merge(tmp_path):
    # A key merged in from an alias (<<) is not a duplicate of one written next to it.
    text = (
        "model: {family: mbv3_small_images, resolutions: [16, 20]}\n"
        "schedule:\n"
        "  phases:\n"
        "    - &full {name: full, largest_only: true, epochs: 1, lr: 0.05}\n"
        "    - <<: *full\n"
        "      name: kernel\n"
        "      largest_only: false\n"
    )
    phases = load_config(_write(tmp_path, text)).schedule.phases
    assert [(p.name, p.largest_only, p.lr) for p in phases] == [
        ("full", True, 0.05),
        ("kernel", False, 0.05),
    ]


def test_duplicate_keys_in_an_override_value_are_refused(cfg):
    with pytest.raises(ValueError, match=r"override 'data=\{dataset: a, dataset: b\}'.*duplicate"):
        load_config(cfg, ["data={dataset: a, dataset: b}"])


def test_the_loader_keeps_yaml_1_1_numbers_and_safety(tmp_path, cfg):
    config = load_config(cfg, ["optimizer.weight_decay=5e-4", "batch_size=1_024"])
    assert config.optimizer.weight_decay == 5e-4 and config.batch_size == 1024
    with pytest.raises(ValueError, match="is not valid YAML"):  # no arbitrary Python objects
        load_config(_write(tmp_path, "seed: !!python/object/apply:os.getpid []\n", "evil.yaml"))


# ----------------------------------------------------------------------------- files, overrides


def test_a_directory_is_not_called_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"config file {re.escape(str(tmp_path))} is a dir"):
        load_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00\x01binary", b"seed: 1\nname: caf\xe9\n", b"\x89PNG\r\n\x1a\n\x00\x00"],
)
def test_a_non_utf8_file_is_named(tmp_path, content):
    path = _write(tmp_path, content, "weights.bin")
    with pytest.raises(ValueError, match=f"config file {re.escape(str(path))} is not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just text\n", "str"),
                                        ("0\n", "int")])  # fmt: skip
def test_a_config_that_is_not_a_mapping_is_named(tmp_path, text, kind):
    path = _write(tmp_path, text)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: a config must be a mapping .* got {kind}"
    ):
        load_config(path)


@pytest.mark.parametrize(
    "override, raw",
    [
        ("data.train_subset=[", "["),
        ("data.root={a: 1", "{a: 1"),
        ('data.root="abc', '"abc'),
        ("model.family=@x", "@x"),
        ("seed=*anchor", "*anchor"),
    ],
)
def test_malformed_yaml_in_an_override_names_the_override(cfg, override, raw):
    message = f"override '{override}': the value '{raw}' is not valid YAML: "
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(cfg, [override])


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("batch_size.x=1", "batch_size", "32"),
        ("data.dataset.root=/x", "data.dataset", "'synthetic'"),
        ("optimizer.grad_clip.max=1", "optimizer.grad_clip", "5.0"),
        ("schedule.phases.0.name.x=1", "schedule.phases.0.name", "'full'"),
        ("model.resolutions.0.x=1", "model.resolutions.0", "16"),
    ],
)
def test_a_dotted_override_under_a_single_value_names_the_key(cfg, override, key, value):
    message = rf"override '{override}': {key}={value} is a single value, not a section"
    with pytest.raises(ValueError, match=message + rf".*set it as {key}=VALUE"):
        load_config(cfg, [override])


@pytest.mark.parametrize("override", ["=3", "data..root=/x", "data.=1", ".seed=1"])
def test_an_empty_key_in_an_override_is_refused(cfg, override):
    with pytest.raises(ValueError, match=rf"override '{override}': empty key"):
        load_config(cfg, [override])


def test_overrides_fill_an_empty_section(tmp_path):
    # ``model:`` with nothing under it is null in YAML: overrides may still set its keys.
    text = yaml.safe_dump({k: v for k, v in BASE.items() if k != "model"}) + "model:\n"
    config = load_config(_write(tmp_path, text), ["model.resolutions=[16, 20]"])
    assert config.model.resolutions == [16, 20] and config.model.family == "mbv3_small_images"


@pytest.mark.parametrize(
    "make, overrides, message",
    [
        (lambda d: d, [], "is a directory"),
        (lambda d: _write(d, b"\xff\xfe\x00"), [], "is not UTF-8 text"),
        (lambda d: _write(d, "seed: 1\nseed: 2\n"), [], "duplicate key 'seed' at line 2"),
        (lambda d: _write(d, yaml.safe_dump(BASE)), ["data.train_subset=["], "not valid YAML"),
        (lambda d: _write(d, yaml.safe_dump(BASE)), ["batch_size.x=1"], "batch_size=32 is a"),
        (lambda d: _write(d, yaml.safe_dump(BASE)), ["distill.temperature=.nan"], "finite"),
    ],
)
def test_the_cli_reports_config_errors_without_a_traceback(
    tmp_path, capsys, make, overrides, message
):
    path = make(tmp_path)
    code = cli_main(["train", str(path), "--out", str(tmp_path / "run"), *overrides])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
