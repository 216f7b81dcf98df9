"""Export a trained :class:`~chimeraseg.modeling.ChimeraSegModel` to ONNX (folder layout in
:mod:`chimeraseg.deploy.metadata`).

The open vocabulary survives because the image path never needs the text: the image graph ends
at unit pixel embeddings in CLIP's space, the text graph at unit text embeddings, and the
runtime takes their cosine. Graphs are written by the TorchScript-based ``torch.onnx.export``
(``dynamo=False``) with dynamic batch and size; the dynamo exporter stops at the CSH's fused value
map, whose cache key reads tensor data pointers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.clip.loading import clip_reference
from chimeraseg.clip.templates import resolve_templates
from chimeraseg.clip.text import clip_tokenizer
from chimeraseg.deploy.metadata import (
    BAKED_GRAPH,
    IMAGE_GRAPH,
    IMAGE_GRAPH_INT8,
    METADATA_FILE,
    MODEL_ID_KEY,
    OPSET,
    TEXT_GRAPH,
    VOCABULARY_KEY,
    BakedVocabulary,
    ExportError,
    ExportMetadata,
    file_sha256,
    vocabulary_stamp,
)
from chimeraseg.deploy.tokenizer import BUILTIN_TOKENIZERS, tokenizer_spec
from chimeraseg.modeling.backbone.mit import MIN_INPUT_SIZE
from chimeraseg.modeling.chimeraseg_model import ChimeraSegModel
from chimeraseg.utils.output_files import refuse_symlink

__all__ = [
    "BakedSegmenterGraph",
    "ExportOptions",
    "ImageEncoderGraph",
    "TextEncoderGraph",
    "export_model",
    "state_sha256",
]

OUTPUT_STRIDE = 4
_TRACE_SIZE = (1, 3, 96, 128)  # any size works: the graphs keep batch and size dynamic


class ImageEncoderGraph(nn.Module):
    """RGB ``(B, 3, H, W)`` float 0..255 -> unit pixel embeddings ``(B, D, ceil(H/4), ceil(W/4))``.

    Normalisation, student, decoder and CSH in one pass (no chunking: the graph is per image).
    """

    def __init__(self, model: ChimeraSegModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.model.decoder_features(image)  # (B, E, h, w)
        return F.normalize(self.model.head(features, 0), dim=1)  # (B, D, h, w)


class TextEncoderGraph(nn.Module):
    """Token ids ``(N, L)`` int64 -> unit CLIP text embeddings ``(N, D)``."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.clip_model = clip_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip_model.encode_text(tokens).float(), dim=-1)  # (N, D)


class BakedSegmenterGraph(nn.Module):
    """RGB ``(B, 3, H, W)`` -> logits ``cos / τ`` ``(B, N, h, w)`` over a fixed vocabulary.

    Args:
        encoder: the image graph's module.
        text: ``(N, D)`` text embeddings of the vocabulary (normalised here).
        logit_tau: ``τ``.
    """

    def __init__(self, encoder: ImageEncoderGraph, text: torch.Tensor, logit_tau: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("scaled_text", F.normalize(text.float(), dim=-1) / logit_tau)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        embeddings = self.encoder(image)  # (B, D, h, w)
        return torch.einsum("bdhw,nd->bnhw", embeddings, self.scaled_text)  # (B, N, h, w)


@dataclass(frozen=True)
class ExportOptions:
    """What the export records beside the model (the config glue fills it from ``cfg``).

    Attributes:
        templates: prompt templates (a set name or a list).
        gamma: default unseen bias (``TEST.GAMMA``).
        train_vocabulary: class names of the training split (dataset order).
        size_divisibility: padding multiple of the runtime (the meta-architecture's).
        test_resize: ``(short side, max side)`` test-time resize; ``(0, 0)`` = none.
        source: hashes of the source (``config_sha256``, ``weights_sha256``, ...).
        humanize: humanise class names before prompting (as ``encode_class_names``).
        colors: RGB colour per training class for the demo (None = none).
    """

    templates: str | Sequence[str]
    gamma: float
    train_vocabulary: Sequence[str]
    size_divisibility: int
    test_resize: tuple[int, int]
    source: dict[str, Any]
    humanize: bool = True
    colors: Sequence[Sequence[int]] | None = None


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _onnx_export(module: nn.Module, sample: torch.Tensor, path: str, names: dict) -> None:
    """One graph: input/output names and dynamic axes from ``names``, fixed opset."""
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks of the model become constants of the trace; the runtime checks sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            module,
            (sample,),
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=[names["input"]],
            output_names=[names["output"]],
            dynamic_axes=names["axes"],
            do_constant_folding=True,
        )


