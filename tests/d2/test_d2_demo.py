"""tools/demo.py writes an overlay (and a similarity map) for a given vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402


def _demo_module():
    return load_script("tools/demo.py", "chimeraseg_demo_tool")


def test_demo_writes_images_for_a_custom_vocabulary(tiny_opts, synthetic_root, tmp_path):
    import cv2

    demo = _demo_module()
    image = sorted((Path(synthetic_root) / "synthetic_zs" / "val2017").glob("*.jpg"))[0]
    demo.main(["--config-file", SYNTHETIC_CONFIG, "--input", str(image), "--output",
               str(tmp_path), "--vocabulary", "cat,grass,sky", "--unseen", "cat",
               "--similarity-map", "--allow-random-weights", *tiny_opts])  # fmt: skip
    out = cv2.imread(str(tmp_path / (image.stem + ".png")))
    assert out is not None and out.shape[1] == 200 and out.shape[0] > 160  # overlay + legend
    assert os.path.isfile(tmp_path / (image.stem + "_similarity.png"))


def test_demo_rejects_unseen_names_outside_the_vocabulary(tiny_opts, synthetic_root, tmp_path):
    demo = _demo_module()
    with pytest.raises(
        ValueError, match=r"unseen names \['dog'\] are not in the vocabulary \['cat', 'sky'\]"
    ):
        demo.build_demo(SYNTHETIC_CONFIG, tiny_opts, ["cat", "sky"], ["dog"])


def test_demo_writes_label_pngs_and_their_names_from_a_vocabulary_file(
    tiny_opts, synthetic_root, tmp_path
):
    import json

    import numpy as np

    from chimeraseg.data.io import read_label

    demo = _demo_module()
    image = sorted((Path(synthetic_root) / "synthetic_zs" / "val2017").glob("*.jpg"))[0]
    names = tmp_path / "names.txt"
    names.write_text("# my classes\ncat\ngrass, lawn\n\nsky\n")
    out = tmp_path / "out"
    demo.main(["--config-file", SYNTHETIC_CONFIG, "--input", str(image), "--output", str(out),
               "--vocabulary-file", str(names), "--unseen", "lawn", "--save-labels",
               "--allow-random-weights", *tiny_opts])  # fmt: skip
    labels = read_label(str(out / (image.stem + "_labels.png")), 3)
    assert labels.shape == (160, 200) and labels.min() >= 0 and labels.max() < 3
    record = json.loads((out / "vocabulary.json").read_text())
    assert [c["name"] for c in record["classes"]] == ["cat", "grass, lawn", "sky"]
    assert [c["unseen"] for c in record["classes"]] == [False, True, False]
    assert record["png_dtype"] == np.dtype(np.uint8).name


def test_demo_vocabulary_file_errors_name_the_problem(tiny_opts, tmp_path):
    demo = _demo_module()
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    base = ["--config-file", SYNTHETIC_CONFIG, "--input", "x.jpg", "--output", str(tmp_path)]
    with pytest.raises(SystemExit, match="holds no class name"):
        demo.main([*base, "--vocabulary-file", str(empty), *tiny_opts])
    with pytest.raises(SystemExit, match="missing.txt"):
        demo.main([*base, "--vocabulary-file", str(tmp_path / "missing.txt"), *tiny_opts])
    with pytest.raises(SystemExit, match="not both"):
        demo.main([*base, "--vocabulary", "a", "--vocabulary-file", str(empty), *tiny_opts])


class _FakeCamera:
    """Stands in for ``cv2.VideoCapture(0)``: a few BGR frames of one image, then nothing."""

    def __init__(self, frames, opened=True):
        self.frames, self.opened = list(frames), opened

    def isOpened(self):  # noqa: N802 -- OpenCV's name
        return self.opened

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return 10.0

    def release(self):
        self.opened = False


def test_demo_webcam_writes_a_video_of_overlays(tiny_opts, synthetic_root, tmp_path, monkeypatch):
    import cv2

    demo = _demo_module()
    image = sorted((Path(synthetic_root) / "synthetic_zs" / "val2017").glob("*.jpg"))[0]
    frame = cv2.imread(str(image))
    cameras = []

    def fake_capture(source):
        assert source == 1  # --webcam 1 opens camera 1
        cameras.append(_FakeCamera([frame] * 5))
        return cameras[-1]

    monkeypatch.setattr(demo.cv2, "VideoCapture", fake_capture)
    demo.main(["--config-file", SYNTHETIC_CONFIG, "--webcam", "1", "--max-frames", "3",
               "--output", str(tmp_path), "--allow-random-weights", *tiny_opts])  # fmt: skip
    assert len(cameras[0].frames) == 2  # stopped after 3 of 5 frames
    monkeypatch.undo()
    video = cv2.VideoCapture(str(tmp_path / "webcam1.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    video.release()

    monkeypatch.setattr(demo.cv2, "VideoCapture", lambda source: _FakeCamera([], opened=False))
    with pytest.raises(FileNotFoundError, match="camera 0"):
        demo.main(["--config-file", SYNTHETIC_CONFIG, "--webcam", "--output", str(tmp_path),
                   "--allow-random-weights", *tiny_opts])  # fmt: skip
