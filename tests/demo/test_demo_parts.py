"""The demos' plain parts: vocabulary syntax, pixel shares, the legend, the text cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chimeraseg.clip.names import unseen_indices
from chimeraseg.demo.render import class_shares, heat_overlay, legend_html
from chimeraseg.demo.source import TextEmbeddingCache
from chimeraseg.demo.vocabulary import parse_vocabulary, split_names


def test_vocabulary_text_has_one_class_per_line_with_synonyms_and_comments() -> None:
    text = "# my photo\ncat\n\nsofa, couch\n  sky  \n"
    names, unseen = parse_vocabulary(text, "couch, sky", max_classes=3)
    assert names == ["cat", "sofa, couch", "sky"]
    assert unseen == [1, 2]  # a synonym marks its whole entry


@pytest.mark.parametrize(
    ("text", "unseen", "message"),
    [
        ("", "", "holds no class name"),
        ("# only a comment\n\n", "", "holds no class name"),
        ("a\nb\nc\nd", "", "4 classes; at most 3"),
        ("cat\nsky", "dog", r"\['dog'\] are not in the vocabulary"),
        ("cat\nsofa,,couch", "", "empty comma-separated synonym"),
        ("cat\nsofa, couch\ncouch", "", "'couch' is given twice"),
    ],
)
def test_bad_vocabularies_name_the_problem(text: str, unseen: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_vocabulary(text, unseen, max_classes=3, source="the box")


def test_split_names_and_unseen_indices_keep_the_command_line_rules() -> None:
    assert split_names(None) is None
    assert split_names(" , ") == []
    assert split_names("cat, grass ,sky") == ["cat", "grass", "sky"]
    assert unseen_indices(["cat", "grass, lawn"], ["lawn", "cat", "grass, lawn"]) == [0, 1]


def test_class_shares_sum_to_one_largest_first() -> None:
    prediction = np.array([[2, 2, 2], [0, 2, 0]])  # (2, 3): class 1 absent
    shares = class_shares(prediction, 3)
    assert [i for i, _ in shares] == [2, 0]
    assert shares[0][1] == pytest.approx(4 / 6) and sum(s for _, s in shares) == pytest.approx(1)


def test_legend_lists_colour_name_share_and_the_unseen_mark() -> None:
    html = legend_html(
        [(1, 0.75), (0, 0.25)], ["cat", "<sky>"], [False, True], [[1, 2, 3], [4, 5, 6]]
    )
    assert html.index("data-class='&lt;sky&gt;'") < html.index("data-class='cat'")
    assert "rgb(4,5,6)" in html and "75.0%" in html
    sky_row = html.split("data-class='&lt;sky&gt;'")[1].split("</tr>")[0]
    cat_row = html.split("data-class='cat'")[1].split("</tr>")[0]
    assert "unseen" in sky_row and "unseen" not in cat_row


def test_heat_overlay_blends_the_image_with_the_scaled_map() -> None:
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    sim = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
    out = heat_overlay(image, sim)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[-1, -1])  # low and high ends get other colours


def test_text_cache_encodes_each_vocabulary_once_and_drops_the_oldest() -> None:
    calls: list[list[str]] = []

    def encode(names: list[str]) -> torch.Tensor:
        calls.append(names)
        return torch.full((len(names), 4), float(len(calls)))

    cache = TextEmbeddingCache(encode, capacity=2)
    first, hit = cache.get(["cat", "sky"])
    again, hit_again = cache.get(["cat", "sky"])
    assert (hit, hit_again) == (False, True) and again is first and len(calls) == 1
    cache.get(["a"])
    cache.get(["b"])  # evicts ["cat", "sky"] (least recently used)
    _, hit = cache.get(["cat", "sky"])
    assert not hit and cache.computed == 4
