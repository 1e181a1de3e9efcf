"""RFC 3261 §16.7: what goes back to the caller. The best of a fork's final responses, the
challenges of every branch in one answer, our Via off, our Record-Route tokens rewritten for
the caller's side, and the answer when no target could be tried."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from reticulum.addresses import LocalAddresses
from reticulum.dns import FAILED, INSECURE, NOT_FOUND
from reticulum.proxy.policy import RouteTokens, hop_key
from reticulum.proxy.routing import TOKEN_PARAM
from reticulum.sip import Request, Response, make_response


def upstream(response: Response) -> Response:
    """The response to send towards the caller: our own Via taken off (§16.7 step 3)."""
    out = response.copy()
    out.remove_first("Via")
    return out


def best_response(request: Request, responses: Sequence[Response], to_tag: str) -> Response:
    """§16.7 step 6: the best of the final responses (a 6xx wins, then the lowest class, a 408
    last in its class; none at all is a 408), challenges aggregated, a 503 turned into a 500
    (the caller must not take it as this proxy's own overload), our Via off."""
    if not responses:
        best = make_response(request, 408, to_tag=to_tag)
    else:
        sixes = [r for r in responses if r.status >= 600]
        pool = sixes or responses
        best = min(pool, key=lambda r: (r.status // 100, r.status == 408))
    if best.status == 503:
        best = make_response(request, 500, to_tag=to_tag)
    elif best.status in (401, 407):
        best = aggregate_challenges(request, best, responses)
    if best.vias and len(best.vias) > len(request.vias):
        best = upstream(best)
    return best


def aggregate_challenges(request: Request, best: Response,
                         responses: Sequence[Response]) -> Response:
    """§16.7 step 7: every branch's WWW-/Proxy-Authenticate in the one 401/407 sent back."""
    merged = upstream(best) if len(best.vias) > len(request.vias) else best.copy()
    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
        values: List[str] = []
        for response in responses:
            if response.status in (401, 407):
                values.extend(response.get_all(name))
        if values:
            merged.remove(name)
            for value in values:
                merged.add(name, value)
    return merged


def unroutable_status(request: Request, hop: Any) -> Tuple[int, str]:
    """The status when no target of a hop could be tried. A name that does not exist is a 404
    (definitive, RFC 3261 §21.4.5: a 503 would make RFC 3263 clients retry elsewhere and is
    turned into a 500 by every proxy upstream, §16.7); DNS that did not answer is a 504 (an
    external server failed us, §21.5.5)."""
    problem = getattr(hop, "problem", None)
    if problem == INSECURE or request.uri.scheme == "sips" and problem is None:
        return 480, "No secure path to the target"
    if problem == NOT_FOUND:
        return 404, "Domain Not Found"
    if problem == FAILED:
        return 504, "DNS Lookup Failed"
    return 503, "Unresolvable destination"


class RecordRouteRewriter:
    """§16.7 step 4: our Record-Route entries in a response on its way to the caller get the
    token for the hop the caller's requests take after us: the nearest Record-Route above ours
    (towards the callee), else the callee's Contact. The caller builds its route set from
    these. A call's 18x, 2xx and their retransmissions carry the same entries: each set is
    rewritten once (a bounded cache)."""

    __slots__ = ("tokens", "addresses", "_rebound")

    LIMIT = 4096

    def __init__(self, tokens: RouteTokens, addresses: LocalAddresses):
        self.tokens = tokens
        self.addresses = addresses
        self._rebound: Dict[tuple, str] = {}  # (Call-ID, Contact, Record-Route) -> rewritten

    def __call__(self, response: Response) -> Response:
        values = response.get_all("Record-Route")
        if not values or not any(TOKEN_PARAM in value for value in values):
            return response
        key = (response.call_id, response.get("Contact"), tuple(values))
        rebound = self._rebound.get(key)
        if rebound is None:
            rebound = self._rebind(response, values)
            if len(self._rebound) >= self.LIMIT:
                self._rebound.clear()
            self._rebound[key] = rebound
        response.set("Record-Route", rebound)
        return response

    def _rebind(self, response: Response, values: Sequence[str]) -> str:
        contacts = response.contacts
        beyond = contacts[0].uri if contacts and not contacts[0].star else None
        call_id = response.call_id
        out = []
        for value, route in zip(values, response.record_routes):
            uri = route.uri
            old = uri.params.get(TOKEN_PARAM)
            if old and self.addresses.is_us(uri):
                new = self.tokens.token(call_id, hop_key(beyond))
                value = value.replace("%s=%s" % (TOKEN_PARAM, old), "%s=%s" % (TOKEN_PARAM, new))
            else:
                beyond = uri
            out.append(value)
        return ", ".join(out)
