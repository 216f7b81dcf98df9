"""A bounded load test on 127.0.0.1: the web demo's memory stays flat while sessions come and
go, because a session holds only a run id and the demo keeps only its last runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from loopback_server import free_port, rss_mb, wait_for_server
from PIL import Image

pytest.importorskip("gradio_client")

SERVER = """
import sys
from constant_source import ConstantSource
from chimeraseg.demo.session import Limits, WebDemo

demo = WebDemo(ConstantSource(), Limits(kept_results=4))
demo.claim_gradio_cache()
from chimeraseg.demo.web import build_app, launch

try:
    launch(build_app(demo, []), demo, "127.0.0.1", int(sys.argv[1]))
finally:
    demo.close()
"""
SIDE = 512  # pixels: a session that kept its run would hold ~3.5 MB (image, labels, overlay)
WARM_SESSIONS, LOAD_SESSIONS = 6, 16
GROWTH_LIMIT_MB = 24  # sessions keeping their runs would add LOAD_SESSIONS x ~3.5 = 56 MB
STOP_S = 60


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_memory_stays_flat_after_many_sessions_close(tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    port = free_port()
    # glibc keeps a freed block in the arena of the thread that freed it; with two arenas the
    # resident memory follows what the server holds, not which pool thread ran a request
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TMPDIR": str(tmp_path), "MALLOC_ARENA_MAX": "2", "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL
    )
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8)).save(photo)
    url = f"http://127.0.0.1:{port}/"

    def sessions(count: int) -> None:
        for _ in range(count):  # a new client is a new session, closed after one run
            client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
            out = client.predict(handle_file(str(photo)), "grass\nsky", "", 0, api_name="/segment")
            assert "Model:" in out[4]
            client.close()

    try:
        wait_for_server(process, url)
        sessions(WARM_SESSIONS)  # the kept runs filled, caches and the allocator warm
        before = rss_mb(process.pid)
        sessions(LOAD_SESSIONS)
        growth = rss_mb(process.pid) - before
        assert len(list(tmp_path.glob("chimeraseg_web_*/result_*"))) == 4  # the last runs only
        assert growth < GROWTH_LIMIT_MB, f"{growth:.1f} MB more after {LOAD_SESSIONS} sessions"
    finally:
        process.kill()
        process.wait(STOP_S)
