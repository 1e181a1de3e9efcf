"""Which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3, RFC 2543 fallback), and
which transactions a transport error concerns.

Server side (§17.2.3): the top Via's branch, its sent-by and the method (an ACK matches the
INVITE). A request whose branch lacks the magic cookie comes from an RFC 2543 element and is
matched on Request-URI, From tag, Call-ID, CSeq number, top Via and method instead; the To tag
is compared separately (`legacy_to_tag_matches`) because an ACK carries the tag of the
response rather than the request's.

Client side (§17.1.3): the top Via's branch (ours) and the CSeq method; the layer keys its
client tables by branch (CANCEL in a table of its own, it shares the INVITE's branch) and
compares the method (`TransactionLayer.handle_response`, on every response's path).
"""
from __future__ import annotations

from typing import Optional, Tuple

from reticulum.addresses import Destination, Flow
from reticulum.sip import MAGIC_COOKIE, Request

__all__ = ["server_key", "legacy_to_tag_matches", "Address", "address_of", "same_destination"]

#: (transport, host, port) of a destination: what a transport error is matched on
Address = Tuple[str, str, int]


def server_key(request: Request, method: str) -> Tuple[str, bool]:
    """The server transaction key of `request` for `method`, and whether it is RFC 3261 style."""
    via = request.via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        port = via.port
        return (
            "%s %s:%s %s" % (branch, via.host.lower(), "" if port is None else port, method),
            True,
        )
    return (
        "2543 %s %s %s %d %s %s"
        % (
            request.uri,
            request.from_.tag or "",
            request.call_id,
            request.cseq.number,
            method,
            via,
        ),
        False,
    )


def legacy_to_tag_matches(request: Request, invite: bool, to_tag: Optional[str],
                          response_to_tag: Optional[str]) -> bool:
    """RFC 2543 matching (§17.2.3): the To tag of a retransmission equals the request's
    (`to_tag`); an ACK's equals the tag of the response we sent (`response_to_tag`)."""
    tag = request.to.tag
    if invite and request.method == "ACK":
        return tag == response_to_tag or (response_to_tag is None and tag == to_tag)
    return tag == to_tag


def address_of(dest: Destination) -> Address:
    """(transport, host, port) of a Flow (its remote end) or a Target."""
    if isinstance(dest, Flow):
        host, port = dest.remote
        return (dest.transport.lower(), host, port)
    return (dest.transport.lower(), dest.host, dest.port)


def same_destination(a: Destination, b: Destination) -> bool:
    """Does a transport error reported for `b` concern a transaction sending to `a`?

    Equal destinations match. A Target also matches a flow to its address; two flows must be
    the same connection."""
    if a is b or a == b:
        return True
    if isinstance(a, Flow) and isinstance(b, Flow):
        return False  # two flows that are not equal: different connections
    return address_of(a) == address_of(b)
