"""The ablation table of ``tools/ablate_synthetic.py`` and the CLIP each run uses.

:data:`VARIANTS` lists every row (config overrides on top of the synthetic config and which CLIP
it needs); :class:`ClipResolver` turns a (variant, seed) into the CLIP's config overrides, training
or loading the synthetic world's CLIPs once, on first use.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "synthetic", "chimeraseg_mitb0_synthetic.yaml")
TOOL = "tools/ablate_synthetic.py"

CLIP_WORLD = "world"  # the world CLIP, trained on all classes
CLIP_SEEN = "world_seen"  # the control world CLIP, trained without the unseen classes
CLIP_RANDOM = "random"  # random CLIP weights


class Variant(NamedTuple):
    """One row of the ablation table.

    Attributes:
        name: Short name (``--variants``, table rows, output directory).
        description: What differs from the full method.
        paper: Where the paper ablates it ("-" for the controls of this tool).
        opts: Config overrides ``KEY VALUE ...`` applied on top of the synthetic config.
        clip: Which CLIP the variant uses: ``CLIP_WORLD``, ``CLIP_SEEN`` or ``CLIP_RANDOM``.
    """

    name: str
    description: str
    paper: str
    opts: tuple[str, ...] = ()
    clip: str = CLIP_WORLD


VARIANTS: tuple[Variant, ...] = (
    Variant("full", "the full method", "-"),
    Variant(
        "no_sgd",
        "no Selective Global Distillation (its loss weight 0)",
        "Table III",
        ("MODEL.CHIMERASEG.SGD.WEIGHT", "0.0"),
    ),
    Variant(
        "no_sam",
        "no Semantic Alignment Module (lambda_sam 0)",
        "Tables III, XII",
        ("MODEL.CHIMERASEG.SAM.WEIGHT", "0.0"),
    ),
    Variant(
        "no_latent_masks",
        "no latent pseudo masks: ignore pixels stay ignored in L_seg",
        "-",
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.ENABLED", "False"),
    ),
    Variant(
        "no_vencoder",
        "no VEncoder (n = 0 frozen CLIP blocks in the CLIP-semantic head)",
        "Table VIII",
        ("MODEL.CHIMERASEG.CSH.VENCODER_BLOCKS", "0"),
    ),
    Variant(
        "seen_only_clip",
        "control: the world CLIP trained without the unseen classes (images and names)",
        "-",
        clip=CLIP_SEEN,
    ),
    Variant(
        "random_clip",
        "control: random CLIP weights (text, teacher and CSH blocks)",
        "-",
        clip=CLIP_RANDOM,
    ),
)
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}


def select_variants(names: list[str] | None, clip_mode: str) -> list[Variant]:
    """The variants to run, in table order; ``seen_only_clip`` only with the world CLIP."""
    unknown = sorted(set(names or []) - set(VARIANTS_BY_NAME))
    if unknown:
        raise SystemExit(f"{TOOL}: unknown variants {unknown}; known: {list(VARIANTS_BY_NAME)}")
    chosen = [v for v in VARIANTS if names is None or v.name in names]
    if clip_mode == "world":
        return chosen
    seen_only = [v.name for v in chosen if v.clip == CLIP_SEEN]
    if seen_only and names is not None:
        raise SystemExit(
            f"{TOOL}: {seen_only} needs --clip-mode world (a seen-only CLIP exists only for the "
            "synthetic world's CLIP)"
        )
    if seen_only:
        print(f"[ablate] --clip-mode config: skipping {seen_only} (needs the world CLIP)")
    return [v for v in chosen if v.clip != CLIP_SEEN]


class ClipChoice(NamedTuple):
    """The CLIP of one run: its config overrides and one line saying what it is."""

    opts: tuple[str, ...]
    description: str


class ClipResolver:
    """Gives each (variant, seed) its CLIP; world CLIPs are trained (or loaded) once, on demand.

    Args:
        mode: ``"world"`` or ``"config"`` (``--clip-mode``; see ``tools/ablate_synthetic.py``).
        base_cfg: the config with the user's overrides (its ``MODEL.CLIP``).
    """

    def __init__(self, mode: str, base_cfg: Any) -> None:
        self.mode = mode
        self.clip_cfg = base_cfg.MODEL.CLIP
        self._world: dict[str, ClipChoice] = {}
        if mode == "world" and not str(self.clip_cfg.NAME).endswith(".json"):
            raise SystemExit(
                f"{TOOL}: --clip-mode world needs MODEL.CLIP.NAME to be a model-config JSON "
                f"(the world CLIP's architecture), not '{self.clip_cfg.NAME}'; use --clip-mode "
                "config for another CLIP"
            )

    def choose(self, variant: Variant, seed: int) -> ClipChoice:
        """The CLIP overrides and description of ``variant`` run with ``seed``."""
        if variant.clip == CLIP_RANDOM:
            return ClipChoice(
                ("MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.ALLOW_RANDOM_INIT", "True",
                 "MODEL.CLIP.RANDOM_INIT_SEED", str(seed)),
                f"{self.clip_cfg.NAME} with RANDOM weights (seed {seed})",
            )  # fmt: skip
        if self.mode == "config":
            weights = self.clip_cfg.PRETRAINED or "RANDOM weights"
            return ClipChoice((), f"{self.clip_cfg.NAME} / {weights} (--clip-mode config)")
        classes = "seen" if variant.clip == CLIP_SEEN else "all"
        if classes not in self._world:
            self._world[classes] = self._world_clip(classes)
        return self._world[classes]

    def _world_clip(self, classes: str) -> ClipChoice:
        """Trains (first use, several minutes) or loads the world CLIP of ``classes``."""
        from chimeraseg.world.cache import ensure_world_clip
        from chimeraseg.world.clip_training import WorldClipConfig

        print(f"[ablate] world CLIP ({classes} classes): from the cache, or trained now "
              "(several minutes)", flush=True)  # fmt: skip
        world = ensure_world_clip(WorldClipConfig(model_config=self.clip_cfg.NAME, classes=classes))
        description = (
            f"world CLIP trained on {classes} classes ({world.checkpoint}); "
            f"{world.report.get('message', '')}"
        )
        origin = "trained now" if world.trained_now else "from the cache"
        print(f"[ablate] {origin}: {description}", flush=True)
        opts = ("MODEL.CLIP.NAME", str(world.model_config),
                "MODEL.CLIP.PRETRAINED", str(world.checkpoint),
                "MODEL.CLIP.ALLOW_RANDOM_INIT", "False")  # fmt: skip
        return ClipChoice(opts, description)
