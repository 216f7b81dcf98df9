"""tools/inference_agreement.py: an exact option agrees everywhere; a lossy one is measured."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402


@pytest.mark.detectron2
def test_exact_option_agrees_everywhere_and_bfloat16_is_measured(
    tiny_opts, synthetic_root, tmp_path
):
    from detectron2.modeling import build_model

    from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer
    from chimeraseg.d2.config import get_chimeraseg_cfg

    tool = load_script("tools/inference_agreement.py", "chimeraseg_inference_agreement")
    # One set of weights for every build (as a trained checkpoint is).
    model = build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts))
    ChimeraSegCheckpointer(model, str(tmp_path)).save("weights")
    opts = [*tiny_opts, "MODEL.WEIGHTS", str(tmp_path / "weights.pth"), "TEST.GAMMA", "0.5"]
    exact, bf16 = tool.compare(
        SYNTHETIC_CONFIG, opts, ["TEST.CSH_CHUNK_TOKENS 7", "TEST.AMP.ENABLED True"]
    )
    # Chunking the CSH is exact: same argmax at every labelled pixel, same metrics.
    assert exact["agreement"] == 100.0
    for key in ("sIoU", "uIoU", "hIoU"):
        assert exact[key] == pytest.approx(exact[f"{key}_exact"], nan_ok=True)
    # bfloat16 is lossy but close: measured 98.97% agreement, sIoU 8.498 vs 8.502 in float32.
    assert 95.0 <= bf16["agreement"] <= 100.0
    for key in ("sIoU", "uIoU", "hIoU"):
        assert abs(bf16[key] - bf16[f"{key}_exact"]) <= 1.0, (key, bf16)
    assert bf16["option"] == "TEST.AMP.ENABLED True"


@pytest.mark.detectron2
def test_sem_seg_postprocess_row_equals_at_the_native_size_and_differs_when_resized(
    tiny_opts, synthetic_root, tmp_path
):
    from detectron2.modeling import build_model

    from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer
    from chimeraseg.d2.config import get_chimeraseg_cfg

    tool = load_script("tools/inference_agreement.py", "chimeraseg_inference_agreement")
    model = build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts))
    ChimeraSegCheckpointer(model, str(tmp_path)).save("weights")
    opts = [*tiny_opts, "MODEL.WEIGHTS", str(tmp_path / "weights.pth")]
    # The test images keep their size (short side = MIN_SIZE_TEST): both paths agree.
    (native,) = tool.compare(SYNTHETIC_CONFIG, opts, [tool.D2_POSTPROCESS])
    assert native["option"] == "sem_seg_postprocess" and native["agreement"] == 100.0
    assert native["mIoU"] == pytest.approx(native["mIoU_exact"])
    # Resized to short side 96 and back: two resamples against one, some pixel moves.
    (resized,) = tool.compare(
        SYNTHETIC_CONFIG, [*opts, "INPUT.MIN_SIZE_TEST", "96"], [tool.D2_POSTPROCESS]
    )
    assert 0.0 < resized["agreement"] < 100.0
