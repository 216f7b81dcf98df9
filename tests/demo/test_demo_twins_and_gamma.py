"""One rule for class names given twice (after the prompt spelling) and one for γ."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from chimeraseg.data.class_tables import (
    ADE20K_150_CLASSES,
    PASCAL_CONTEXT_59_CLASSES,
    PASCAL_VOC_20_CLASSES,
    pascal_context_459_classes,
)
from chimeraseg.data.coco_stuff import COCO_STUFF_171_CLASSES
from chimeraseg.data.prediction_io import write_vocabulary_json
from chimeraseg.data.spellings import check_distinct_class_names
from chimeraseg.demo.vocabulary import parse_vocabulary
from chimeraseg.deploy.schema import GAMMA_LIMIT, check_gamma


@pytest.mark.parametrize(
    ("names", "word"),
    [
        (["sky-other", "sky"], "sky"),
        (["sky", "sky-other"], "sky"),
        (["wall-concrete", "concrete wall"], "concrete wall"),
        (["grass", "grass"], "grass"),
        (["Grass", "grass "], "grass"),
        (["tvmonitor", "tv monitor"], "tv monitor"),
        (["cat", "sofa, couch", "couch"], "couch"),
        (["building-other", "house, building"], "building"),
    ],
)
def test_twins_after_the_prompt_spelling_are_refused(names: list[str], word: str) -> None:
    with pytest.raises(ValueError, match=rf"the vocabulary: the name '{word}' is given twice"):
        check_distinct_class_names(names, "the vocabulary")


@pytest.mark.parametrize(
    "names",
    [
        ["sky-other, sky"],  # one class, its synonyms spelled alike
        ["t-shirt", "shirt"],  # no dataset declares a spelling for "t-shirt"
        ["wall-concrete", "wall"],
        list(COCO_STUFF_171_CLASSES),
        list(ADE20K_150_CLASSES),
        list(PASCAL_CONTEXT_59_CLASSES),
        list(PASCAL_VOC_20_CLASSES),
        list(pascal_context_459_classes()),
    ],
)
def test_distinct_names_and_every_shipped_table_pass(names: list[str]) -> None:
    check_distinct_class_names(names, "the vocabulary")


def test_the_web_vocabulary_box_refuses_humanised_twins() -> None:
    with pytest.raises(ValueError, match=r"the box: the name 'sky' is given twice"):
        parse_vocabulary("grass\nsky-other\nsky", "", max_classes=10, source="the box")


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, "nan", "inf", 1e308, -2 * GAMMA_LIMIT, True, None, "x"]
)
def test_gamma_that_is_not_a_finite_bounded_number_is_refused(value) -> None:
    with pytest.raises(ValueError, match=r"^--gamma .*: γ must be a finite number in") as info:
        check_gamma(value, "--gamma")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), ("-1.5", -1.5), (0, 0.0), (20, 20.0)])
def test_finite_gamma_is_accepted(value, expected: float) -> None:
    assert check_gamma(value) == expected


def test_vocabulary_json_never_holds_nan(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.json"
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_vocabulary_json(str(path), ["a", "b"], [False, True], math.nan)
    assert not path.exists()
    write_vocabulary_json(str(path), ["a", "b"], [False, True], 0.5)
    assert json.loads(path.read_text())["gamma"] == 0.5
