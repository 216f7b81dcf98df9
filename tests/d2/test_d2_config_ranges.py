"""Start-up checks of the detectron2 layer: custom label sets above 255 classes ignore 65535."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

pytestmark = pytest.mark.detectron2


@pytest.mark.parametrize(("count", "ignore"), [(255, 255), (256, 65535), (300, 65535)])
def test_custom_set_ignore_value_follows_its_class_count(tmp_path, count, ignore) -> None:
    from detectron2.data import MetadataCatalog

    from chimeraseg.d2.data.register_custom import register_zero_shot_folders

    names = [f"class{i}" for i in range(count)]
    name = f"hardening_custom_{count}"
    register_zero_shot_folders(name, str(tmp_path), names, unseen=["class255"] if count > 255
                               else ["class1"], splits=["val"])  # fmt: skip
    assert MetadataCatalog.get(f"{name}_val").ignore_label == ignore
