"""Sweep summaries, flat result keys, strict JSON and the two figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from chimeraseg.evaluation.metrics import zero_shot_metrics
from chimeraseg.evaluation.plots import plot_gamma_sweep, plot_per_class_iou
from chimeraseg.evaluation.report import (
    DEFAULT_GAMMA_SWEEP,
    flat_results,
    format_table,
    gamma_key,
    summarize_sweep,
    write_json,
)

NAMES = ["a", "b", "c"]


def _confs() -> np.ndarray:
    """Two γ: at γ = 0 the unseen class c is never predicted, at γ = 1 it is."""
    return np.array([[[5, 1, 0], [0, 4, 0], [2, 1, 0]], [[5, 0, 1], [0, 3, 1], [0, 0, 3]]])


def test_summary_reports_every_gamma_and_the_headline():
    summary = summarize_sweep(_confs(), [0.0, 1.0], 1.0, [0, 1], [2], NAMES)
    assert summary["gamma"] == 1.0
    assert summary["headline"] == zero_shot_metrics(_confs()[1], [0, 1], [2], NAMES)
    assert [row["gamma"] for row in summary["sweep"]] == [0.0, 1.0]
    assert summary["sweep"][0]["uIoU"] == 0.0 and summary["sweep"][0]["hIoU"] == 0.0
    assert summary["sweep"][1]["uIoU"] == pytest.approx(60.0)  # 3 / (3 + 2 FP)
    flat = flat_results(summary)
    assert all(isinstance(v, float) for v in flat.values())  # print_csv_format-compatible
    assert flat["hIoU"] == flat["hIoU@gamma=1.00"] and flat["gamma"] == 1.0
    assert flat["uIoU@gamma=0.00"] == 0.0
    with pytest.raises(ValueError, match="headline gamma 0.5 is not in the sweep"):
        summarize_sweep(_confs(), [0.0, 1.0], 0.5, [0, 1], [2], NAMES)


def test_gamma_keys_and_default_sweep():
    assert gamma_key("hIoU", 0.5) == "hIoU@gamma=0.50"
    assert gamma_key("uIoU", 0.125) == "uIoU@gamma=0.125"
    assert DEFAULT_GAMMA_SWEEP[0] == 0.0 and DEFAULT_GAMMA_SWEEP[-1] == 1.0
    assert 0.5 in DEFAULT_GAMMA_SWEEP and len(DEFAULT_GAMMA_SWEEP) == 11


def test_write_json_is_strict_and_table_lists_classes(tmp_path):
    metrics = zero_shot_metrics(np.array([[3, 1, 0], [0, 0, 0], [0, 0, 2]]), [0, 1], [2], NAMES)
    path = write_json(str(tmp_path / "sub" / "m.json"), {"m": metrics, "n": np.int64(3)})
    text = (tmp_path / "sub" / "m.json").read_text()
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded["m"]["IoU-b"] is None and loaded["n"] == 3 and path.endswith("m.json")
    table = format_table(metrics, NAMES, [0, 1], [2])
    lines = table.splitlines()
    assert any(line.startswith("c ") and "unseen" in line for line in lines)
    assert any(line.startswith("hIoU") for line in lines)


def test_plots_are_written(tmp_path):
    metrics = zero_shot_metrics(np.array([[3, 1, 0], [0, 0, 0], [0, 0, 2]]), [0, 1], [2], NAMES)
    assert math.isnan(metrics["IoU-b"])  # a NaN bar must not break the chart
    bars = plot_per_class_iou(metrics, NAMES, [0, 1], [2], str(tmp_path / "x" / "iou.png"))
    curve = plot_gamma_sweep(
        [1.0, 0.0, 0.5],
        {"hIoU": [3.0, 1.0, 2.0], "uIoU": [4.0, 0.0, 3.0]},
        str(tmp_path / "gamma.png"),
        headline_gamma=0.5,
    )
    for path in (bars, curve):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100
    with pytest.raises(ValueError, match=r"sweep\['hIoU'\] has 1 values for 3 gammas"):
        plot_gamma_sweep([0.0, 0.5, 1.0], {"hIoU": [1.0]}, str(tmp_path / "bad.png"))
