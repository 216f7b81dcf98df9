"""Pseudo-mask quality: metric functions on hand-made labels, the pipeline, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from chimeraseg_test_utils import TINY_CLIP_CONFIG, build_tiny_clip, load_script

from chimeraseg.data.splits import get_split
from chimeraseg.data.synthetic import make_synthetic_dataset
from chimeraseg.evaluation.pseudo_mask_quality import (
    QualityAccumulator,
    Sample,
    coverage_counts,
    evaluate_pseudo_masks,
    format_sweep_table,
    hide_unseen,
    one_region_purity_counts,
    precision_recall_iou,
    purity_summary,
    recommend,
    region_purity_counts,
    sweep,
    unseen_label_counts,
)
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig

NAMES = ("c0", "c1", "c2", "c3", "c4")
SEEN, UNSEEN = (0, 1, 3), (2, 4)  # Ns = 3; unseen label 3 -> class 2, 4 -> class 4
TRUE = torch.tensor([[2, 2, 2, 4], [4, 4, 255, 0]])


def test_coverage_and_purity_inductive() -> None:
    pseudo = torch.tensor([[3, 3, 255, 3], [4, 4, 3, 0]])  # latent regions 3 and 4
    assert coverage_counts(pseudo, TRUE, UNSEEN, num_seen=3, latent_start=3) == (6, 5, 0)
    sizes, majority = region_purity_counts(pseudo, TRUE, latent_start=3, num_classes=5)
    # region 3: true 2, 2, 4 (the true-ignore pixel does not count); region 4: true 4, 4
    assert sizes.tolist() == [3, 2] and majority.tolist() == [2, 2]
    weighted, unweighted = purity_summary(sizes, majority)
    assert weighted == pytest.approx(80.0) and unweighted == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert all(math.isnan(v) for v in purity_summary(np.zeros(0), np.zeros(0)))
    assert one_region_purity_counts(TRUE, UNSEEN, num_classes=5) == (6, 3)  # 3 x c2, 3 x c4


def test_transductive_counts_precision_recall_iou() -> None:
    pseudo = torch.tensor([[3, 3, 4, 5], [4, 5, 3, 0]])  # 3, 4 unseen labels; 5 latent
    assert coverage_counts(pseudo, TRUE, UNSEEN, num_seen=3, latent_start=5) == (6, 6, 4)
    tp, fp, fn = unseen_label_counts(pseudo, TRUE, UNSEEN, num_seen=3)
    assert tp.tolist() == [2, 1] and fp.tolist() == [0, 1] and fn.tolist() == [1, 2]
    precision, recall, iou = precision_recall_iou(tp, fp, fn)
    np.testing.assert_allclose(precision, [100.0, 50.0])
    np.testing.assert_allclose(recall, [200 / 3, 100 / 3])
    np.testing.assert_allclose(iou, [200 / 3, 25.0])
    undefined = precision_recall_iou(np.array([0]), np.array([0]), np.array([0]))
    assert all(math.isnan(v[0]) for v in undefined)

    acc = QualityAccumulator(NAMES, SEEN, UNSEEN, latent_start=5)
    acc.update(pseudo, TRUE, num_latent=1)
    acc.update(torch.full_like(TRUE, 255), TRUE, num_latent=0)  # nothing labelled
    out = acc.summary()
    assert out["images"] == 2 and out["hidden_pixels"] == 12
    assert out["coverage"] == pytest.approx(50.0)
    assert out["coverage_unseen_label"] == pytest.approx(100 * 4 / 12)
    assert out["coverage_latent"] == pytest.approx(100 * 2 / 12)
    assert out["purity_weighted"] == pytest.approx(100.0) and out["regions_per_image"] == 0.5
    assert out["purity_one_region"] == pytest.approx(50.0) and out["coverage_ceiling"] == 100.0
    c2 = out["unseen"]["c2"]  # tp 2, fp 0, fn 1 + 3
    assert (c2["precision"], c2["recall"], c2["iou"]) == pytest.approx((100.0, 100 / 3, 100 / 3))
    assert out["unseen"]["c4"]["iou"] == pytest.approx(100 / 7)  # tp 1, fp 1, fn 2 + 3
    assert out["unseen_precision"] == pytest.approx(75.0)
    assert out["unseen_recall"] == pytest.approx(25.0)


def test_hide_unseen_is_the_training_rule() -> None:
    true = torch.tensor([[0, 1, 2], [3, 4, 255]])
    assert hide_unseen(true, SEEN, UNSEEN).tolist() == [[0, 1, 255], [2, 255, 255]]


def _scene() -> tuple[Sample, torch.Tensor]:
    """64x72 image: top half seen class 0; bottom half unseen class 2 on columns 0..35 and
    unseen class 4 on 36..71. Teacher grid 4x5 (the width is padded to 80): direction a on
    columns 0-1, b on columns 2-4 of the bottom half, c on the top half."""
    true = torch.zeros(64, 72, dtype=torch.long)
    true[32:, :36], true[32:, 36:] = 2, 4
    a, b, c = torch.eye(16)[:3]
    dense = c.view(1, 16, 1, 1).repeat(1, 1, 4, 5)
    dense[0, :, 2:, :2] = a[:, None, None] + 0.01 * torch.randn(16, 2, 2)
    dense[0, :, 2:, 2:] = b[:, None, None] + 0.01 * torch.randn(16, 2, 3)
    return Sample("s", torch.zeros(3, 64, 72), true), dense


def test_pipeline_pads_labels_to_the_teacher_grid() -> None:
    """Region a = 32 rows x 32 columns of class 2; region b = 32 x 40 of which 4 columns are
    class 2 (the cell straddling the boundary) and the last cell is half padding."""
    sample, dense = _scene()
    out = evaluate_pseudo_masks(
        [sample], [dense], class_names=NAMES, seen_ids=SEEN, unseen_ids=UNSEEN,
        config=PseudoMaskConfig(scales=(2,)),
    )  # fmt: skip
    assert out["coverage"] == pytest.approx(100.0) and out["regions_per_image"] == 2
    assert out["purity_weighted"] == pytest.approx(100 * (1024 + 1152) / 2304)
    assert out["purity_unweighted"] == pytest.approx(95.0)
    assert out["coverage_ceiling"] == pytest.approx(100.0)
    assert out["purity_one_region"] == pytest.approx(100 * 1152 / 2304)  # 36 vs 36 columns
    assert "unseen_iou" not in out


def test_coverage_ceiling_counts_hidden_pixels_outside_region_cells() -> None:
    """An 8x8 unseen blob fills a quarter of a teacher cell (not a region cell); a whole cell of
    another unseen class is one. Ceiling = coverage = 256 / (64 + 256)."""
    true = torch.zeros(32, 32, dtype=torch.long)
    true[:8, :8], true[16:, 16:] = 2, 4
    out = evaluate_pseudo_masks(
        [Sample("s", torch.zeros(3, 32, 32), true)], [torch.randn(1, 8, 2, 2)],
        class_names=NAMES, seen_ids=SEEN, unseen_ids=UNSEEN, config=PseudoMaskConfig(min_area=1),
    )  # fmt: skip
    assert out["coverage_ceiling"] == pytest.approx(80.0) and out["coverage"] == pytest.approx(80.0)
    assert out["purity_weighted"] == 100.0 and out["regions_per_image"] == 1


def test_sweep_table_and_recommendation(tiny_clip: torch.nn.Module) -> None:
    sample, _ = _scene()
    sample = Sample("s", torch.rand(3, 64, 72) * 255, sample.true)
    text = torch.nn.functional.normalize(torch.randn(5, 32), dim=-1)
    rows = sweep(
        tiny_clip, [sample], class_names=NAMES, seen_ids=SEEN, unseen_ids=UNSEEN,
        scale_sets=[(2, 4), (8,)], dense_paths=("value_ffn", "value"),
        modes=("inductive", "transductive"), text=text,
    )  # fmt: skip
    assert [(r["dense_path"], r["mode"], r["scales"]) for r in rows][:3] == [
        ("value_ffn", "inductive", (2, 4)),
        ("value_ffn", "inductive", (8,)),
        ("value_ffn", "transductive", (2, 4)),
    ]
    assert len(rows) == 8 and all("unseen_iou" in r for r in rows if r["mode"] == "transductive")
    table = format_sweep_table(rows)
    assert len(table.splitlines()) == 2 + 8 and table.count("| value |") == 4
    fake = [
        {"mode": "inductive", "coverage": 95.0, "purity_weighted": 70.0, "scales": (2,)},
        {"mode": "inductive", "coverage": 91.0, "purity_weighted": 85.0, "scales": (4,)},
        {"mode": "inductive", "coverage": 80.0, "purity_weighted": 99.0, "scales": (8,)},
        {"mode": "transductive", "coverage": 50.0, "purity_weighted": math.nan, "scales": (8,)},
    ]
    best = recommend(fake)
    assert best["inductive"]["scales"] == (4,) and best["transductive"] is None


@pytest.mark.filterwarnings("ignore:CLIP .* uses RANDOM weights")
def test_cli_smoke_on_synthetic_dataset(tmp_path, capsys) -> None:
    root = make_synthetic_dataset(str(tmp_path), num_train=2, num_val=3)
    config = tmp_path / "tiny-quality-clip.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    tool = load_script("tools/pseudo_mask_quality.py")
    out_json = tmp_path / "quality.json"
    payload = tool.main(
        [
            "--dataset-dir", root, "--split", "synthetic", "--clip-name", str(config),
            "--allow-random-clip", "--templates", "single", "--sweep", "--sweep-scales", "2,4;8",
            "--setting", "both", "--output-json", str(out_json),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "| setting | dense path | scales |" in printed and "2 images (160x200" in printed
    assert len(payload["rows"]) == 8 and payload["images"] == 2
    saved = json.loads(out_json.read_text())
    assert {r["dense_path"] for r in saved["rows"]} == {"value_ffn", "value"}
    assert set(saved["recommended"]) == {"inductive", "transductive"}
    for row in saved["rows"]:
        assert row["hidden_pixels"] > 0 and 0 <= row["coverage"] <= 100

    args = tool.parse_args(
        [
            "--image-dir", f"{root}/val2017", "--label-dir",
            f"{root}/stuffthingmaps_detectron2/val2017", "--split", "synthetic",
            "--max-images", "1", "--short-side", "96", "--crop", "64", "--dense-path", "value",
            "--scales", "4",
        ]
    )  # fmt: skip
    single = tool.run(args, clip_model=build_tiny_clip())
    assert single["images"] == 1 and [r["scales"] for r in single["rows"]] == [[4]]
    assert "1 images (64x64" in capsys.readouterr().out
    split = get_split("synthetic")
    assert single["rows"][0]["mode"] == "inductive" and len(split.unseen) == 3


def test_cli_rejects_bad_options() -> None:
    tool = load_script("tools/pseudo_mask_quality.py")
    with pytest.raises(ValueError, match=r"scales must be positive integers, got '0,2'"):
        tool.parse_scales("0,2")
    with pytest.raises(ValueError, match="'S' or 'H,W'"):
        tool.parse_crop("1,2,3")
    with pytest.raises(ValueError, match="--dataset-dir"):
        tool.data_dirs(tool.parse_args(["--split", "synthetic", "--image-dir", "x"]))
