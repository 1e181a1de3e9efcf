"""RFC 3261 §16.3-16.6 as functions of the request: loop and hop limits, Route
preprocessing, the target set's groups, the copy of a request for one target and the Via and
Record-Route we add to it. Nothing here keeps state between requests except the branch
counter (`BranchIds`) and two caches of our own header text."""
from __future__ import annotations

import functools
import itertools
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple

from reticulum.addresses import Destination, Flow, ListeningPoint, LocalAddresses, \
    advertised_host, hostport
from reticulum.dns import uri_transport
from reticulum.sip import MAGIC_COOKIE, Request, parse_address, parse_uri

#: RFC 5393: concurrent branches a request may fan out to in all, when it names no lower limit
MAX_BREADTH = 60
#: the Max-Forwards a forwarded request gets when it came without one (§16.6 step 3: 70 - 1)
DEFAULT_MAX_FORWARDS = 69
#: requests whose forwarded copies we record-route (§16.6 step 4), when outside a dialog
DIALOG_CREATING = frozenset(("INVITE", "SUBSCRIBE", "REFER"))
#: URI parameters that must match when URIs are compared (RFC 3261 §19.1.4)
URI_PARAMS_COMPARED = ("transport", "user", "ttl", "method", "maddr")
#: the Record-Route URI parameter that carries our route token (see policy.RouteTokens)
TOKEN_PARAM = "rtok"


# -- §16.3: loops and hop limits ------------------------------------------------------------


def forwards_exhausted(request: Request) -> bool:
    """§16.3 step 3: a Max-Forwards of zero (or less) ends the request here."""
    max_forwards = request.max_forwards
    return max_forwards is not None and max_forwards <= 0


def loop_hash(request: Request) -> str:
    """Ten hex digits over the fields §16.6 step 8 names. Only this process compares them (a
    request that comes back to us), so Python's own (salted) hash will do."""
    routes = requires = ()
    for key, _, _ in request.headers.entries():
        if key == "route":
            routes = tuple(request.get_all("Route"))
        elif key == "proxy-require":
            requires = tuple(request.get_all("Proxy-Require"))
    parts = (str(request.uri), request.from_.tag, request.to.tag, request.call_id,
             request.cseq.number, routes, requires)
    return "%010x" % (hash(parts) & 0xFFFFFFFFFF)


def is_loop(request: Request, addresses: LocalAddresses) -> bool:
    """§16.3 step 4: our own Via with this request's loop hash means it came back (a spiral,
    with a changed Request-URI, has another hash)."""
    vias = request.vias
    if len(vias) < 2:
        return False  # only the sender's own Via: it cannot have passed through us
    marker = None
    for via in vias:
        if not addresses.is_local_address(via.host, via.port):
            continue
        if marker is None:
            marker = MAGIC_COOKIE + loop_hash(request)
        if (via.branch or "").startswith(marker):
            return True
    return False


def max_breadth(request: Request) -> int:
    """The concurrent branches a request may still fan out to (RFC 5393): its Max-Breadth, at
    most MAX_BREADTH, which is also what a request without one gets."""
    value = request.get("Max-Breadth")
    if value is None:
        return MAX_BREADTH
    try:
        return min(int(value.strip()), MAX_BREADTH)
    except ValueError:
        return MAX_BREADTH


def share_breadth(group: list, breadth: int) -> Tuple[list, Sequence[str]]:
    """RFC 5393 §5.3: the concurrent branches of a group share the request's Max-Breadth (each
    gets at least 1, the sum stays within it); targets beyond it are left out. A spiral thus
    divides its breadth at every pass instead of multiplying requests. Returns the targets
    kept and the Max-Breadth of each."""
    if len(group) > breadth:
        group = group[:max(breadth, 0)]
    if not group:
        return group, ()
    base, extra = divmod(breadth, len(group))
    return group, ["%d" % (base + (i < extra)) for i in range(len(group))]


# -- §16.4: Route preprocessing -------------------------------------------------------------


def strip_own_routes(request: Request, addresses: LocalAddresses) -> List[str]:
    """§16.4: take our own entries off the Route set (and undo a strict router's rewrite of the
    Request-URI). Returns the route tokens those entries carried, for `RouteTokens` to check."""
    given = []
    uri = request.uri
    if "lr" in uri.params and request.routes and addresses.is_us(uri):
        # A strict router put our Record-Route URI in the Request-URI (§16.4).
        given.append(uri.params.get(TOKEN_PARAM))
        routes = request.get_all("Route")
        request.uri = parse_address(routes[-1]).uri
        if len(routes) > 1:
            request.set("Route", ", ".join(routes[:-1]))
        else:
            request.remove("Route")
    # RFC 5658 double Record-Route puts two of ours on top; take off every one of ours
    parsed = request.routes
    while parsed and addresses.is_us(parsed[0].uri):
        given.append(parsed[0].uri.params.get(TOKEN_PARAM))
        request.remove_first("Route")
        parsed = request.routes
    return [token for token in given if token]


def next_hop_uri(request: Request):
    """The URI the request goes to after us: its top Route, else its Request-URI."""
    routes = request.routes
    return routes[0].uri if routes else request.uri


# -- §16.5: the target set -------------------------------------------------------------------


