"""tools/run_demo.py's advice for a damaged world-CLIP cache is the --retrain command, and the
demo's video writer reports an unwritable output instead of a file it did not write."""

from __future__ import annotations

import pytest
import torch
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

pytestmark = pytest.mark.detectron2


def test_damaged_cache_found_by_ensure_world_clip_exits_with_retrain(monkeypatch) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg
    from chimeraseg.world.cache import WorldClipCacheError

    run_demo = load_script("tools/run_demo.py", "chimeraseg_run_demo_damaged_cache")

    def damaged(config, **kwargs):
        raise WorldClipCacheError("cached world CLIP 'w.pt' is damaged; run ... --retrain")

    monkeypatch.setattr("chimeraseg.world.cache.ensure_world_clip", damaged)
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [])
    with pytest.raises(SystemExit, match=r"tools/run_demo\.py: cached world CLIP .*--retrain"):
        run_demo.resolve_clip(cfg, run_demo.get_parser().parse_args([]))


def test_world_clip_that_fails_to_load_gets_retrain_advice(tmp_path) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg

    run_demo = load_script("tools/run_demo.py", "chimeraseg_run_demo_truncated_world")
    weights = tmp_path / "chimeraseg-world-vit.pt"
    torch.save({"w": torch.ones(3)}, weights)
    weights.write_bytes(weights.read_bytes()[:100])  # truncated after the cache check
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, ["MODEL.CLIP.PRETRAINED", str(weights)])
    with pytest.raises(SystemExit) as info:
        run_demo.check_clip(cfg, world=True)
    message = str(info.value)
    assert str(weights) in message and "train_world_clip.py --classes all --retrain" in message
    assert "--clip-weights" not in message and "weights_only" not in message
    with pytest.raises(SystemExit, match=r"Pass --clip-weights PATH"):
        run_demo.check_clip(cfg, world=False)


def test_video_writer_that_cannot_open_is_an_error(tmp_path, monkeypatch) -> None:
    import numpy as np

    from chimeraseg.utils.output_files import OutputError

    demo_tool = load_script("tools/demo.py", "chimeraseg_demo_unwritable_video")

    class OneFrame:
        def __init__(self):
            self.frames = [np.zeros((8, 8, 3), np.uint8)]

        def isOpened(self):  # noqa: N802 -- OpenCV's name
            return True

        def read(self):
            return (True, self.frames.pop()) if self.frames else (False, None)

        def get(self, prop):
            return 25.0

        def release(self):
            pass

    class Drawer:
        def predict(self, frame):
            return np.zeros(frame.shape[:2], np.int64)

        def draw(self, frame, labels):
            return frame

    class ClosedWriter:  # what OpenCV returns for a folder it cannot write
        def __init__(self, *args):
            pass

        def isOpened(self):  # noqa: N802 -- OpenCV's name
            return False

    monkeypatch.setattr(demo_tool.cv2, "VideoWriter", ClosedWriter)
    target = tmp_path / "out" / "clip.mp4"
    with pytest.raises(OutputError, match=r"clip\.mp4 cannot be written"):
        demo_tool.run_on_stream(Drawer(), OneFrame(), "video 'clip.mp4'", str(target))
    assert not target.exists()
