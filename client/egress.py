"""The customer's egress audit: a ClientApp mod that records the *shape* of everything leaving the premises
(record names, array shapes and dtypes, scalar metric names and types, the total bytes; never values of
arrays), appended as
JSON lines to the file named by the node config's ``audit-log`` (``fedge client start --audit-log FILE``).
It sits outermost, so it sees exactly what Flower sends, after SecAgg+ masking."""

from __future__ import annotations

import json
import time

from flwr.app import Context, Message


def describe(msg: Message) -> dict:
    if msg.has_error():
        return {"error": (msg.error.reason or "")[:500]}
    c = msg.content
    arrays = {name: {k: _array(a) for k, a in rec.items()} for name, rec in c.array_records.items()}
    payload = sum(_payload(v) for rec in c.config_records.values() for v in rec.values())  # SecAgg+'s masked arrays
    return {
        "arrays": arrays,
        "bytes": payload + sum(a["bytes"] for rec in arrays.values() for a in rec.values()),
        "metrics": {name: {k: type(v).__name__ for k, v in rec.items()} for name, rec in c.metric_records.items()},
        "configs": {name: {k: _kind(v) for k, v in rec.items()} for name, rec in c.config_records.items()},
    }


def _array(a) -> dict:
    arr = a.numpy()  # legacy (Parameters-based) records carry serialized arrays without shape metadata
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": len(a.data)}


def _payload(value) -> int:
    """Bytes carried as bytes values (SecAgg+ sends the masked update as a list of serialized arrays)."""
    if isinstance(value, bytes):
        return len(value)
    return sum(len(v) for v in value if isinstance(v, bytes)) if isinstance(value, list) else 0


def _kind(value) -> str:
    if isinstance(value, list):
        inner = sorted({type(v).__name__ for v in value})
        return f"list[{'|'.join(inner)}]"
    return type(value).__name__


def egress_audit(msg: Message, context: Context, call_next) -> Message:
    reply = call_next(msg, context)
    path = str(context.node_config.get("audit-log", ""))
    if path:
        entry = {
            "time": time.time(),
            "type": msg.metadata.message_type,
            "group": msg.metadata.group_id,
            **describe(reply),
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    return reply
