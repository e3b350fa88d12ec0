"""What a loaded model looks like to clients: its Open Inference Protocol metadata and its Triton-style model
configuration (what Triton's own example clients read to learn ``max_batch_size`` and the input layout)."""

from __future__ import annotations

from fedge.edge_runtime.common.datatypes import BYTES
from fedge.edge_runtime.serving.backends import GPU_BACKENDS
from fedge.edge_runtime.serving.batcher import QueuePolicy
from fedge.edge_runtime.serving.model import LoadedModel
from fedge.proto import grpc_service_pb2 as pb


def _queue_policy(q: QueuePolicy) -> pb.ModelQueuePolicy:
    return pb.ModelQueuePolicy(
        max_queue_size=q.max_queue_size,
        default_timeout_microseconds=q.timeout_us,
        allow_timeout_override=q.allow_timeout_override,
    )


def platform(m: LoadedModel) -> str:
    return "tensorrt_plan" if m.backend.name == "tensorrt" else "onnx_onnxv1"


def _properties(m: LoadedModel) -> dict[str, str]:
    return {
        "backend": m.backend.name,
        "backend_reason": m.backend.reason,
        "model_file": m.backend.model_file,
        "task": m.manifest.task,
        "max_batch_size": str(m.max_batch_size),
        "labels": ",".join(m.manifest.labels),
    }


def metadata(m: LoadedModel) -> pb.ModelMetadataResponse:
    resp = pb.ModelMetadataResponse(name=m.name, versions=[str(m.version)], platform=platform(m))
    for d in m.inputs:
        resp.inputs.add(name=d.name, datatype=d.datatype, shape=list(d.shape))
    for d in m.outputs:
        resp.outputs.add(name=d.name, datatype=d.datatype, shape=list(d.shape))
    resp.properties.update(_properties(m))
    return resp


def _data_type(datatype: str) -> int:
    return pb.DataType.Value("TYPE_STRING" if datatype == BYTES else f"TYPE_{datatype}")


def config(m: LoadedModel) -> pb.ModelConfig:
    """Triton's conventions: ``dims`` leave out the batch dimension (max_batch_size > 0); image inputs (rank 3
    after the batch dimension, as every fedge vision model is exported from PyTorch) are NCHW."""
    gpu = m.backend.name in GPU_BACKENDS
    cfg = pb.ModelConfig(
        name=m.name,
        platform=platform(m),
        backend=m.backend.name.split("-")[0],
        max_batch_size=m.max_batch_size,
        default_model_filename=m.backend.model_file,
    )
    for d in m.inputs:
        image = len(d.shape) == 4 and d.datatype != BYTES
        cfg.input.add(
            name=d.name,
            data_type=_data_type(d.datatype),
            dims=list(d.shape[1:]),
            format=pb.ModelInput.FORMAT_NCHW if image else pb.ModelInput.FORMAT_NONE,
        )
    for d in m.outputs:
        cfg.output.add(name=d.name, data_type=_data_type(d.datatype), dims=list(d.shape[1:]))
    cfg.instance_group.add(
        name=m.name,
        count=m.batching.instances,
        kind=pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU,
        gpus=[0] if gpu else [],
    )
    if m.batcher is not None:
        cfg.dynamic_batching.max_queue_delay_microseconds = m.batching.max_queue_delay_us
        if m.batching.queue != QueuePolicy():
            cfg.dynamic_batching.default_queue_policy.CopyFrom(_queue_policy(m.batching.queue))
        cfg.dynamic_batching.priority_levels = m.batching.priority_levels
        cfg.dynamic_batching.default_priority_level = m.batching.default_priority_level
        for level, policy in m.batching.priority_queue_policy:
            cfg.dynamic_batching.priority_queue_policy[level].CopyFrom(_queue_policy(policy))
    cfg.response_cache.enable = m.batching.response_cache
    for key, value in _properties(m).items():
        cfg.parameters[key].string_value = value
    return cfg
