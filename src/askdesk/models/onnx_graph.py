"""The few ONNX messages `bert.onnx_session` builds, written in protobuf's wire format.

Importing the ``onnx`` package to build them cost ~1 s of every cold start (most of it in
ml_dtypes, which onnx imports for dtypes askdesk never uses), for a graph of a few hundred nodes
that onnxruntime reads back as bytes. The messages and field numbers are those of
``onnx/onnx.proto`` (frozen: ONNX only ever adds fields), in the subset askdesk uses; the
``onnx`` package remains the reference the tests compare these bytes against
(tests/test_embed.py), not a dependency of answering.
"""

from __future__ import annotations

import struct

import numpy as np

# TensorProto.DataType
FLOAT, UINT8, INT8, INT32, INT64, FLOAT16 = 1, 2, 3, 6, 7, 10
_DTYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): UINT8, np.dtype(np.int8): INT8,
           np.dtype(np.int32): INT32, np.dtype(np.int64): INT64, np.dtype(np.float16): FLOAT16}
EXTERNAL = 1  # TensorProto.DataLocation


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 as protobuf writes it: ten bytes of two's complement
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode("utf-8"))


def tensor_type(arr_dtype) -> int:
    """The TensorProto data type of a numpy dtype; ValueError for one askdesk does not use."""
    try:
        return _DTYPES[np.dtype(arr_dtype)]
    except KeyError:
        raise ValueError(f"no ONNX tensor type for {np.dtype(arr_dtype)} here") from None


def tensor(name: str, arr: np.ndarray) -> bytes:
    """A TensorProto holding ``arr`` (raw little-endian data), as numpy_helper.from_array writes it."""
    arr = np.asarray(arr)
    return (b"".join(_int(1, d) for d in arr.shape) + _int(2, tensor_type(arr.dtype)) + _str(8, name)
            + _bytes(9, np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()))


def external_tensor(name: str, arr: np.ndarray, location: str) -> bytes:
    """A TensorProto whose data is elsewhere (handed to onnxruntime as an array by name)."""
    entry = _str(1, "location") + _str(2, location)  # StringStringEntryProto
    return (b"".join(_int(1, d) for d in arr.shape) + _int(2, tensor_type(arr.dtype)) + _str(8, name)
            + _bytes(13, entry) + _int(14, EXTERNAL))


def attribute(name: str, value) -> bytes:
    """An AttributeProto: int, float, str or list of ints, as helper.make_attribute types them."""
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return _str(1, name) + _int(3, int(value)) + _int(20, 2)  # INT
    if isinstance(value, (float, np.floating)):
        return _str(1, name) + _varint(2 << 3 | 5) + struct.pack("<f", float(value)) + _int(20, 1)  # FLOAT
    if isinstance(value, str):
        return _str(1, name) + _bytes(4, value.encode("utf-8")) + _int(20, 3)  # STRING
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in value):
        return _str(1, name) + b"".join(_int(8, int(v)) for v in value) + _int(20, 7)  # INTS
    raise ValueError(f"attribute {name!r}: {type(value).__name__} is not written here")


def node(op_type: str, inputs: list[str], outputs: list[str], *, domain: str | None = None, **attrs) -> bytes:
    """A NodeProto (its attributes sorted by name, as helper.make_node writes them)."""
    return (b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs) + _str(4, op_type)
            + b"".join(_bytes(5, attribute(k, v)) for k, v in sorted(attrs.items()))
            + (_str(7, domain) if domain is not None else b""))


def value_info(name: str, elem_type: int, shape: list[int | str]) -> bytes:
    """A ValueInfoProto of a tensor; a str in ``shape`` names a dimension that varies."""
    dims = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor_t = _int(1, elem_type) + _bytes(2, dims)  # TypeProto.Tensor: elem_type, shape
    return _str(1, name) + _bytes(2, _bytes(1, tensor_t))


def model(nodes: list[bytes], name: str, inputs: list[bytes], outputs: list[bytes], initializers: list[bytes],
          opsets: list[tuple[str, int]], ir_version: int) -> bytes:
    """A ModelProto of one graph, serialized."""
    graph = (b"".join(_bytes(1, n) for n in nodes) + _str(2, name) + b"".join(_bytes(5, t) for t in initializers)
             + b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs))
    return (_int(1, ir_version) + _bytes(7, graph)
            + b"".join(_bytes(8, _str(1, domain) + _int(2, version)) for domain, version in opsets))
