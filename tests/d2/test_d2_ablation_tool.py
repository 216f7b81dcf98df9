"""tools/ablate_synthetic.py: runs variants x seeds, writes the ledger, page and plot; resumes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

pytestmark = pytest.mark.detectron2

# On top of conftest's tiny_opts: two iterations, small evaluation images.
FAST_OPTS = ["SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "100",
             "MODEL.CHIMERASEG.SGD.K_INIT", "8", "TEST.GAMMA", "0.5",
             "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "80"]  # fmt: skip


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: tiny models on a busy machine run several times faster without
    thread contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clip_cfg(pretrained: str) -> SimpleNamespace:
    """A stand-in config with the world CLIP's MODEL.CLIP.NAME."""
    clip = SimpleNamespace(NAME="configs/clip/chimeraseg-world-vit.json", PRETRAINED=pretrained)
    return SimpleNamespace(MODEL=SimpleNamespace(CLIP=clip))


def _tool() -> ModuleType:
    return load_script("tools/ablate_synthetic.py", "chimeraseg_ablate_tool")


def _argv(tmp_path: Path, synthetic_root: str, tiny_opts: list[str], *extra: str) -> list[str]:
    return ["--seeds", "0", "--variants", "full", "no_sgd", "--clip-mode", "config",
            "--datasets-root", synthetic_root, "--work-dir", str(tmp_path / "runs"),
            "--output", str(tmp_path / "docs"), *extra, "--", *tiny_opts, *FAST_OPTS]  # fmt: skip


