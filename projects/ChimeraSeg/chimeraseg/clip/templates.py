"""Prompt templates for CLIP text embeddings (paper §III-D; docs/METHOD.md, 'Inference').

Sets, selectable by name in :func:`chimeraseg.clip.text.encode_class_names`:

- ``"single"``: ``"a photo of a {}."``.
- ``"zegclip15"``: the 15 templates ZegCLIP uses for its multi-template text embeddings.
- ``"imagenet80+scene"``: CLIP's 80 ImageNet templates followed by the 5 scene templates that
  MaskCLIP adds for segmentation (85 in total).
"""

from __future__ import annotations

__all__ = [
    "IMAGENET_TEMPLATES",
    "SCENE_TEMPLATES",
    "ZEGCLIP_TEMPLATES",
    "SINGLE_TEMPLATE",
    "TEMPLATE_SETS",
    "resolve_templates",
]

SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)

# The 80 prompt templates OpenAI published for zero-shot ImageNet classification.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# Scene templates added by MaskCLIP for dense prediction.
SCENE_TEMPLATES: tuple[str, ...] = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)

# ZegCLIP's 15 multi-template prompts.
ZEGCLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "a {} in the scene.",
    "a photo of a {} in the scene.",
    "There is a {} in the scene.",
    "There is the {} in the scene.",
    "This is a {} in the scene.",
    "This is the {} in the scene.",
    "This is one {} in the scene.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet80+scene": IMAGENET_TEMPLATES + SCENE_TEMPLATES,
    "imagenet80": IMAGENET_TEMPLATES,
    "zegclip15": ZEGCLIP_TEMPLATES,
    "single": SINGLE_TEMPLATE,
}


def resolve_templates(templates: str | list[str] | tuple[str, ...]) -> list[str]:
    """Turns a template-set name or an explicit list into a validated list of templates.

    Args:
        templates: A key of :data:`TEMPLATE_SETS` or a list of strings with one ``{}`` each.

    Returns:
        The templates, in order.

    Raises:
        ValueError: Unknown set name, empty list, or a template without exactly one ``{}``.
    """
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(
                f"unknown template set '{templates}'; choose one of {sorted(TEMPLATE_SETS)} "
                "or pass a list of templates"
            )
        return list(TEMPLATE_SETS[templates])
    result = list(templates)
    if not result:
        raise ValueError("templates must not be empty")
    for t in result:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"template {t!r} must be a string with exactly one '{{}}'")
    return result