def _stamp(path: str, properties: dict[str, str]) -> None:
    """Writes ``properties`` (the model id, the baked vocabulary's stamp) into the graph's
    metadata properties (the runtime checks them)."""
    import onnx

    graph = onnx.load(path)
    del graph.metadata_props[:]
    for key, value in properties.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)


IMAGE_AXES = {"image": {0: "batch", 2: "height", 3: "width"}}
IMAGE_NAMES = {
    "input": "image",
    "output": "embeddings",
    "axes": {**IMAGE_AXES, "embeddings": {0: "batch", 2: "out_height", 3: "out_width"}},
}
TEXT_NAMES = {
    "input": "tokens",
    "output": "text_embeddings",
    "axes": {"tokens": {0: "prompts"}, "text_embeddings": {0: "prompts"}},
}
BAKED_NAMES = {
    "input": "image",
    "output": "logits",
    "axes": {**IMAGE_AXES, "logits": {0: "batch", 2: "out_height", 3: "out_width"}},
}


def quantize_int8(source: str, target: str) -> None:
    """Dynamic int8 quantisation of the matrix products (MatMul, Gemm) of an ONNX graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        source, target, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8
    )


def _write_graphs(
    folder: str,
    model: ChimeraSegModel,
    clip_model: nn.Module,
    context_length: int,
    baked: tuple[torch.Tensor, BakedVocabulary] | None,
    int8: bool,
) -> list[str]:
    encoder = ImageEncoderGraph(model).eval()
    image = torch.rand(_TRACE_SIZE) * 255
    _onnx_export(encoder, image, os.path.join(folder, IMAGE_GRAPH), IMAGE_NAMES)
    tokens = torch.zeros(2, context_length, dtype=torch.long)
    tokens[:, 0], tokens[:, 1] = 49406, 49407  # start and end of text: "" prompts
    text = TextEncoderGraph(clip_model).eval()
    _onnx_export(text, tokens, os.path.join(folder, TEXT_GRAPH), TEXT_NAMES)
    written = [IMAGE_GRAPH, TEXT_GRAPH]
    if int8:
        quantize_int8(os.path.join(folder, IMAGE_GRAPH), os.path.join(folder, IMAGE_GRAPH_INT8))
        written.append(IMAGE_GRAPH_INT8)
    if baked is not None:
        segmenter = BakedSegmenterGraph(encoder, baked[0], model.logit_tau).eval()
        _onnx_export(segmenter, image, os.path.join(folder, BAKED_GRAPH), BAKED_NAMES)
        written.append(BAKED_GRAPH)
    return written


def export_model(
    model: ChimeraSegModel,
    clip_model: nn.Module,
    folder: str | os.PathLike,
    options: ExportOptions,
    baked_vocabulary: Sequence[str] | None = None,
    baked_unseen_ids: Sequence[int] = (),
    int8: bool = False,
) -> ExportMetadata:
    """Writes an export folder (graphs + ``metadata.json``) for ``model``.

    The folder is assembled next to its destination and renamed into place, so a failed export
    leaves nothing behind; an existing non-empty destination is refused (never overwritten).

    Args:
        model: the trained model (put in eval mode; its weights are not changed).
        clip_model: its frozen CLIP (the text tower is exported).
        folder: destination; must not exist or be empty.
        options: templates, γ, vocabulary and source hashes to record.
        baked_vocabulary: also write ``segmenter.onnx`` with these class names' embeddings.
        baked_unseen_ids: indices of ``baked_vocabulary`` that receive γ.
        int8: also write ``image_encoder_int8.onnx`` (dynamic int8 matrix products).

    Returns:
        The metadata written.

    Raises:
        ExportError: a non-empty destination, an empty baked vocabulary, bad unseen ids, or a
            CLIP whose tokenizer is not the built-in BPE.
        ValueError: a baked name given twice (after the prompt spelling).
    """
    # renamed into place below, so a symbolic link there is refused rather than replaced
    folder = refuse_symlink(os.path.abspath(os.fspath(folder)), "export folder")
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise ExportError(f"{folder}: exists and is not an empty folder; choose a new one")
    model.eval()
    templates = resolve_templates(options.templates)
    meta = _metadata(model, clip_model, options, templates)
    baked = None
    if baked_vocabulary is not None:
        baked = _baked(model, clip_model, baked_vocabulary, baked_unseen_ids, options, templates)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        context = int(meta.tokenizer["context_length"])
        names = _write_graphs(staging, model, clip_model, context, baked, int8)
        files = {}
        for name in names:
            properties = {MODEL_ID_KEY: meta.model_id}
            if name == BAKED_GRAPH:
                properties[VOCABULARY_KEY] = vocabulary_stamp(baked[1])
            _stamp(os.path.join(staging, name), properties)
            files[name] = file_sha256(os.path.join(staging, name))
        meta = replace(meta, files=files, baked=None if baked is None else baked[1])
        _check_readable(meta)
        with open(os.path.join(staging, METADATA_FILE), "w", encoding="utf-8") as f:
            f.write(meta.to_json())
        if os.path.isdir(folder):
            os.rmdir(folder)  # empty (checked above)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _check_readable(meta: ExportMetadata) -> None:
    """Refuses metadata the runtime would refuse (the same schema, before anything is written)."""
    from chimeraseg.deploy.schema import MetadataInvalid, validate_metadata

    try:
        validate_metadata(json.loads(meta.to_json()))
    except MetadataInvalid as e:
        raise ExportError(f"the export's {METADATA_FILE} would be refused: {e}") from None


def _baked(
    model: ChimeraSegModel,
    clip_model: nn.Module,
    names: Sequence[str],
    unseen_ids: Sequence[int],
    options: ExportOptions,
    templates: list[str],
) -> tuple[torch.Tensor, BakedVocabulary]:
    from chimeraseg.clip.text import encode_class_names
    from chimeraseg.data.spellings import check_distinct_class_names

    names = [str(n) for n in names]
    if not names:
        raise ExportError("--vocabulary: the baked vocabulary is empty")
    check_distinct_class_names(names, "--vocabulary")  # a twin would never be predicted
    bad = [i for i in unseen_ids if not 0 <= int(i) < len(names)]
    if bad:
        raise ExportError(f"--unseen: ids {bad} are outside the vocabulary of {len(names)} names")
    with torch.no_grad():
        text = encode_class_names(clip_model, names, templates, humanize=options.humanize)
    return text.cpu(), BakedVocabulary(names=names, unseen_ids=sorted(int(i) for i in unseen_ids))


def _metadata(
    model: ChimeraSegModel,
    clip_model: nn.Module,
    options: ExportOptions,
    templates: list[str],
) -> ExportMetadata:
    reference = clip_reference(clip_model)
    tokenizer = tokenizer_spec(clip_tokenizer(clip_model), reference.get("name"))
    if tokenizer["model"] not in BUILTIN_TOKENIZERS:
        raise ExportError(
            f"CLIP {reference.get('name')!r}: its tokenizer is not the built-in CLIP BPE, the "
            "only one an export's runtime rebuilds (deploy/tokenizer.py)"
        )
    source = {**options.source, "state_sha256": state_sha256(model)}
    blob = json.dumps(source, sort_keys=True).encode()
    inference = model.inference
    return ExportMetadata(
        model_id=hashlib.sha256(blob).hexdigest(),
        source=source,
        opset=OPSET,
        clip=reference,
        tokenizer=tokenizer,
        templates=templates,
        humanize=bool(options.humanize),
        logit_tau=float(model.logit_tau),
        gamma=float(options.gamma),
        train_vocabulary=[str(n) for n in options.train_vocabulary],
        seen_ids=list(model.seen_ids),
        unseen_ids=list(model.unseen_ids),
        embed_dim=int(model.head.embed_dim),
        pixel_mean=[float(v) for v in model.pixel_mean.flatten()],
        pixel_std=[float(v) for v in model.pixel_std.flatten()],
        output_stride=OUTPUT_STRIDE,
        size_divisibility=int(options.size_divisibility),
        min_input_size=MIN_INPUT_SIZE,
        test_resize=[int(v) for v in options.test_resize],
        colors=None if options.colors is None else [[int(c) for c in v] for v in options.colors],
        inference={
            "mode": inference.mode,
            "slide_crop": list(inference.slide_crop),
            "slide_stride": list(inference.slide_stride),
        },
    )
