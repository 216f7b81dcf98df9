"""SegFormer all-MLP decoder (plain PyTorch)."""

from chimeraseg.modeling.decoder.segformer_head import SegFormerDecoder

__all__ = ["SegFormerDecoder"]
