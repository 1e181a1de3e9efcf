"""The SIP message model: parser, serializer, URIs and typed header values (stdlib only).

See docs/architecture.md, "The SIP message model", for the contract.
"""
from __future__ import annotations

from .errors import ParseError
from .grammar import quote, unquote
from .ids import MAGIC_COOKIE, new_tag
from .headers import COMPACT_FORMS, LIST_HEADERS, Headers, canonical_name
from .message import (
    REASONS,
    Message,
    Request,
    Response,
    make_response,
    parse,
    reason_phrase,
)
from .uri import URI, parse_uri
from .values import (
    Address,
    CSeq,
    Via,
    date_timestamp,
    format_auth,
    format_date,
    parse_address,
    parse_auth,
    parse_cseq,
    parse_date,
    parse_params,
    parse_via,
)

__all__ = [
    "Address", "COMPACT_FORMS", "CSeq", "Headers", "LIST_HEADERS", "MAGIC_COOKIE", "Message",
    "ParseError",
    "REASONS", "Request", "Response", "URI", "Via", "canonical_name", "date_timestamp",
    "format_auth", "format_date", "make_response", "parse", "parse_address", "parse_auth",
    "parse_cseq", "parse_date", "parse_params", "parse_uri", "parse_via", "quote",
    "reason_phrase", "unquote", "new_tag",
]
