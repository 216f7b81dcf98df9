"""The web demo's limits without a model: prompt cost, pixels before decoding, bounded decoding,
kept runs, published examples, and a text cache that never blocks a cached vocabulary."""

from __future__ import annotations

import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from constant_source import ConstantSource
from PIL import Image

from chimeraseg.data.io import read_image
from chimeraseg.demo.session import InputError, Limits, WebDemo
from chimeraseg.demo.source import TextEmbeddingCache

WAIT_S = 30  # a join that would hang forever if a lookup waited for another encoding


@pytest.fixture
def demo():
    limits = Limits(
        max_side=64,
        max_pixels=100_000,
        max_names=6,
        max_name_chars=12,
        max_vocabulary_chars=200,
        kept_results=2,
    )
    web = WebDemo(ConstantSource(), limits)
    yield web
    web.close()


@pytest.fixture
def photo(tmp_path: Path) -> str:
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize(
    ("vocabulary", "message"),
    [
        ("cat, kitty, feline\nsky, heaven\ngrass, lawn", "7 names .*at most 6"),
        (
            "cat\na-very-long-class-name",
            "'a-very-long-class-name...' has 22 characters; at most 12",
        ),
        ("cat\n" + "# comment\n" * 30, "The vocabulary has 304 characters; at most 200"),
    ],
)
def test_the_prompt_cost_of_a_request_is_bounded(demo, photo, vocabulary, message) -> None:
    with pytest.raises(InputError, match=message):
        demo.segment(photo, vocabulary, "", 0.0)
    assert demo.text.computed == 0  # refused before any encoding


def png_header_only(path: Path, width: int, height: int) -> str:
    """A PNG whose header claims ``width x height`` pixels, with almost no data (164 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return str(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [400, 13000, 20000])  # over the limit, and over PIL's bomb limit
def test_pixels_are_counted_from_the_header_before_decoding(demo, tmp_path, side) -> None:
    path = png_header_only(tmp_path / f"big{side}.png", side, side)
    with pytest.raises(InputError, match=r"'big\d+\.png' has more than the 100,000 pixels"):
        demo.load_image(path)


def test_large_images_are_decoded_at_a_reduced_size(demo, tmp_path) -> None:
    jpeg = tmp_path / "wide.jpg"
    Image.fromarray(np.full((120, 300, 3), 200, np.uint8)).save(jpeg, quality=95)
    image, note = demo.load_image(str(jpeg))
    assert image.shape == (26, 64, 3) and "Downscaled from 300x120 to 64x26" in note
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((200, 100), 65535, np.uint16)).save(gray16)  # 16-bit greyscale
    image = read_image(str(gray16), max_side=50)
    assert image.shape == (50, 25, 3) and image.dtype == np.uint8 and (image == 255).all()
    palette = tmp_path / "palette.png"
    Image.fromarray(np.zeros((90, 90), np.uint8)).convert("P").save(palette)
    assert read_image(str(palette), max_side=30).shape == (30, 30, 3)


def test_only_the_last_runs_are_kept_in_memory_and_on_disk(demo, photo) -> None:
    runs = [demo.segment(photo, "cat\nsky", "", 0.0) for _ in range(3)]
    assert demo.kept(runs[-1].run_id).prediction.dtype == np.uint8  # compact labels
    assert demo.kept(runs[-1].run_id).overlay is None  # the page has it; the run does not
    with pytest.raises(InputError, match="no longer kept .*last 2 runs"):
        demo.kept(runs[0].run_id)
    assert not Path(runs[0].label_png).exists() and Path(runs[2].label_png).is_file()
    assert demo.kept(None) is None
    folders = sorted(p.name for p in Path(demo.output_dir).iterdir())
    assert folders == sorted(r.run_id for r in runs[1:])


def test_examples_are_published_as_copies_and_close_removes_everything(photo) -> None:
    web = WebDemo(ConstantSource(), Limits())
    (copy,) = web.publish_examples([photo])
    assert Path(copy).parent == Path(web.output_dir) / "examples"
    assert Path(copy).read_bytes() == Path(photo).read_bytes()
    web.segment(photo, "cat", "", 0.0)
    web.close()
    assert not Path(web.output_dir).exists() and Path(photo).is_file()


def test_a_cached_vocabulary_is_served_while_another_is_encoded() -> None:
    release, started = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def encode(names: list[str]) -> torch.Tensor:
        calls.append(names)
        if names == ["slow"]:
            started.set()
            release.wait(WAIT_S)  # a long encoding, until the test lets it finish
        return torch.ones(len(names), 4)

    cache = TextEmbeddingCache(encode, capacity=4)
    cache.get(["cat", "sky"])
    slow = threading.Thread(target=cache.get, args=(["slow"],))
    slow.start()
    assert started.wait(WAIT_S)
    got: list[bool] = []
    lookup = threading.Thread(target=lambda: got.append(cache.get(["cat", "sky"])[1]))
    lookup.start()
    lookup.join(WAIT_S)
    finished_during_encoding = not lookup.is_alive() and slow.is_alive()
    twin = threading.Thread(target=cache.get, args=(["slow"],))  # waits for the same encoding
    twin.start()
    release.set()
    slow.join(WAIT_S)
    twin.join(WAIT_S)
    assert finished_during_encoding and got == [True]
    assert calls == [["cat", "sky"], ["slow"]] and cache.computed == 2  # "slow" encoded once


def test_a_failed_encoding_is_not_cached_and_reaches_the_caller() -> None:
    attempts: list[int] = []

    def encode(names: list[str]) -> torch.Tensor:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("encoder failed")
        return torch.ones(len(names), 4)

    cache = TextEmbeddingCache(encode, capacity=4)
    with pytest.raises(RuntimeError, match="encoder failed"):
        cache.get(["cat"])
    text, cached = cache.get(["cat"])
    assert not cached and text.shape == (1, 4) and cache.computed == 1
