"""One root error for the whole pipeline.

Two families hang off it:

* request errors (:class:`RequestError`) are about one bad request. They carry
  a stable ``code`` that ends up in the error answer the client receives, and
  never stop a stage: the runner turns them into an error answer plus a
  dead-letter record holding the original bytes.
* infrastructure errors (everything else) mean the process cannot do its job
  (broker gone, model missing, bad settings). They propagate, the process
  exits non-zero and whatever supervises it restarts it.

Every error says where it happened (``topic[partition]@offset`` or a request
id) and why, so a log line alone is enough to find the record.
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """Root of every error this package raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        where: str | None = None,
    ) -> None:
        self.message = message
        self.request_id = request_id
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        context = [c for c in (self.where, f"request {self.request_id}" if self.request_id else None) if c]
        return f"{self.message} ({', '.join(context)})" if context else self.message

    def at(self, where: str) -> PipelineError:
        """Return this error with ``where`` filled in (``topic[partition]@offset``)."""
        if self.where is None:
            self.where = where
            self.args = (self._render(),)
        return self


# -- request errors: one bad request, answered with an error and dead-lettered --


class RequestError(PipelineError):
    """A single request cannot be served; the client gets an answer with ``code``."""

    code: ClassVar[str] = "invalid_request"


class DecodeError(RequestError):
    """Bytes that are not a valid message of the expected type."""

    code = "invalid_request"


class InvalidRequestError(RequestError):
    """A well-formed message whose content breaks the request contract."""

    code = "invalid_request"


class TooLargeError(RequestError):
    """A request over the configured size limits."""

    code = "too_large"


class DeadlineExceededError(RequestError):
    """A request whose deadline passed before it could be answered."""

    code = "deadline_exceeded"


class ModelError(RequestError):
    """The model failed on this request's input (not on the whole batch's setup)."""

    code = "model_error"


# -- infrastructure errors: the process cannot go on ------------------------------


class ConfigError(PipelineError):
    """Settings, topic declarations or files that make no sense together."""


class BrokerError(PipelineError):
    """The Kafka broker is unreachable or refused an operation we cannot skip."""


class AuthenticationError(BrokerError):
    """The cluster refused who we said we are (SASL), or we could not agree on TLS."""


class AuthorizationError(BrokerError):
    """The cluster knows who we are and an ACL does not allow what we asked."""


class ProviderError(PipelineError):
    """A requested ONNX Runtime execution provider is not available here."""


class ExportError(PipelineError):
    """Exporting or verifying an ONNX model failed."""


ERROR_CODES: tuple[str, ...] = (
    "invalid_request",
    "too_large",
    "deadline_exceeded",
    "model_error",
    "partial",
)
"""Every code an error answer can carry; clients may rely on this list."""
