"""Dead letters: messages the pipeline could not accept, kept with the reason.

The original bytes are kept as they arrived so that an operator can repair and
replay them; they can hold personal data, so the dead-letter topic has a short
retention (``streams.topics``) and the *reason* never quotes the payload.

Two kinds share the topic: input that could not be decoded (``reason_class``
says why, ``failure_class`` is null) and *parked* items, messages that decoded
but could not be processed or whose outputs could not be delivered, for a
reason that waiting will not heal (``failure_class`` says why).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas.base import Frozen, ShortText, UtcDatetime


class ReasonClass(StrEnum):
    """Why a message was dead-lettered; also the ``reason`` label of the metric."""

    BAD_FRAMING = "bad_framing"
    UNKNOWN_SCHEMA = "unknown_schema"
    TRUNCATED = "truncated"
    INVALID_AVRO = "invalid_avro"
    INVALID_MODEL = "invalid_model"
    UNEXPECTED_TYPE = "unexpected_type"
    OVERSIZE = "oversize"
    MISSING_KEY = "missing_key"
    KEY_MISMATCH = "key_mismatch"


class FailureClass(StrEnum):
    """Why a decoded message was parked: a failure that retrying cannot heal.

    The Avro enum has a default (``other``), so symbols can be added later
    without breaking readers of this version (ReasonClass has none, so it
    cannot grow: parked items use this field instead).
    """

    UNKNOWN_TOPIC = "unknown_topic"
    RECORD_TOO_LARGE = "record_too_large"
    NOT_AUTHORISED = "not_authorised"
    UNREADABLE_RECORD = "unreadable_record"
    UNENCODABLE_OUTPUT = "unencodable_output"
    STATE_UNREADABLE = "state_unreadable"
    STATE_NOT_STORED = "state_not_stored"
    PROCESSING_ERROR = "processing_error"
    OTHER = "other"


class DeadLetter(Frozen):
    """A message that could not be decoded or validated, as it arrived."""

    topic: str = Field(min_length=1, max_length=249)
    partition: int = Field(ge=-1)
    offset: int = Field(ge=-1)
    original_key: bytes | None = None
    # At most ``Settings.max_message_bytes`` of the original value, so that a
    # dead letter of an oversize message still fits on the dead-letter topic.
    original_value: bytes | None = None
    reason_class: ReasonClass
    reason: ShortText
    failed_at: UtcDatetime
    # Added in v2: the size of the original value before any truncation.
    original_value_size: int | None = Field(default=None, ge=0)
    # Added in v3: set for a parked item (it decoded, but could not be processed
    # or an output of its decision could not be delivered). ``reason_class`` is
    # then the closest of the decode classes (invalid_model if none is closer).
    failure_class: FailureClass | None = None
