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

    # the vocabulary from a file (one class per line, "sofa, couch" = synonyms), and the masks:
    # <stem>_labels.png (class index per pixel) + vocabulary.json naming the indices
    python tools/demo.py --config-file <cfg> --input photos/ --output out/ \\
        --vocabulary-file names.txt --unseen couch --save-labels MODEL.WEIGHTS <pth>

    python tools/demo.py --config-file <cfg> --video-input clip.mp4 --output vis/ ...
    python tools/demo.py --config-file <cfg> --webcam --output vis/ ...  # camera 0; Ctrl-C stops

    # the same demo on an ONNX export (tools/export_onnx.py), with or without detectron2
    python tools/demo.py --onnx export/ --input photos/ --output out/ --vocabulary "cat,sky"
    python tools/demo.py --onnx export/ --onnx-graph int8 --input photos/ --output out/

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
from typing import Any

import cv2
import numpy as np

from chimeraseg.data.splits import read_class_names
from chimeraseg.demo.vocabulary import split_names
from chimeraseg.deploy.runtime import GRAPHS
from chimeraseg.utils.demo_images import image_outputs, run_on_images
from chimeraseg.utils.output_files import OutputError, atomic_path, confirm_written, plan_outputs
from chimeraseg.utils.tool_parser import tool_parser

EXAMPLES = (
    "python tools/demo.py --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml "
    "--input photos/ --output vis/ --vocabulary 'cat,grass,sky' --unseen cat "
    "MODEL.WEIGHTS output/coco-stuff-164k-156/chimeraseg_mitb4_80k/model_final.pth",
    "python tools/demo.py --onnx export/ --input photos/ --output vis/ --vocabulary 'cat,sky'",
)

# A demo object (chimeraseg.d2.predictor.ChimeraSegDemo, chimeraseg.deploy.demo.OnnxDemo).
Demo = Any


def _image_paths(inputs: list[str]) -> list[str]:
    """Expands files, globs and folders (every file in them) to a list of candidate paths."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths += [os.path.join(item, f) for f in sorted(os.listdir(item))]
        else:
            paths += sorted(glob.glob(os.path.expanduser(item))) or [item]
    return [p for p in paths if not os.path.isdir(p)]


def _frames(capture: cv2.VideoCapture, source: str) -> Iterator[np.ndarray]:
    """RGB frames of an opened capture until it ends (or Ctrl-C, for a camera)."""
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open {source}")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield frame[..., ::-1].copy()  # BGR -> RGB
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()


def run_on_stream(
    demo: Demo, capture: cv2.VideoCapture, source: str, target: str, max_frames: int = 0
) -> str:
    """Writes the overlay of every frame of ``capture`` to the video ``target``; returns it.

    Args:
        demo: The predictor.
        capture: An opened ``cv2.VideoCapture`` (a file or a camera).
        source: What ``capture`` reads, for messages (``"video 'x.mp4'"``, ``"camera 0"``).
        target: Output ``.mp4`` file.
        max_frames: Stop after this many frames (0 = at the end of the stream).
    """
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    with atomic_path(target) as tmp:  # a new file, renamed over ``target`` once complete
        for count, frame in enumerate(_frames(capture, source), start=1):
            vis = demo.draw(frame, demo.predict(frame))[..., ::-1]  # (H', W, 3) BGR with legend
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(tmp, fourcc, fps, (vis.shape[1], vis.shape[0]))
                if not writer.isOpened():
                    raise OutputError(f"{target} cannot be written (is the folder writable?)")
            writer.write(np.ascontiguousarray(vis))
            if count == max_frames:
                break
        if writer is None:
            raise ValueError(f"{source}: no frame could be decoded; nothing was written")
        writer.release()
    return confirm_written(target)


def run_on_video(demo: Demo, path: str, output: str, max_frames: int = 0) -> str:
    """Writes ``<output>/<stem>.mp4`` with the overlay of every frame; returns its path."""
    (plan,) = plan_outputs([path], output, [".mp4"])  # never over the input video
    return run_on_stream(demo, cv2.VideoCapture(path), f"video '{path}'", plan[".mp4"], max_frames)


def run_on_webcam(demo: Demo, camera: int, output: str, max_frames: int = 0) -> str:
    """Writes ``<output>/webcam<camera>.mp4`` from a camera until Ctrl-C (or ``max_frames``).

    The overlays go to a file rather than a window: the pinned OpenCV is the headless build.
    """
    target = os.path.join(output, f"webcam{camera}.mp4")
    capture = cv2.VideoCapture(camera)
    return run_on_stream(demo, capture, f"camera {camera}", target, max_frames)


def get_parser() -> argparse.ArgumentParser:
    parser = tool_parser("Chimera-Seg demo (detectron2 Visualizer)", EXAMPLES)
    parser.add_argument("--config-file", metavar="FILE", help="the model's config (PyTorch)")
    parser.add_argument(
        "--onnx", metavar="DIR", help="run an export of tools/export_onnx.py instead (no config)"
    )
    parser.add_argument(
        "--onnx-graph",
        choices=GRAPHS,
        help="with --onnx: the image graph (default: baked if exported and no --vocabulary, "
        "else fp32)",
    )
    parser.add_argument("--input", nargs="+", help="image files, globs or folders")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument(
        "--webcam", nargs="?", type=int, const=0, metavar="N", help="camera N (default 0)"
    )
    parser.add_argument("--max-frames", type=int, default=0, help="stop a stream after N frames")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--vocabulary", help='class names "cat,grass,..." (default: dataset)')
    parser.add_argument(
        "--vocabulary-file", metavar="FILE", help='one class per line ("sofa, couch" = synonyms)'
    )
    parser.add_argument("--unseen", help='names of --vocabulary marked unseen, "a,b"')
    parser.add_argument("--gamma", type=float, help="unseen-logit bias (default TEST.GAMMA)")
    parser.add_argument("--similarity-map", action="store_true", help="also write Fig. 8 maps")
    parser.add_argument(
        "--save-labels",
        action="store_true",
        help="also write <stem>_labels.png (class index per pixel) and vocabulary.json",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run without MODEL.WEIGHTS (an untrained student; smoke tests only)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def _vocabulary(args: argparse.Namespace) -> list[str] | None:
    """The class names of ``--vocabulary`` or ``--vocabulary-file``; None for the dataset's."""
    if args.vocabulary is not None and args.vocabulary_file:
        raise SystemExit("tools/demo.py: give --vocabulary or --vocabulary-file, not both")
    if args.vocabulary_file:
        try:
            return read_class_names(args.vocabulary_file)
        except (OSError, ValueError) as e:
            raise SystemExit(f"tools/demo.py: --vocabulary-file: {e}") from e
    vocabulary = split_names(args.vocabulary)
    if vocabulary is not None and not vocabulary:
        raise SystemExit(f"tools/demo.py: --vocabulary {args.vocabulary!r} holds no class name")
    return vocabulary


