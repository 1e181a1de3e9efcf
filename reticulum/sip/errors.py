"""The one exception the SIP parser raises."""
from __future__ import annotations


class ParseError(ValueError):
    """A message, header value or URI that does not follow the grammar.

    ``reason`` is a short phrase fit for the reason phrase of a 400 ("Bad CSeq",
    "Missing Call-ID", ...). ``status`` is the response code the message deserves (400, or
    505 for an unsupported SIP version, 413 for a message that is too large). ``partial`` is
    the request as far as it could be parsed, so that a response can still be built (it
    carries the Via, From, To, Call-ID and CSeq lines that were read); it is None for
    responses and for input that did not even have a request line.
    """

    def __init__(self, reason: str, status: int = 400, partial=None):
        ValueError.__init__(self, reason)
        self.reason = reason
        self.status = status
        self.partial = partial

    def __repr__(self) -> str:
        return "ParseError(%r, status=%d)" % (self.reason, self.status)
