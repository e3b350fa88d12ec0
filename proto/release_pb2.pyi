from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CurrentModel(_message.Message):
    __slots__ = ("model", "manifest_sha256", "local_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    LOCAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    manifest_sha256: str
    local_version: int
    def __init__(self, model: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., local_version: _Optional[int] = ...) -> None: ...

class HealthSummary(_message.Message):
    __slots__ = ("model", "manifest_sha256", "local_version", "predictions", "errors", "requests", "window", "class_counts", "confidence_counts", "confidence_sum", "entropy_sum", "length_counts", "tokens", "unknown_tokens", "truncated", "corrections", "labelled", "correct", "p99_latency_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    LOCAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CLASS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_SUM_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_SUM_FIELD_NUMBER: _ClassVar[int]
    LENGTH_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    P99_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    manifest_sha256: str
    local_version: int
    predictions: int
    errors: int
    requests: int
    window: int
    class_counts: _containers.RepeatedScalarFieldContainer[int]
    confidence_counts: _containers.RepeatedScalarFieldContainer[int]
    confidence_sum: float
    entropy_sum: float
    length_counts: _containers.RepeatedScalarFieldContainer[int]
    tokens: int
    unknown_tokens: int
    truncated: int
    corrections: int
    labelled: int
    correct: int
    p99_latency_s: float
    def __init__(self, model: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., local_version: _Optional[int] = ..., predictions: _Optional[int] = ..., errors: _Optional[int] = ..., requests: _Optional[int] = ..., window: _Optional[int] = ..., class_counts: _Optional[_Iterable[int]] = ..., confidence_counts: _Optional[_Iterable[int]] = ..., confidence_sum: _Optional[float] = ..., entropy_sum: _Optional[float] = ..., length_counts: _Optional[_Iterable[int]] = ..., tokens: _Optional[int] = ..., unknown_tokens: _Optional[int] = ..., truncated: _Optional[int] = ..., corrections: _Optional[int] = ..., labelled: _Optional[int] = ..., correct: _Optional[int] = ..., p99_latency_s: _Optional[float] = ...) -> None: ...

class ListReleasesRequest(_message.Message):
    __slots__ = ("model", "device", "current", "health")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    model: str
    device: str
    current: _containers.RepeatedCompositeFieldContainer[CurrentModel]
    health: _containers.RepeatedCompositeFieldContainer[HealthSummary]
    def __init__(self, model: _Optional[str] = ..., device: _Optional[str] = ..., current: _Optional[_Iterable[_Union[CurrentModel, _Mapping]]] = ..., health: _Optional[_Iterable[_Union[HealthSummary, _Mapping]]] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("model", "version", "manifest_sha256", "archive_bytes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    manifest_sha256: str
    archive_bytes: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., manifest_sha256: _Optional[str] = ..., archive_bytes: _Optional[int] = ...) -> None: ...

class ListReleasesResponse(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[Release]
    def __init__(self, releases: _Optional[_Iterable[_Union[Release, _Mapping]]] = ...) -> None: ...

class FetchReleaseRequest(_message.Message):
    __slots__ = ("model", "version", "device", "offset", "max_chunk_bytes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    device: str
    offset: int
    max_chunk_bytes: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., device: _Optional[str] = ..., offset: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class ReleaseChunk(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...
