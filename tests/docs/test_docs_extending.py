"""docs/EXTENDING.md: its loss and backbone snippets run as written and train a step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from chimeraseg_test_utils import TINY_SEEN, TINY_UNSEEN, build_tiny_model
from torch import nn

from chimeraseg.modeling import (
    ChimeraSegSettings,
    PseudoMaskConfig,
    StudentSettings,
    build_chimeraseg_model,
)
from chimeraseg.modeling.backbone import student_backbone_names
from chimeraseg.modeling.losses import registered_losses

DOC = Path(__file__).resolve().parents[2] / "docs" / "EXTENDING.md"


def _snippet(section: str) -> str:
    """The first python block under ``## <section>``."""
    text = DOC.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"{DOC}: no python block under '## {section}'"
    return match.group(1)


def _run_once(section: str, registered: tuple[str, ...], name: str) -> dict:
    """Runs a snippet in a fresh namespace (once per session: registries refuse a second name)."""
    namespace: dict = {"__name__": f"extending_{section.replace(' ', '_')}"}
    if name not in registered:
        exec(compile(_snippet(section), str(DOC), "exec"), namespace)  # noqa: S102 -- our doc
    return namespace


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64) * 255
    return images, torch.tensor(TINY_SEEN)[torch.randint(0, len(TINY_SEEN), (2, 64, 64))]


def _step(model: nn.Module) -> dict[str, torch.Tensor]:
    out = model.train().forward_train(*_batch(), 0)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    sum(out.values()).backward()
    torch.optim.SGD(params, lr=1e-2).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params)), "nothing was trained"
    return out


def test_loss_snippet_registers_a_weighted_loss(tiny_clip: nn.Module) -> None:
    namespace = _run_once("Add a loss", registered_losses(), "loss_feature_norm")
    assert "loss_feature_norm" in registered_losses()
    losses = namespace.get("losses")
    if losses is None:  # registered by an earlier run of this test in the session
        from chimeraseg.modeling import LossSettings

        losses = LossSettings().with_weights(loss_feature_norm=0.1)
    pseudo = PseudoMaskConfig(scales=(2,), kmeans_iters=2, min_area=1)
    model = build_tiny_model(tiny_clip, losses=losses, pseudo_masks=pseudo)
    with torch.no_grad():
        expected = 0.1 * model.train().clip_features(_batch()[0]).pow(2).sum(dim=1).mean()
    out = _step(model)
    assert out["loss_feature_norm"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_backbone_snippet_builds_by_name_with_its_width(tiny_clip: nn.Module) -> None:
    _run_once("Add a backbone", student_backbone_names(), "mit_b0_narrow")
    settings = ChimeraSegSettings(
        student=StudentSettings(backbone="mit_b0_narrow"),
        pseudo_masks=PseudoMaskConfig(scales=(2,), kmeans_iters=2, min_area=1),
    )
    model = build_chimeraseg_model(
        settings,
        clip_model=tiny_clip,
        class_text=torch.randn(len(TINY_SEEN) + len(TINY_UNSEEN), 32),
        seen_ids=TINY_SEEN,
        unseen_ids=TINY_UNSEEN,
    )
    assert model.decoder_features(_batch()[0]).shape == (2, 128, 16, 16)  # (B, E, H/4, W/4)
    assert set(_step(model)) == {"loss_seg", "loss_sgd", "loss_sam"}
