"""tools/demo.py never writes over an input or another output, reports only files it wrote,
refuses a vocabulary naming a class twice, and predicts without full-size logits per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON
from PIL import Image

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

from chimeraseg.utils.output_files import OutputError  # noqa: E402

pytestmark = pytest.mark.detectron2


@pytest.fixture(scope="module")
def demo_tool():
    return load_script("tools/demo.py", "chimeraseg_demo_outputs_tool")


@pytest.fixture(scope="module")
def built(demo_tool, tiny_opts, synthetic_root):
    opts = [*tiny_opts, "MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"]
    return demo_tool.build_demo(SYNTHETIC_CONFIG, opts, ["cat", "grass", "sky"], ["cat"], 0.5)


def _photo(path: Path, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 48, 3), value, np.uint8)).save(path)
    return path


def _main(demo_tool, tiny_opts, *args: str) -> None:
    demo_tool.main(["--config-file", SYNTHETIC_CONFIG, *args, "--allow-random-weights",
                    *tiny_opts])  # fmt: skip


def test_output_folder_equal_to_the_input_folder_is_refused(demo_tool, tiny_opts, tmp_path):
    photo = _photo(tmp_path / "photos" / "beach.png")
    before = photo.read_bytes()
    with pytest.raises(SystemExit, match=r"is the folder of the input .*beach\.png"):
        _main(demo_tool, tiny_opts, "--input", str(tmp_path / "photos"), "--output",
              str(tmp_path / "photos"))  # fmt: skip
    assert photo.read_bytes() == before and sorted(p.name for p in photo.parent.iterdir()) == [
        "beach.png"
    ]


def test_two_inputs_with_one_stem_are_refused_naming_both(demo_tool, tiny_opts, tmp_path):
    a, b = _photo(tmp_path / "a" / "x.jpg"), _photo(tmp_path / "b" / "x.png")
    with pytest.raises(SystemExit, match=r"inputs .*a/x\.jpg and .*b/x\.png would both write"):
        _main(demo_tool, tiny_opts, "--input", str(a), str(b), "--output", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_empty_input_folder_is_an_error(demo_tool, tiny_opts, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"--input .*empty names no file"):
        _main(demo_tool, tiny_opts, "--input", str(tmp_path / "empty"), "--output", str(tmp_path))


def test_video_output_over_the_input_video_is_refused(demo_tool, tiny_opts, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded")
    with pytest.raises(SystemExit, match=r"is the folder of the input .*clip\.mp4"):
        _main(demo_tool, tiny_opts, "--video-input", str(video), "--output", str(tmp_path))
    assert video.read_bytes() == b"not decoded"


def test_duplicate_vocabulary_name_is_an_error_naming_it(demo_tool, tiny_opts, tmp_path):
    photo = _photo(tmp_path / "in" / "a.jpg")
    with pytest.raises(ValueError, match=r"the name 'grass' is given twice, as class 0 .* class 3"):
        _main(demo_tool, tiny_opts, "--input", str(photo), "--output", str(tmp_path / "o"),
              "--vocabulary", "grass,sky,water,grass")  # fmt: skip


def test_video_without_decodable_frames_reports_no_file(demo_tool, built, tmp_path, capsys):
    class Undecodable:  # opens, but no frame decodes
        def isOpened(self):  # noqa: N802 -- OpenCV's name
            return True

        def read(self):
            return False, None

        def get(self, prop):
            return 25.0

        def release(self):
            pass

    target = tmp_path / "out" / "clip.mp4"
    with pytest.raises(ValueError, match=r"video 'clip\.mp4': no frame could be decoded"):
        demo_tool.run_on_stream(built, Undecodable(), "video 'clip.mp4'", str(target))
    assert not target.exists() and "wrote" not in capsys.readouterr().out


def test_failed_image_write_is_an_error_not_a_silent_skip(built, tmp_path, monkeypatch):
    import chimeraseg.utils.demo_images as predictor

    photo = _photo(tmp_path / "in" / "a.jpg")
    monkeypatch.setattr(predictor.cv2, "imwrite", lambda path, image: False)  # read-only folder
    with pytest.raises(OutputError, match=r"out/a\.png was not written"):
        predictor.run_on_images(built, [str(photo)], str(tmp_path / "out"), similarity=False)


def test_prediction_matches_the_full_logits_without_computing_them(built, monkeypatch):
    import chimeraseg.d2.meta_arch as meta_arch
    from chimeraseg.evaluation.gamma_sweep import biased_argmax

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(150, 230, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = built.model(built.inputs(image))[0]["sem_seg"]  # (N, H, W)
    expected = biased_argmax(logits, built.model.unseen_mask, built.gamma)

    def no_full_logits(*args, **kwargs):
        raise AssertionError("the demo must not build (N, H, W) logits")

    monkeypatch.setattr(meta_arch, "resize_logits", no_full_logits)
    monkeypatch.setattr(meta_arch, "crop_and_resize", no_full_logits)
    got = built.predict(image)
    assert got.shape == (150, 230) and got.dtype == torch.long
    top2 = logits.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4  # ties may break either way after float reordering
    assert torch.equal(got[clear], expected[clear]) and clear.float().mean() > 0.9