def q_groups(bindings) -> list:
    """The bindings of an address-of-record as (Contact URI, binding) groups of equal q, in
    the order the location service gives (highest q first): each group is forked in parallel,
    the groups in turn."""
    groups: list = []
    last_q = None
    for binding in bindings:
        if binding.q != last_q:
            groups.append([])
            last_q = binding.q
        groups[-1].append((parse_uri(binding.contact), binding))
    return groups


def binding_for_contact(location: Any, uri, now: float):
    """The current binding whose Contact is `uri` (a request sent straight to a registered
    Contact, as in a dialog), or None."""
    find: Optional[Callable[[str, float], Any]] = getattr(location, "find_contact", None)
    if find is None:
        return None
    binding = find(str(uri), now)
    if binding is None and uri.params:
        # RFC 3261 §19.1.4: a parameter on one side only (RFC 5626 "ob" in a dialog's Contact,
        # as WebSocket phones send) does not make the URIs differ
        kept = {k: v for k, v in uri.params.items() if k in URI_PARAMS_COMPARED}
        if len(kept) != len(uri.params):
            binding = find(str(uri.copy(params=kept)), now)
    return binding


def use_flow(binding, contact) -> bool:
    """§16.5: requests go to the registered Contact, unless the registrar found it reachable
    only through the REGISTER's flow (RFC 5626 outbound, `.invalid`, NAT). A connection still
    open from the Contact's own host, for the Contact's transport, is reused (phones expect
    it); once it closes, the Contact is connected to anew."""
    if binding.flow_bound:
        return True
    flow = binding.flow
    if flow.transport == "udp" or not contact.is_ip():
        return False
    return contact.host == flow.remote[0] and uri_transport(contact) == flow.transport


# -- §16.6: the request for one target -------------------------------------------------------


def forwarded_max_forwards(max_forwards: Optional[int]) -> str:
    """§16.6 step 3: the Max-Forwards of a forwarded copy, from the request's own."""
    return str(max_forwards - 1 if max_forwards is not None else DEFAULT_MAX_FORWARDS)


def copy_for_target(request: Request, uri, binding) -> Request:
    """A copy of the request for one target with §16.6 steps 1-3, 5 and 6 applied (the
    binding's Path goes on top of the Route set); the steps that depend on the transport it
    leaves on come with `add_via` and `add_record_route`."""
    out = request.copy()
    out.uri = uri
    if binding is not None and binding.path:
        existing = out.get_all("Route")
        out.set("Route", ", ".join(list(binding.path) + existing))
    out.set("Max-Forwards", forwarded_max_forwards(request.max_forwards))
    return out


def outbound_point(addresses: LocalAddresses, dest: Destination) -> Optional[ListeningPoint]:
    """Our listening point for a message leaving for `dest` (a flow's own local address, or
    one of the target's address family), or None when we cannot send over its transport."""
    if isinstance(dest, Flow):
        return addresses.listening_point(dest.transport, dest.remote[0], dest.local)
    return addresses.listening_point(dest.transport, dest.host)


def add_via(out: Request, point: ListeningPoint, branch: str) -> None:
    """§16.6 step 8: our Via, for the transport the request leaves on."""
    out.add("Via", "SIP/2.0/%s %s;branch=%s" % (point.transport.upper(), _hostport(point),
                                               branch), first=True)


def add_record_route(out: Request, outbound: ListeningPoint,
                     inbound: Optional[ListeningPoint], token: str, secure: bool = False) -> None:
    """§16.6 step 4, with the dialog's token on each of our URIs (RFC 5658 double Record-Route
    when the two sides differ in transport or address)."""
    suffix = ";%s=%s>" % (TOKEN_PARAM, token)
    values = [_rr_value(outbound, secure) + suffix]
    if inbound is not None and (inbound.transport != outbound.transport
                                or inbound.host != outbound.host):
        values.append(_rr_value(inbound, secure) + suffix)
    for value in reversed(values):
        out.add("Record-Route", value, first=True)


def ack_branch(ack: Request) -> str:
    """The branch of our Via on a forwarded 2xx ACK: the same for every retransmission of it,
    as it is forwarded statelessly (§16.11)."""
    return "%s%016x" % (MAGIC_COOKIE, hash((ack.via.branch or ack.call_id, "ack"))
                        & 0xFFFFFFFFFFFFFFFF)


class BranchIds:
    """Our Via branches (§16.6 step 8): the magic cookie, the request's loop hash (so that
    `is_loop` knows it again), a per-process salt and a counter."""

    __slots__ = ("_counter", "_salt")

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._salt = os.urandom(4).hex()

    def __call__(self, request: Request) -> str:
        return "%s%s.%s%d" % (MAGIC_COOKIE, loop_hash(request), self._salt, next(self._counter))


@functools.lru_cache(maxsize=64)  # a listening point's text never changes
def _hostport(point: ListeningPoint) -> str:
    return hostport(advertised_host(point.host), point.port)


@functools.lru_cache(maxsize=128)
def _rr_value(point: ListeningPoint, secure: bool = False) -> str:
    """Our Record-Route name-addr for a listening point, without its closing ">" (the
    dialog's token goes last)."""
    if secure and point.transport in ("tls", "wss"):
        # §16.6 step 4: a sips: request is record-routed with sips: URIs
        params = "" if point.transport == "tls" else ";transport=%s" % point.transport
        return "<sips:%s%s;lr" % (_hostport(point), params)
    params = "" if point.transport == "udp" else ";transport=%s" % point.transport
    return "<sip:%s%s;lr" % (_hostport(point), params)
