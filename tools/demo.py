#!/usr/bin/env python
"""Visualize Chimera-Seg predictions on images, a folder or a video, for any vocabulary.

Examples::

    python tools/demo.py --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml \\
        --input photos/*.jpg --output vis/ MODEL.WEIGHTS model_final.pth

    # open vocabulary; "*" marks the classes given as unseen in the legend (they receive gamma)
    python tools/demo.py --config-file <cfg> --input cat.jpg --output vis/ \\
        --vocabulary "cat,grass,sky,tree" --unseen "cat" --gamma 0.5 MODEL.WEIGHTS <pth>

    # CLS-to-feature cosine similarity heat map (paper Fig. 8; builds the CLIP teacher)
    python tools/demo.py --config-file <cfg> --input img.jpg --output vis/ --similarity-map ...

    python tools/demo.py --config-file <cfg> --video-input clip.mp4 --output vis/ ...

Images are read by the project's reader (``chimeraseg.data.io.read_image``), which ignores EXIF
orientation tags like every other part of ChimeraSeg. Files of an input folder that are not images
are skipped with a one-line note. Without trained weights (``MODEL.WEIGHTS``) the demo stops,
unless ``--allow-random-weights`` is given (smoke tests only).
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Iterator

import cv2
import numpy as np

from chimeraseg.d2.predictor import ChimeraSegDemo, build_demo, run_on_images


def _image_paths(inputs: list[str]) -> list[str]:
    """Expands files, globs and folders (every file in them) to a list of candidate paths."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths += [os.path.join(item, f) for f in sorted(os.listdir(item))]
        else:
            paths += sorted(glob.glob(os.path.expanduser(item))) or [item]
    return [p for p in paths if not os.path.isdir(p)]


def _frames(path: str) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video '{path}'")
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield frame[..., ::-1].copy()
    capture.release()


def run_on_video(demo: ChimeraSegDemo, path: str, output: str) -> str:
    """Writes ``<output>/<stem>.mp4`` with the overlay of every frame; returns its path."""
    os.makedirs(output, exist_ok=True)
    fps = cv2.VideoCapture(path).get(cv2.CAP_PROP_FPS) or 25.0
    target = os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".mp4")
    writer = None
    for frame in _frames(path):
        vis = demo.draw(frame, demo.predict(frame))[..., ::-1]
        if writer is None:
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            writer = cv2.VideoWriter(target, fourcc, fps, (vis.shape[1], vis.shape[0]))
        writer.write(np.ascontiguousarray(vis))
    if writer is not None:
        writer.release()
    return target


def _split_names(text: str | None) -> list[str] | None:
    """Comma-separated names; None when the option is absent ([] when it holds no name)."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Chimera-Seg demo (detectron2 Visualizer)")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", help="image files, globs or folders")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--vocabulary", help='class names "cat,grass,..." (default: dataset)')
    parser.add_argument("--unseen", help='names of --vocabulary marked unseen, "a,b"')
    parser.add_argument("--gamma", type=float, help="unseen-logit bias (default TEST.GAMMA)")
    parser.add_argument("--similarity-map", action="store_true", help="also write Fig. 8 maps")
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run without MODEL.WEIGHTS (an untrained student; smoke tests only)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    if not args.input and not args.video_input:
        raise SystemExit("tools/demo.py: give --input IMAGES|FOLDER or --video-input VIDEO")
    vocabulary, unseen = _split_names(args.vocabulary), _split_names(args.unseen)
    if vocabulary is not None and not vocabulary:
        raise SystemExit(f"tools/demo.py: --vocabulary {args.vocabulary!r} holds no class name")
    if unseen and not vocabulary:
        raise SystemExit("tools/demo.py: --unseen needs --vocabulary")
    opts = list(args.opts)
    if args.allow_random_weights:
        opts += ["MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"]
    demo = build_demo(args.config_file, opts, vocabulary, unseen, args.gamma, args.similarity_map)
    if args.input:
        run_on_images(demo, _image_paths(args.input), args.output, args.similarity_map)
    if args.video_input:
        print("wrote", run_on_video(demo, args.video_input, args.output))


if __name__ == "__main__":
    main()
