"""Every message type of the pipeline and its JSON encoding: the wire contract.

Topic          key                  value
-------------  -------------------  ----------------------------------------------
requests       request id           :class:`Request`  (written by clients)
filtered       request id           :class:`Request`  (validated, normalised)
parts          "<id>#<part>"        :class:`Part`     (tokens, ready for the model)
results        request id           :class:`Result`   (one model output per part),
                                    or a control record (:class:`Expect`, ticks)
answers        request id           :class:`Answer`   (exactly one per request)
prompts        session or request   :class:`Prompt`   (chat: the message and its KB entries)
answer-chunks  request id           :class:`Chunk`    (chat: the reply as it is generated)
dead-letters   the original key     the original value; :class:`DeadLetterReason` in the headers

Values are JSON objects. Decoding never raises anything but
:class:`~pipeline.errors.DecodeError` (bad bytes, wrong shape) so a stage can
turn any bad record into an error answer and a dead-letter record.

Headers carry what a stage needs without decoding the value (see
:class:`Headers`): the deadline, a W3C trace context and one timestamp per hop.
Modules: ``headers`` (headers), ``values`` (the messages), ``control`` (control
records and dead-letter reasons), ``codec`` (the one msgspec codec they share: each message is a
``msgspec.Struct`` declared once, decoded and validated by a typed decoder).
"""

from pipeline.messages.chat import Chunk, Prompt, Reassembly
from pipeline.messages.codec import recover_request_id
from pipeline.messages.control import CONTROL_HEADER, DEAD_LETTER_PREFIX, Control, DeadLetterReason, Expect, Expiry
from pipeline.messages.deadline import fix_deadline, left_ms, now_ms, passed
from pipeline.messages.headers import (
    COST_PREFIX,
    DEADLINE_HEADER,
    HOP_PREFIX,
    REQUESTED_HOP,
    SCATTERED_COSTS,
    TRACE_HEADER,
    HeaderList,
    Headers,
    KafkaHeaders,
    RawHeaders,
    header_list,
    kafka_headers,
    new_traceparent,
)
from pipeline.messages.values import Answer, ErrorInfo, Part, Request, Result, part_key

__all__ = [
    "CONTROL_HEADER",
    "COST_PREFIX",
    "DEADLINE_HEADER",
    "DEAD_LETTER_PREFIX",
    "HOP_PREFIX",
    "REQUESTED_HOP",
    "SCATTERED_COSTS",
    "TRACE_HEADER",
    "Answer",
    "Chunk",
    "Control",
    "DeadLetterReason",
    "ErrorInfo",
    "Expect",
    "Expiry",
    "HeaderList",
    "Headers",
    "KafkaHeaders",
    "Part",
    "Prompt",
    "RawHeaders",
    "Reassembly",
    "Request",
    "Result",
    "fix_deadline",
    "header_list",
    "kafka_headers",
    "left_ms",
    "new_traceparent",
    "now_ms",
    "part_key",
    "passed",
    "recover_request_id",
]
