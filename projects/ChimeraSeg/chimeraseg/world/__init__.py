"""The synthetic world's own CLIP: training, zero-shot quality gate and per-machine cache.

Plain PyTorch; nothing here imports detectron2.
"""
