"""The web demo: its logic on a small model, and its HTTP API served on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg.data.io import read_label  # noqa: E402
from chimeraseg.demo.session import InputError, Limits, WebDemo  # noqa: E402
from chimeraseg.evaluation.gamma_sweep import biased_argmax  # noqa: E402

pytestmark = pytest.mark.detectron2
LIMITS = Limits(max_side=128, max_classes=5, concurrency=2, queue_size=8, kept_results=4)


@pytest.fixture(scope="module")
def source(tiny_opts, synthetic_root):
    from chimeraseg.d2.web_source import build_d2_source

    opts = [*tiny_opts, "MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"]
    return build_d2_source(SYNTHETIC_CONFIG, opts, "tiny random model")


@pytest.fixture
def demo(source, tmp_path):
    web = WebDemo(source, LIMITS)
    yield web
    web.close()


@pytest.fixture(scope="module")
def images(synthetic_root) -> list[str]:
    return [str(p) for p in sorted(Path(synthetic_root).glob("synthetic_zs/val2017/*.jpg"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_segment_follows_the_evaluator_and_writes_the_demo_files(demo, source, images) -> None:
    names = ["cat", "grass, lawn", "sky"]
    r = demo.segment(images[0], "\n".join(names), "lawn", 0.5)
    assert r.names == names and r.unseen == [False, True, False]
    assert r.image.shape == (102, 128, 3)  # 160x200 downscaled to the maximum side 128
    assert "Downscaled from 200x160 to 128x102" in r.message and "computed in" in r.message
    assert r.overlay.shape == r.image.shape and not np.array_equal(r.overlay, r.image)
    model = source.demo.model  # the evaluator's rule on the model's own forward pass
    model.set_vocabulary(names, [1])
    logits = model(source.demo.inputs(r.image))[0]["sem_seg"]  # (N, H, W)
    model.set_vocabulary(source.default_vocabulary, source.default_unseen)
    expected = biased_argmax(logits, torch.tensor([False, True, False]), 0.5)
    np.testing.assert_array_equal(r.prediction, expected.numpy())
    np.testing.assert_array_equal(read_label(r.label_png, 3), r.prediction)
    assert Path(r.label_png).name == Path(images[0]).stem + "_labels.png"
    record = json.loads(Path(r.vocabulary_json).read_text())
    assert [c["name"] for c in record["classes"]] == names and record["gamma"] == 0.5
    assert [c["unseen"] for c in record["classes"]] == [False, True, False]
    for i, share in r.shares:  # the legend's rows: every predicted class, its share
        assert f"data-class='{names[i]}' data-share='{share:.4f}'" in r.legend
        assert share == pytest.approx(float((r.prediction == i).mean()))
    again = demo.segment(images[1], "\n".join(names), "", -2.0)
    assert "from the cache" in again.message and demo.text.computed == 1


def test_gamma_moves_pixels_to_the_unseen_class(demo, images) -> None:
    def unseen_share(gamma: float) -> float:
        return float(
            (demo.segment(images[0], "cat\nsky\ngrass", "sky", gamma).prediction == 1).mean()
        )

    low, high = unseen_share(-2.0), unseen_share(5.0)
    assert low <= high and high > 0


def test_class_map_uses_the_cls_token_of_the_class_region(demo, images) -> None:
    r = demo.segment(images[0], "cat\ngrass\nsky\nwater", "", 0.0)
    present = [r.names[i] for i, _ in r.shares]
    first, message = demo.class_map(r, present[0])
    assert first.shape == r.image.shape and present[0] in message
    if len(present) > 1:  # another region, another CLS token, another map
        assert not np.array_equal(first, demo.class_map(r, present[1])[0])
    absent = [n for n in r.names if n not in present]
    for name, match in [*((n, "no pixel") for n in absent[:1]), ("dog", "not in the vocabulary")]:
        with pytest.raises(InputError, match=match):
            demo.class_map(r, name)
    with pytest.raises(InputError, match="Segment an image first"):
        demo.class_map(None, "cat")


def test_every_bad_input_gets_a_message(demo, images, tmp_path) -> None:
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    cases = [
        ((str(not_image), "cat", "", 0.0), "'notes.png' is not an image"),
        ((None, "cat", "", 0.0), "No image"),
        ((images[0], "# nothing\n\n", "", 0.0), "holds no class name"),
        ((images[0], "a\nb\nc\nd\ne\nf", "", 0.0), "6 classes; at most 5"),
        ((images[0], "cat\nsky", "dog", 0.0), r"\['dog'\] are not in the vocabulary"),
        ((images[0], "cat", "", float("nan")), "finite"),
        ((images[0], "cat", "", 1e5), r"γ 100000\.0: γ must be a finite number in \[-10000"),
    ]
    for args, message in cases:
        with pytest.raises(InputError, match=message):
            demo.segment(*args)


def test_web_tool_says_how_to_make_the_default_model(monkeypatch, tmp_path) -> None:
    tool = load_script("tools/web_demo.py", "chimeraseg_web_demo_tool")
    monkeypatch.chdir(tmp_path)  # no output/demo here
    with pytest.raises(SystemExit, match="run `make demo` first"):
        tool.main([])
    args = tool.get_parser().parse_args(["--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth"])
    assert args.host == "127.0.0.1"
    assert tool.model_source_args(args) == (
        "c.yaml",
        ["MODEL.WEIGHTS", "w.pth"],
        "c.yaml, weights w.pth",
    )


@pytest.fixture(scope="module")
def server(source, images):
    from chimeraseg.demo.web import build_app, launch

    web = WebDemo(source, LIMITS)
    app = build_app(web, images[:2])
    port = free_port()
    launch(app, web, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
    web.close()


def test_http_api_serves_two_sessions_with_their_own_vocabularies(server, images, tmp_path) -> None:
    from gradio_client import Client, handle_file

    vocabularies = {"a": ["cat", "grass", "sky"], "b": ["road", "snow, ice", "tree", "rock"]}
    clients = {k: Client(server, verbose=False, download_files=str(tmp_path / k)) for k in "ab"}

    def run(key: str):
        vocab = vocabularies[key]
        return clients[key].predict(
            handle_file(images[0]), "\n".join(vocab), vocab[1], 1.0, api_name="/segment"
        )

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip("ab", pool.map(run, "ab")))
    for key, (overlay, legend, png, vocab_json, message, choice) in results.items():
        names = vocabularies[key]
        assert "Model:" in message and Path(overlay).is_file()
        record = json.loads(Path(vocab_json).read_text())
        assert [c["name"] for c in record["classes"]] == names
        assert read_label(png, len(names)).shape == (102, 128)
        other = vocabularies["b" if key == "a" else "a"]
        assert all(f"data-class='{n}'" not in legend for n in other)
        assert choice["value"] in names
        # the class map comes from this session's own last result
        image, map_message = clients[key].predict(choice["value"], api_name="/class_map")
        assert Path(image).is_file() and choice["value"] in map_message
        _, wrong = clients[key].predict(other[0], api_name="/class_map")
        assert "not in the vocabulary of the last run" in wrong


def test_http_api_answers_bad_inputs_with_messages_and_keeps_serving(
    server, images, tmp_path
) -> None:
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path))
    not_image = tmp_path / "photo.jpg"
    not_image.write_bytes(b"\x00" * 64)
    big = tmp_path / "big.png"
    from PIL import Image

    Image.fromarray(np.full((300, 500, 3), 128, np.uint8)).save(big)
    cases = [
        (handle_file(str(not_image)), "cat", "", "is not an image"),
        (handle_file(images[0]), "", "", "holds no class name"),
        (handle_file(images[0]), "a\nb\nc\nd\ne\nf", "", "at most 5"),
        (handle_file(images[0]), "cat\nsky", "dog", "are not in the vocabulary"),
    ]
    for image, vocab, unseen, expected in cases:
        overlay, _, png, _, message, _ = client.predict(
            image, vocab, unseen, 0.0, api_name="/segment"
        )
        assert expected in message and overlay is None and png is None
    overlay, *_, message, _ = client.predict(
        handle_file(str(big)), "cat\nsky", "", 0.0, api_name="/segment"
    )
    assert "Downscaled from 500x300 to 128x77" in message
    from PIL import Image as PILImage

    assert PILImage.open(overlay).size == (128, 77)
