"""What an ONNX file holds, read from its bytes without the ``onnx`` package.

The runtime checks a graph before onnxruntime loads it: its opsets, whether any tensor keeps
its data in an external file (an export never does; onnxruntime would open that file), and
whether it is quantised (an int8 graph swapped in under the fp32 name, or the reverse). This
module reads the few protobuf fields that answer these questions (``onnx.proto`` field numbers)
and skips the rest, tensor data included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["GraphSummary", "QUANTIZED_OPS", "summarize_graph"]

# Operators of quantised graphs (onnxruntime's dynamic and static quantisation, QDQ format).
QUANTIZED_OPS = frozenset(
    {
        "ConvInteger",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "QAttention",
        "QGemm",
        "QLinearConv",
        "QLinearMatMul",
        "QuantizeLinear",
    }
)
_INT8_TYPES = (2, 3)  # TensorProto.DataType UINT8, INT8
_EXTERNAL = 1  # TensorProto.DataLocation EXTERNAL

# Field numbers of onnx.proto.
_MODEL_OPSET, _MODEL_GRAPH = 8, 7
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_TENSOR_DATA_TYPE, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 2, 13, 14
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2


class GraphFormatError(ValueError):
    """Bytes that are not a well-formed ONNX model."""


@dataclass
class GraphSummary:
    """What the checks need to know about one ONNX model.

    Attributes:
        opsets: domain (``""`` = the default ONNX domain) -> opset version.
        op_types: every operator type, subgraphs included.
        int8_tensors: number of int8/uint8 initialisers and constant tensors.
        external_data: whether a tensor keeps its data in a separate file.
    """

    opsets: dict[str, int] = field(default_factory=dict)
    op_types: set[str] = field(default_factory=set)
    int8_tensors: int = 0
    external_data: bool = False

    @property
    def quantized(self) -> bool:
        """Whether the graph has quantised operators or int8 weights."""
        return bool(self.op_types & QUANTIZED_OPS) or self.int8_tensors > 0


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise GraphFormatError("truncated or malformed varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: int | memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """``(field number, value)`` of one message: varints as int, length-delimited as bytes."""
    if not isinstance(data, memoryview):
        raise GraphFormatError("a message field holds a number")
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise GraphFormatError("a field runs past the end of its message")
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise GraphFormatError(f"unsupported protobuf wire type {wire}")
    if pos != len(data):
        raise GraphFormatError("a fixed-size field runs past the end of its message")


def _text(value: int | memoryview) -> str:
    if not isinstance(value, memoryview):
        raise GraphFormatError("a string field holds a number")
    return bytes(value).decode("utf-8", "replace")


def _tensor(data: memoryview, summary: GraphSummary) -> None:
    for number, value in _fields(data):
        if number == _TENSOR_DATA_TYPE and value in _INT8_TYPES:
            summary.int8_tensors += 1
        elif number == _TENSOR_EXTERNAL_DATA or (
            number == _TENSOR_DATA_LOCATION and value == _EXTERNAL
        ):
            summary.external_data = True


def _node(data: memoryview, summary: GraphSummary, depth: int) -> None:
    for number, value in _fields(data):
        if number == _NODE_OP_TYPE:
            summary.op_types.add(_text(value))
        elif number == _NODE_ATTRIBUTE:
            for attr_number, attr in _fields(value):
                if attr_number in (_ATTR_TENSOR, _ATTR_TENSORS):
                    _tensor(attr, summary)
                elif attr_number in (_ATTR_GRAPH, _ATTR_GRAPHS):
                    _graph(attr, summary, depth + 1)


def _graph(data: memoryview, summary: GraphSummary, depth: int) -> None:
    if depth > 32:
        raise GraphFormatError("subgraphs nested more than 32 deep")
    for number, value in _fields(data):
        if number == _GRAPH_NODE:
            _node(value, summary, depth)
        elif number == _GRAPH_INITIALIZER:
            _tensor(value, summary)


def summarize_graph(model: bytes) -> GraphSummary:
    """Opsets, operator types, int8 tensors and external data of a serialised ONNX model.

    Raises:
        GraphFormatError: bytes that are not a well-formed protobuf message.
    """
    summary = GraphSummary()
    for number, value in _fields(memoryview(model)):
        if number == _MODEL_GRAPH:
            _graph(value, summary, 0)
        elif number == _MODEL_OPSET:
            entry = dict(_fields(value))
            version = entry.get(_OPSET_VERSION, 0)
            if not isinstance(version, int):
                raise GraphFormatError("an opset version is not a number")
            summary.opsets[_text(entry.get(_OPSET_DOMAIN, memoryview(b"")))] = version
    return summary
