from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackRequest(_message.Message):
    __slots__ = ("model", "id", "text", "label")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    id: str
    text: str
    label: str
    def __init__(self, model: _Optional[str] = ..., id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("matched", "was_correct", "served_label", "version")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    WAS_CORRECT_FIELD_NUMBER: _ClassVar[int]
    SERVED_LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    matched: bool
    was_correct: bool
    served_label: str
    version: int
    def __init__(self, matched: _Optional[bool] = ..., was_correct: _Optional[bool] = ..., served_label: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ModelHealthRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelHealthResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...