def test_ablation_tool_writes_ledger_page_plot_and_resumes(
    tiny_opts: list[str], synthetic_root: str, tmp_path: Path, one_thread: None
) -> None:
    tool = _tool()
    records = tool.main(_argv(tmp_path, synthetic_root, tiny_opts))
    ledger = tmp_path / "runs" / "results.jsonl"
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(r["variant"], r["seed"]) for r in lines] == [("full", 0), ("no_sgd", 0)]
    assert lines == json.loads(json.dumps(records))
    for r in lines:
        assert {"sIoU", "uIoU", "hIoU", "mIoU", "seconds", "clip"} <= set(r)
        assert r["gamma"] == 0.5 and r["iterations"] == 2
        run_dir = tmp_path / "runs" / r["variant"] / "seed0"
        assert (run_dir / "log.txt").is_file() and not list(run_dir.glob("*.pth"))
    assert lines[1]["variant_opts"] == ["MODEL.CHIMERASEG.SGD.WEIGHT", "0.0"]

    page = (tmp_path / "docs" / "ABLATIONS.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) == 4  # 2 variants in the mean table + 2 runs per seed
    assert rows[0].startswith("| `full` |") and rows[1].startswith("| `no_sgd` | no Selective")
    assert f"| {lines[0]['hIoU']:.2f} |" in rows[0]
    assert "## What it shows\n\n<!-- analysis -->" in page and "Time per run" in page
    assert (tmp_path / "docs" / "ablations.png").stat().st_size > 0

    # Resume: nothing is retrained; a hand-written analysis survives the rewrite.
    before = ledger.read_bytes()
    (tmp_path / "docs" / "ABLATIONS.md").write_text(
        page.replace("<!-- analysis -->", "Hand-written text.")
    )
    again = tool.main(_argv(tmp_path, synthetic_root, tiny_opts))
    assert ledger.read_bytes() == before and again == records
    assert "Hand-written text." in (tmp_path / "docs" / "ABLATIONS.md").read_text()

    # Other overrides in the same ledger are refused instead of mixed.
    with pytest.raises(SystemExit, match="other settings"):
        tool.main(_argv(tmp_path, synthetic_root, [*tiny_opts, "SOLVER.BASE_LR", "0.001"]))

    # So is an edited config file behind the same path (its merged content is compared).
    edited = tmp_path / "edited.yaml"
    edited.write_text(f"_BASE_: {tool.DEFAULT_CONFIG}\n")
    tool.main(_argv(tmp_path / "edit", synthetic_root, tiny_opts, "--config-file", str(edited)))
    edited.write_text(f"_BASE_: {tool.DEFAULT_CONFIG}\nSOLVER:\n  BASE_LR: 0.001\n")
    with pytest.raises(SystemExit, match="other settings"):
        tool.main(_argv(tmp_path / "edit", synthetic_root, tiny_opts, "--config-file", str(edited)))


def test_world_clip_mode_refuses_clip_weight_overrides() -> None:
    tool = _tool()
    with pytest.raises(SystemExit, match="--clip-mode config"):
        tool.parse_args(["--", "MODEL.CLIP.PRETRAINED", "x.pt"])
    with pytest.raises(SystemExit, match="set by the tool"):
        tool.parse_args(["--clip-mode", "config", "--", "SEED", "3"])


def test_seen_only_clip_needs_the_world_clip() -> None:
    tool = _tool()
    names = [v.name for v in tool.parse_args(["--clip-mode", "config"]).variants]
    assert "seen_only_clip" not in names and "random_clip" in names
    with pytest.raises(SystemExit, match="needs --clip-mode world"):
        tool.parse_args(["--clip-mode", "config", "--variants", "seen_only_clip"])
    assert len(tool.parse_args([]).variants) == len(tool.VARIANTS) == 7


def test_random_clip_variant_gets_random_weights_whatever_the_mode() -> None:
    tool = _tool()
    cfg = _clip_cfg("weights.pt")
    for mode in ("world", "config"):
        choice = tool.ClipResolver(mode, cfg).choose(tool.VARIANTS_BY_NAME["random_clip"], 2)
        opts = dict(zip(choice.opts[::2], choice.opts[1::2]))
        assert opts == {"MODEL.CLIP.PRETRAINED": "", "MODEL.CLIP.ALLOW_RANDOM_INIT": "True",
                        "MODEL.CLIP.RANDOM_INIT_SEED": "2"}  # fmt: skip
    full = tool.ClipResolver("config", cfg).choose(tool.VARIANTS_BY_NAME["full"], 0)
    assert full.opts == () and "weights.pt" in full.description


def test_every_variant_is_a_valid_config() -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg

    tool = _tool()
    base = get_chimeraseg_cfg(tool.DEFAULT_CONFIG, [])
    for variant in tool.VARIANTS:  # unknown keys or bad values would raise
        cfg = get_chimeraseg_cfg(tool.DEFAULT_CONFIG, list(variant.opts))
        assert cfg.SOLVER.MAX_ITER == base.SOLVER.MAX_ITER  # the synthetic config's schedule


def test_world_mode_gives_each_variant_its_world_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    import chimeraseg.world.cache as cache

    tool, calls = _tool(), []

    def fake_ensure_world_clip(config: Any) -> SimpleNamespace:
        calls.append(config.classes)
        return SimpleNamespace(
            model_config=Path("/m/world.json"), checkpoint=Path(f"/c/{config.classes}.pt"),
            report={"message": "gate passed"}, trained_now=False,
        )  # fmt: skip

    monkeypatch.setattr(cache, "ensure_world_clip", fake_ensure_world_clip)
    resolver = tool.ClipResolver("world", _clip_cfg(""))
    weights = {
        name: dict(zip(c.opts[::2], c.opts[1::2])).get("MODEL.CLIP.PRETRAINED")
        for name in ("full", "no_sgd", "seen_only_clip", "random_clip")
        for c in [resolver.choose(tool.VARIANTS_BY_NAME[name], 1)]
    }
    assert weights == {"full": "/c/all.pt", "no_sgd": "/c/all.pt", "seen_only_clip": "/c/seen.pt",
                       "random_clip": ""}  # fmt: skip
    assert calls == ["all", "seen"]  # each world CLIP resolved once
