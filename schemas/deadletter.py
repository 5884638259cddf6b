"""Dead letters: messages the pipeline could not accept, kept with the reason.

The original bytes are kept as they arrived so that an operator can repair and
replay them; they can hold personal data, so the dead-letter topic has a short
retention (``streams.topics``) and the *reason* never quotes the payload.
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
