"""KServe v2 datatypes <-> numpy, and the BYTES wire encoding (4-byte little-endian length + bytes)."""

from __future__ import annotations

import struct

import numpy as np

from fedge.edge_runtime.common.errors import InvalidInput

NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
BYTES = "BYTES"
DATATYPES = frozenset([*NUMPY, BYTES])

# InferTensorContents field holding each datatype (FP16/BF16 have none: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def datatype_of(arr: np.ndarray) -> str:
    if arr.dtype == object or arr.dtype.kind in "SU":
        return BYTES
    for name, dt in NUMPY.items():
        if arr.dtype == dt:
            return name
    raise InvalidInput(f"no KServe v2 datatype for numpy dtype {arr.dtype}")


def deserialize_bytes(buf: bytes, count: int) -> np.ndarray:
    """Raw BYTES tensor -> object array of ``count`` bytes elements; malformed length prefixes are InvalidInput."""
    out = np.empty(count, dtype=object)
    offset, n = 0, len(buf)
    for i in range(count):
        if offset + 4 > n:
            raise InvalidInput(f"BYTES tensor truncated: element {i} has no 4-byte length prefix")
        (length,) = struct.unpack_from("<I", buf, offset)
        offset += 4
        if offset + length > n:
            raise InvalidInput(f"BYTES element {i} declares {length} bytes but only {n - offset} remain")
        out[i] = buf[offset : offset + length]
        offset += length
    if offset != n:
        raise InvalidInput(f"BYTES tensor has {n - offset} trailing bytes after {count} elements")
    return out


def serialize_bytes(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)
