"""Key layout of the state store: one sorted key space per partition.

Every key is ``<namespace byte> NUL <fields separated by NUL>``. Subject ids,
record ids, command ids and the like are ``Identifier``/``Slug`` strings,
which never contain NUL, so a subject's keys of one namespace share the prefix
``ns NUL subject NUL`` and no other subject's keys do. Times are 8-byte
big-endian milliseconds, so byte order is time order.

======  =====================================================  ========================
ns      key                                                     value
======  =====================================================  ========================
``h``   h / subject                                             ``SubjectHeader``
``r``   r / subject / system "/" record_id                      ``RecordState``
``c``   c / subject / command_id                                ``OutstandingCommand``
``x``   x / subject / command_id                                ``ClosedCommand``
``q``   q / subject / request_id / kind / item                  per-request items
``k``   k / subject / hold_id / record key                      empty (held records)
``e``   e / subject / be64(bucket) / event_id                   empty (seen events)
``n``   n / subject / be64(due) / kind / item                   empty (rules' due items)
``m``   m / subject / be64(due) / kind / item                   empty (housekeeping due)
``d``   d / be64(due) / subject                                 empty (timer: next wake)
``o``   o / subject / request_id                                open request (metrics)
``a``   a / subject / command_id                                outstanding command (metrics)
``w``   w / source                                              be64(watermark) (partition)
``v``   v / be64(cutoff) / subject / request_id                 empty (waits for watermarks)
``f``   f / be64(due) / subject / record key                    empty (deferred deletions)
======  =====================================================  ========================

``w`` and ``v`` belong to the partition, not to a subject: the watermark of each
publishing system as this partition has seen it, and the requests of the
partition's subjects whose answers wait for the watermarks to pass their
receipt, by receipt time (``agents.rules.cutoff``, docs/event-time.md). ``f``
belongs to the partition too: deletions deferred until the contract sources'
watermarks pass their due time, by that due time (``agents.rules.retention``).

A key without NUL is a subject id: the previous format kept one JSON value per
subject under that key (``agents.store.legacy``).
"""

from __future__ import annotations

SEP = b"\x00"
HEADER = b"h"
RECORD = b"r"
COMMAND = b"c"
CLOSED = b"x"
ITEM = b"q"
HELD = b"k"
SEEN = b"e"
DUE = b"n"
HOUSEKEEPING = b"m"
TIMER = b"d"
OPEN_REQUEST = b"o"
OUTSTANDING = b"a"
WATERMARK = b"w"
WAITING = b"v"
DEFERRED = b"f"

NAMESPACES = (
    HEADER,
    RECORD,
    COMMAND,
    CLOSED,
    ITEM,
    HELD,
    SEEN,
    DUE,
    HOUSEKEEPING,
    TIMER,
    OPEN_REQUEST,
    OUTSTANDING,
    WATERMARK,
    WAITING,
    DEFERRED,
)

# Kinds of due items (``n`` keys) and of request items (``q`` keys).
DUE_HEADER = "h"
DUE_RECORD = "r"
DUE_COMMAND = "c"
DUE_CLOSED = "x"


def be64(ms: int) -> bytes:
    return max(0, ms).to_bytes(8, "big")


def from_be64(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _s(text: str) -> bytes:
    return text.encode()


def end_of(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    return prefix + b"\xff"


def subject_prefix(ns: bytes, subject_id: str) -> bytes:
    return ns + SEP + _s(subject_id) + SEP


def header(subject_id: str) -> bytes:
    return HEADER + SEP + _s(subject_id)


def keyed(ns: bytes, subject_id: str, name: str) -> bytes:
    """An entry of ``subject_id`` in namespace ``ns`` (records, commands, closed, ...)."""
    return subject_prefix(ns, subject_id) + _s(name)


def name_of(ns: bytes, subject_id: str, key: bytes) -> str:
    return key[len(subject_prefix(ns, subject_id)) :].decode()


def item_prefix(subject_id: str, request_id: str, kind: str) -> bytes:
    return subject_prefix(ITEM, subject_id) + _s(request_id) + SEP + _s(kind) + SEP


def request_items_prefix(subject_id: str, request_id: str) -> bytes:
    return subject_prefix(ITEM, subject_id) + _s(request_id) + SEP


def held_prefix(subject_id: str, hold_id: str) -> bytes:
    return subject_prefix(HELD, subject_id) + _s(hold_id) + SEP


def seen(subject_id: str, bucket_ms: int, event_id: str) -> bytes:
    return seen_bucket_prefix(subject_id, bucket_ms) + _s(event_id)


def seen_bucket_prefix(subject_id: str, bucket_ms: int) -> bytes:
    return subject_prefix(SEEN, subject_id) + be64(bucket_ms) + SEP


def due(subject_id: str, ms: int, kind: str, item: str, ns: bytes = DUE) -> bytes:
    return subject_prefix(ns, subject_id) + be64(ms) + SEP + _s(kind) + SEP + _s(item)


def parse_due(subject_id: str, key: bytes) -> tuple[int, str, str]:
    """(due ms, kind, item) of a subject's ``n`` or ``m`` key."""
    rest = key[len(subject_prefix(key[:1], subject_id)) :]
    kind, item = rest[9:].split(SEP, 1)
    return from_be64(rest[:8]), kind.decode(), item.decode()


def timer(ms: int, subject_id: str) -> bytes:
    return TIMER + SEP + be64(ms) + SEP + _s(subject_id)


def parse_timer(key: bytes) -> tuple[int, str]:
    """(due ms, subject id) of a ``d`` key."""
    return from_be64(key[2:10]), key[11:].decode()


def watermark(source: str) -> bytes:
    return WATERMARK + SEP + _s(source)


def waiting(cutoff_ms: int, subject_id: str, request_id: str) -> bytes:
    return WAITING + SEP + be64(cutoff_ms) + SEP + _s(subject_id) + SEP + _s(request_id)


def parse_waiting(key: bytes) -> tuple[int, str, str]:
    """(cutoff ms, subject id, request id) of a ``v`` key."""
    subject_id, request_id = key[11:].split(SEP, 1)
    return from_be64(key[2:10]), subject_id.decode(), request_id.decode()


def deferred(due_ms: int, subject_id: str, record_key: str) -> bytes:
    return DEFERRED + SEP + be64(due_ms) + SEP + _s(subject_id) + SEP + _s(record_key)


def parse_deferred(key: bytes) -> tuple[int, str, str]:
    """(due ms, subject id, record key) of an ``f`` key."""
    subject_id, record_key = key[11:].split(SEP, 1)
    return from_be64(key[2:10]), subject_id.decode(), record_key.decode()


def subject_of(key: bytes) -> str | None:
    """The subject a key belongs to (None for a partition's watermark keys)."""
    if SEP not in key:
        return key.decode()  # previous format: the key is the subject id
    if key[:1] == TIMER:
        return parse_timer(key)[1]
    if key[:1] == WAITING:
        return parse_waiting(key)[1]
    if key[:1] == DEFERRED:
        return parse_deferred(key)[1]
    if key[:1] == WATERMARK:
        return None
    return key[2:].split(SEP, 1)[0].decode()


def is_legacy(key: bytes) -> bool:
    """A subject's whole state in the previous format (key = subject id)."""
    return SEP not in key
