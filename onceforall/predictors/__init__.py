"""Predictors of subnet cost: latency tables per backend."""

from onceforall.predictors.accuracy import (
    AccuracyPredictor,
    ensure_predictor,
    fit_accuracy_predictor,
)
from onceforall.predictors.accuracy_dataset import (
    AccuracyDataset,
    build_accuracy_dataset,
    sample_archs,
)
from onceforall.predictors.latency import LatencyTable, fit_line
from onceforall.predictors.latency_build import build_latency_table
from onceforall.predictors.latency_validation import (
    LatencyValidation,
    round_validation,
    table_drift,
    validate_latency,
)
from onceforall.predictors.timing import (
    BACKENDS,
    CLOCKS,
    LATENCY_THREADS,
    measure_latency,
    onnx_session,
)

__all__ = [
    "BACKENDS",
    "CLOCKS",
    "LATENCY_THREADS",
    "AccuracyDataset",
    "AccuracyPredictor",
    "LatencyTable",
    "LatencyValidation",
    "build_accuracy_dataset",
    "build_latency_table",
    "ensure_predictor",
    "fit_accuracy_predictor",
    "fit_line",
    "measure_latency",
    "onnx_session",
    "round_validation",
    "sample_archs",
    "table_drift",
    "validate_latency",
]