def _visualizer_drawer() -> Any:
    """detectron2's Visualizer drawing when detectron2 is installed, else None (a colour blend)."""
    try:
        from chimeraseg.d2.predictor import VisualizerDrawer
    except ImportError:
        return None
    return VisualizerDrawer


def build_demo(*args: Any, **kwargs: Any) -> Demo:
    """The PyTorch demo: :func:`chimeraseg.d2.predictor.build_demo` (imports detectron2)."""
    from chimeraseg.d2.predictor import build_demo as build

    return build(*args, **kwargs)


def _build(
    args: argparse.Namespace, vocabulary: list[str] | None, unseen: list[str] | None
) -> Demo:
    """The PyTorch demo of ``--config-file`` or the ONNX demo of ``--onnx``."""
    if args.onnx:
        if args.config_file or args.opts or args.allow_random_weights:
            raise SystemExit("tools/demo.py: --onnx takes no --config-file, overrides or weights")
        if args.similarity_map:
            raise SystemExit("tools/demo.py: --similarity-map needs the PyTorch model, not --onnx")
        from chimeraseg.deploy.demo import build_onnx_demo
        from chimeraseg.deploy.metadata import ExportError

        try:
            return build_onnx_demo(
                args.onnx, vocabulary, unseen, args.gamma, _visualizer_drawer(), args.onnx_graph
            )
        except (ExportError, ImportError) as e:
            raise SystemExit(f"tools/demo.py: --onnx: {e}") from e
    if args.onnx_graph:
        raise SystemExit("tools/demo.py: --onnx-graph needs --onnx DIR")
    if not args.config_file:
        raise SystemExit("tools/demo.py: give --config-file (PyTorch) or --onnx DIR (an export)")
    opts = list(args.opts)
    if args.allow_random_weights:
        opts += ["MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"]
    return build_demo(args.config_file, opts, vocabulary, unseen, args.gamma, args.similarity_map)


def _check_outputs(args: argparse.Namespace, paths: list[str]) -> None:
    """Exits before any work when the inputs name no file or an output would replace an input."""
    if args.input and not paths:
        raise SystemExit(f"tools/demo.py: --input {' '.join(args.input)} names no file")
    try:
        if paths:
            image_outputs(paths, args.output, args.similarity_map, args.save_labels)
        if args.video_input:
            plan_outputs([args.video_input], args.output, [".mp4"])
    except OutputError as e:
        raise SystemExit(f"tools/demo.py: {e}") from None


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    if not args.input and not args.video_input and args.webcam is None:
        raise SystemExit("tools/demo.py: give --input IMAGES|FOLDER, --video-input or --webcam")
    vocabulary, unseen = _vocabulary(args), split_names(args.unseen)
    if unseen and not vocabulary:
        raise SystemExit("tools/demo.py: --unseen needs --vocabulary or --vocabulary-file")
    paths = _image_paths(args.input) if args.input else []
    _check_outputs(args, paths)  # before the model is built
    demo = _build(args, vocabulary, unseen)
    if args.input:
        run_on_images(demo, paths, args.output, args.similarity_map, labels=args.save_labels)
    if args.video_input:
        print("wrote", run_on_video(demo, args.video_input, args.output, args.max_frames))
    if args.webcam is not None:
        print("wrote", run_on_webcam(demo, args.webcam, args.output, args.max_frames))


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/demo.py")
