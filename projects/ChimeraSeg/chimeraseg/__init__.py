"""Chimera-Seg: zero-shot semantic segmentation with a partial-CLIP semantic head.

The package is plain PyTorch/NumPy. Only :mod:`chimeraseg.d2` imports detectron2.
"""

__version__ = "0.1.0"

# The label every loss, metric and converter ignores (docs/METHOD.md, 'Label-space conventions');
# uint8 label files and 256-entry lookup tables fix it at 255.
IGNORE_LABEL = 255
# The ignore value of 16-bit label files (vocabularies above 255 classes: PASCAL Context-459,
# ADE20K-847), as in the CAT-Seg / SAN layouts; only evaluation reads such files.
IGNORE_LABEL_16BIT = 65535


def ignore_label_for(num_classes: int) -> int:
    """The ignore value of a label set of ``num_classes`` classes: 255 while the class ids fit
    below it, else 65535 (16-bit labels), so that no class id is ever read as ignore."""
    return IGNORE_LABEL if num_classes <= IGNORE_LABEL else IGNORE_LABEL_16BIT
