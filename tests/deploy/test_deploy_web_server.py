"""The web demo as a server process on 127.0.0.1 (``tools/web_demo.py --onnx``): it serves only
its listed examples and leaves nothing behind on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from chimeraseg_test_utils import REPO
from deploy_world import Trained
from loopback_server import free_port, status_of, wait_for_server
from PIL import Image

STOP_S = 60
ORT_SESSION_FILE = ".ses"  # `import onnxruntime` writes $TMPDIR/.ses (its telemetry id) once


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    """The server's TMPDIR: where its chimeraseg_web_* folder (and Gradio's cache) must go."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


@pytest.fixture
def server(
    trained: Trained, private_tmp: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    env = {**os.environ, "TMPDIR": str(private_tmp), "GRADIO_TEMP_DIR": ""}
    tool = str(REPO / "tools" / "web_demo.py")
    datasets = str(trained.folder.parent)  # holds synthetic_zs/val2017, the example images
    command = [sys.executable, tool, "--onnx", str(trained.folder), "--port", str(port),
               "--examples", "2", "--datasets-root", datasets]  # fmt: skip
    log = (tmp_path / "server.log").open("w")  # a file: a full pipe would block the server
    process = subprocess.Popen(command, env=env, cwd=private_tmp, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_server(process, url)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STOP_S)
        log.close()


def test_sigterm_removes_every_file_and_only_listed_examples_are_served(
    server, trained: Trained, private_tmp: Path, tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file

    process, url = server
    (folder,) = private_tmp.glob("chimeraseg_web_*")
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    image = trained.val[0][0]
    Image.fromarray(image).save(tmp_path / "photo.png")
    overlay, *_, message, _ = client.predict(
        handle_file(str(tmp_path / "photo.png")), "grass\nsky", "", 0.0, api_name="/segment"
    )
    assert "Model:" in message and Path(overlay).is_file()
    assert list(folder.glob("result_*")) and list((folder / "gradio").rglob("*.png"))
    examples = sorted((trained.folder.parent / "synthetic_zs" / "val2017").glob("*.jpg"))
    listed = sorted((folder / "examples").iterdir())
    assert len(listed) == 2 and len(examples) > 2
    assert status_of(f"{url}gradio_api/file={listed[0]}") == 200
    for unlisted in (examples[0], examples[-1], trained.folder / "metadata.json"):
        assert status_of(f"{url}gradio_api/file={unlisted}") in (403, 404), unlisted
    process.send_signal(signal.SIGTERM)
    assert process.wait(STOP_S) == 0, (tmp_path / "server.log").read_text()
    left = sorted(p.name for p in private_tmp.iterdir())
    assert left in ([], [ORT_SESSION_FILE]), left  # no chimeraseg_web_*, no Gradio cache
