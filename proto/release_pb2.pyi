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

class ListReleasesRequest(_message.Message):
    __slots__ = ("model", "device", "current")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    device: str
    current: _containers.RepeatedCompositeFieldContainer[CurrentModel]
    def __init__(self, model: _Optional[str] = ..., device: _Optional[str] = ..., current: _Optional[_Iterable[_Union[CurrentModel, _Mapping]]] = ...) -> None: ...

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
