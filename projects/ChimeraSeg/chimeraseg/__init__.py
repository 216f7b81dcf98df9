"""Chimera-Seg: zero-shot semantic segmentation with a partial-CLIP semantic head.

The package is plain PyTorch/NumPy. Only :mod:`chimeraseg.d2` imports detectron2.
"""

__version__ = "0.1.0"
