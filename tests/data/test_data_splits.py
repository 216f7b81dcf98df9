"""Class tables and zero-shot splits (paper §IV-A; docs/METHOD.md, 'Data')."""

from __future__ import annotations

import dataclasses

import pytest

from chimeraseg.data.coco_stuff import COCO_STUFF_171_COCO_IDS
from chimeraseg.data.splits import ZeroShotSplit, get_split, validate_split

COCO_UNSEEN = {
    19: "cow", 23: "giraffe", 28: "suitcase", 29: "frisbee", 36: "skateboard", 51: "carrot",
    76: "scissors", 88: "cardboard", 94: "clouds", 112: "grass", 133: "playingfield",
    136: "river", 137: "road", 157: "tree", 160: "wall-concrete",
}  # fmt: skip
CONTEXT_ZS3 = {
    0: "aeroplane", 6: "bird", 7: "boat", 14: "cat", 19: "cow", 24: "fence", 31: "keyboard",
    33: "motorbike", 48: "sofa", 54: "tvmonitor",
}  # fmt: skip
CONTEXT_CASCADE = {
    0: "aeroplane", 2: "bed", 3: "bedclothes", 7: "boat", 9: "bottle", 13: "car", 17: "cloth",
    19: "cow", 31: "keyboard", 37: "plate",
}  # fmt: skip
VOC_UNSEEN = {15: "pottedplant", 16: "sheep", 17: "sofa", 18: "train", 19: "tvmonitor"}


@pytest.mark.parametrize(
    ("name", "variant", "n_seen", "expected_unseen"),
    [
        ("coco_stuff_171", None, 156, COCO_UNSEEN),
        ("pascal_context_59", None, 49, CONTEXT_ZS3),
        ("pascal_context_59", "zs3", 49, CONTEXT_ZS3),
        ("pascal_context_59", "cascade", 49, CONTEXT_CASCADE),
        ("voc_20", None, 15, VOC_UNSEEN),
    ],
)
def test_split_sizes_and_unseen_names(name, variant, n_seen, expected_unseen) -> None:
    split = get_split(name, variant)
    assert len(split.seen) == n_seen
    assert len(split.unseen) == len(expected_unseen)
    assert {i: split.class_names[i] for i in split.unseen} == expected_unseen
    assert sorted(split.seen + split.unseen) == list(range(split.num_classes))
    assert len(split.stuff_colors) == split.num_classes


def test_coco_stuff_table_order() -> None:
    split = get_split("coco_stuff_171")
    assert split.num_classes == 171
    assert split.class_names[:3] == ("person", "bicycle", "car")
    assert split.class_names[79] == "toothbrush" and split.class_names[80] == "banner"
    assert split.class_names[170] == "wood"
    ids = COCO_STUFF_171_COCO_IDS
    assert list(ids) == sorted(ids) and ids[79] == 90 and ids[80] == 92 and ids[170] == 182
    unused = sorted(set(range(1, 183)) - set(ids))
    assert unused == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]


def test_other_tables() -> None:
    assert get_split("ade20k_150").num_classes == 150
    assert get_split("ade20k_150").unseen == ()
    assert get_split("ade20k_150").class_names[-1] == "flag"
    assert get_split("pascal_context_59").num_classes == 59
    assert get_split("voc_20").class_names[0] == "aeroplane"
    synthetic = get_split("synthetic")
    assert 10 <= synthetic.num_classes <= 12 and len(synthetic.unseen) == 3
    assert get_split("pascal_context_59", "cascade").num_classes == 59


def test_split_is_frozen() -> None:
    split = get_split("voc_20")
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.unseen = ()  # type: ignore[misc]


def test_unknown_split_and_variant() -> None:
    with pytest.raises(KeyError, match="coco_stuff_1710"):
        get_split("coco_stuff_1710")
    with pytest.raises(KeyError, match="zs5"):
        get_split("pascal_context_59", "zs5")


@pytest.mark.parametrize(
    ("seen", "unseen", "message"),
    [
        ((0, 1), (1, 2), "both seen and unseen"),
        ((0,), (2,), "neither seen nor unseen"),
        ((0, 1, 2), (3,), "outside"),
        ((0, 0, 1), (2,), "duplicate seen"),
    ],
)
def test_validate_split_names_the_split(seen, unseen, message) -> None:
    broken = ZeroShotSplit("toy", "v1", ("a", "b", "c"), seen, unseen, ((0, 0, 0),) * 3)
    with pytest.raises(ValueError, match=rf"'toy'.*'v1'.*{message}"):
        validate_split(broken)


def test_own_split_from_names_and_files(tmp_path) -> None:
    from chimeraseg.data.splits import make_zero_shot_split, read_class_names, register_split

    names_file = tmp_path / "classes.txt"
    names_file.write_text("# label order\nroad\n\nsofa, couch\n  tree \n")
    names = read_class_names(str(names_file))
    assert names == ["road", "sofa, couch", "tree"]
    split = make_zero_shot_split("own_split_test", names, unseen=["tree"])
    assert (split.seen, split.unseen, split.unseen_names) == ((0, 1), (2,), ("tree",))
    assert register_split(split) is get_split("own_split_test")
    other = make_zero_shot_split("own_split_test", names, unseen=[0])
    with pytest.raises(ValueError, match="already registered with other classes"):
        register_split(other)
    assert register_split(other, replace=True) is get_split("own_split_test")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match=r"empty\.txt holds no class name"):
        read_class_names(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="duplicate class names"):
        make_zero_shot_split("own_split_dup", ["a", "a"])
