"""The stateful proxy of RFC 3261 §16, with the registrar and digest authentication in front.

`Proxy` is the transaction user for every server and client transaction and the conductor of
the package's rooms: for each request it validates (§16.3, `routing`), processes Route
(§16.4, `routing`), decides who may do what (`policy`), finds the target set (§16.5, through
the location service), forwards (§16.6, `routing`) and sends the caller exactly one final
response chosen as §16.7 says (`selection`); one request and its targets are the state
machines of `context`. CANCEL (§16.10), Timer C (§16.8) and hop-by-hop ACK come with it.

No socket, no reactor and no file here: everything the proxy uses is handed to it (see
`reticulum.service.build_core`); messages leave through `send` (statelessly) or the transaction
layer, time comes from the injected clock.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from twisted.logger import Logger

from reticulum import events
from reticulum.addresses import Destination, Flow, LocalAddresses, hostport, is_ip, \
    response_destination, via_destination
from reticulum.dns import Resolution
from reticulum.proxy.context import (BRANCH_TABLE, CONTEXT_TABLE, Branch, ProxyContext,
                                     UnexpectedEvent, describe, report)
from reticulum.proxy.policy import (ALLOW, ALLOWED_METHODS, KNOWN_METHODS, SUPPORTED_OPTIONS,
                                    Refusal, RelayPolicy, RouteTokens, hop_key)
from reticulum.proxy.routing import (MAX_BREADTH, TOKEN_PARAM, BranchIds, ack_branch,
                                     add_record_route, add_via, binding_for_contact,
                                     forwarded_max_forwards, forwards_exhausted, is_loop,
                                     loop_hash, max_breadth, outbound_point, q_groups,
                                     strip_own_routes, use_flow)
from reticulum.proxy.selection import RecordRouteRewriter, unroutable_status, upstream
from reticulum.sip import Request, Response, make_response, new_tag, parse_uri

__all__ = [
    "ALLOW", "ALLOWED_METHODS", "BRANCH_TABLE", "CONTEXT_TABLE", "KNOWN_METHODS", "MAX_BREADTH",
    "SUPPORTED_OPTIONS", "TOKEN_PARAM", "Branch", "Proxy", "ProxyContext", "RouteTokens",
    "UnexpectedEvent", "describe", "hop_key", "loop_hash", "max_breadth",
]


class Proxy:
    """Decides what happens to every request and response the core has parsed."""

    log = Logger()

    def __init__(self, config: Any, clock: Any, transactions: Any, location: Any, dialogs: Any,
                 resolver: Any, addresses: LocalAddresses, registrar: Any, auth: Any,
                 tokens: RouteTokens, send: Callable[[Any, Destination], bool],
                 alive: Callable[[Flow], bool], accounts: Any, cluster: Any = None):
        self.config = config
        self.clock = clock
        self.transactions = transactions
        self.location = location
        self.dialogs = dialogs
        self.resolver = resolver
        self.addresses = addresses
        self.registrar = registrar
        self.auth = auth  # None: nobody is challenged (a closed lab, a benchmark)
        self.tokens = tokens
        self.send = send  # (message, Flow or Target) -> False when it could not leave
        self.alive = alive  # is this flow (a connection) still open?
        self.accounts = accounts
        self.policy = RelayPolicy(addresses, auth, tokens, cluster, self._binding_for_contact)
        self.rebind_route_tokens = RecordRouteRewriter(tokens, addresses)
        self.contexts: Dict[Any, ProxyContext] = {}  # server transaction -> its context
        self.new_branch = BranchIds()
        outbound = getattr(getattr(config, "proxy", None), "outbound_proxy", None)
        self.outbound_proxy = parse_uri(outbound) if outbound else None

    # -- requests ------------------------------------------------------------------------------

    def handle_request(self, request: Request, flow: Flow) -> None:
        if self.transactions.handle_request(request) is True:
            return  # a retransmission, or the ACK of a non-2xx final response
        method = request.method
        if method == "ACK":
            if self.tokens.is_stateless_tag(request.to.tag):
                return  # the ACK for an answer we sent without a transaction (§16.11)
            self._forward_ack(request, flow)
            return
        dest = response_destination(request, flow)
        if method == "CANCEL":
            try:
                self._handle_cancel(request, dest)
            except UnexpectedEvent as error:
                report(error)
            return
        # No transaction yet: what is refused or challenged is answered once, statelessly,
        # so that a spoofed source gets one datagram per request (RFC 3261 §16.11).
        # `ProxyContext.begin` makes the server transaction once the request is accepted.
        context = ProxyContext(self, request, flow, dest)
        try:
            self._route(context)
        except UnexpectedEvent as error:
            report(error)
        except Exception:
            self.log.failure("Failed to route {method} {call_id}", method=method,
                             call_id=request.call_id)
            if not context.final_sent and not context.branches:
                context.respond(500)

    def refuse(self, ctx: ProxyContext, status: int, reason: Optional[str], rule: str) -> None:
        """Answer `status` and log the rule that refused the request (once per request)."""
        request = ctx.request
        self.log.info("Refused {method} {call_id} from {peer} with {status}: {rule}",
                      method=request.method, call_id=request.call_id, peer=_peer(ctx.flow),
                      status=status, rule=rule)
        if events.listening:
            events.emit("refused", request=request, flow=ctx.flow, status=status, rule=rule)
        ctx.respond(status, reason)

    def _refused(self, ctx: ProxyContext, refusal: Refusal) -> None:
        if refusal.response is not None:
            ctx.send_final(refusal.response)  # a challenge
        else:
            self.refuse(ctx, refusal.status, refusal.reason, refusal.rule)

    def _route(self, ctx: ProxyContext) -> None:
        if not self._validate(ctx):
            return
        request = ctx.request
        # §16.4 route information preprocessing
        dialog_token = self.policy.dialog_token(request, strip_own_routes(request, self.addresses))
        uri = request.uri
        routes = request.routes
        to_us = not routes and self.addresses.is_us(uri)
        if to_us and not uri.user or request.method == "REGISTER" and not routes:
            self._answer_locally(ctx, to_us)
            return
        refusal = self.policy.authorize(request, ctx.flow, dialog_token)
        if refusal is not None:
            self._refused(ctx, refusal)
            return
        if request.to.tag is not None:
            self.dialogs.in_dialog_request(request)
        targets = self._target_set(ctx, routes)
        if targets is None:
            return
        ctx.targets = targets
        ctx.begin()
        ctx.start()

    def _validate(self, ctx: ProxyContext) -> bool:
        """§16.3: a request that may not be forwarded is answered here (False)."""
        request = ctx.request
        uri = request.uri
        if uri.scheme not in ("sip", "sips"):
            ctx.respond(416)
            return False
        if forwards_exhausted(request):
            if request.method == "OPTIONS" and not request.routes and self.addresses.is_us(uri) \
                    and not uri.user:
                ctx.answer_options()
            else:
                self.refuse(ctx, 483, None, "Max-Forwards exhausted")
            return False
        if is_loop(request, self.addresses):
            self.refuse(ctx, 482, None, "loop: our own Via with this request's hash")
            return False
        unsupported = [option for option in request.get_all("Proxy-Require")
                       if option.strip().lower() not in SUPPORTED_OPTIONS]
        if unsupported:
            ctx.respond(420, headers=[("Unsupported", ", ".join(unsupported))])
            return False
        return True

    def _answer_locally(self, ctx: ProxyContext, to_us: bool) -> None:
        """Requests addressed to the server itself (§16.5 "the proxy is the target")."""
        method = ctx.request.method
        if method == "REGISTER":
            self._register(ctx, to_us)
        elif method == "OPTIONS":
            ctx.answer_options()
        elif method in KNOWN_METHODS:
            ctx.respond(405, headers=[("Allow", ALLOW)])
        else:
            ctx.respond(501)

    def _register(self, ctx: ProxyContext, to_us: bool) -> None:
        request = ctx.request
        if not to_us:
            self.refuse(ctx, 403, "Not a domain served here",
                        "REGISTER for a domain not served here")
            return
        if not self.location.writable:  # the shared store is out of reach
            ctx.respond(503, headers=[("Retry-After", str(self.location.retry_after))])
            return
        user, refusal = self.policy.authorize_register(request, ctx.flow)
        if refusal is not None:
            self._refused(ctx, refusal)
            return
        ctx.begin()  # a retransmission must get this answer, not a second registration
        response = self.registrar.handle(request, ctx.flow, authenticated_user=user)
        if response.status >= 300:
            self.log.info("Refused REGISTER {call_id} from {peer} with {status}: {rule}",
                          call_id=request.call_id, peer=_peer(ctx.flow),
                          status=response.status, rule=response.reason)
        ctx.send_final(response)

    def _target_set(self, ctx: ProxyContext, routes: Sequence) -> Optional[list]:
        """§16.5: one list of (uri, binding) per q-value group, tried in order."""
        request = ctx.request
        uri = request.uri
        if routes:
            return [[(uri, None)]]
        domain = self.addresses.local_domain(uri)
        if domain is None:
            return [[(uri, self._binding_for_contact(uri))]]
        aor = self.policy.canonical(uri, domain).aor()
        bindings = self.location.lookup(aor, self.clock.seconds())
        if bindings:
            return q_groups(bindings)
        binding = self._binding_for_contact(uri)
        if binding is not None:
            return [[(uri, binding)]]
        if self.accounts.exists(uri.user or "") or request.to.tag is not None:
            self.refuse(ctx, 480, None, "%s has no registered contact" % aor)
        else:
            self.refuse(ctx, 404, None, "no such user %s" % aor)
        return None

    def _binding_for_contact(self, uri: Any) -> Any:
        return binding_for_contact(self.location, uri, self.clock.seconds())

    # -- forwarding ------------------------------------------------------------------------

    def next_hop(self, request: Request, binding: Any, secure: bool = False) -> Any:
        """Where a forwarded request goes (§16.6 steps 6-7, RFC 5626 flows): a flow, or a
        `Resolution` (the targets in failover order, maybe still pending DNS). A sips:
        Request-URI (or `secure`: the request as it reached us had one) leaves only over
        TLS/WSS, never in clear text."""
        sips = secure or request.uri.scheme == "sips"
        flow = None
        if binding is not None and binding.flow is not None and not binding.path:
            flow = binding.flow
            if not self.alive(flow) or (sips and flow.transport not in ("tls", "wss")):
                flow = None
            elif use_flow(binding, request.uri):
                return flow
        routes = request.routes
        uri = routes[0].uri if routes else request.uri
        hop = self.locate(uri, binding, sips)
        if flow is None or routes:
            return hop
        # a Contact we cannot resolve is reached where its REGISTER came from
        if hop.done:
            return hop if hop.targets else flow
        fallback = Resolution(hop.name)
        hop.wait(lambda found: fallback.settle(found.targets or [flow], None, found.detail))
        return fallback

    def locate(self, uri: Any, binding: Any = None, secure: bool = False) -> Resolution:
        """RFC 3263: where the next hop's URI leads, in failover order (maybe still pending:
        see `Resolution.wait`). With `[proxy] outbound_proxy`, a hop to a domain name not
        served here (nor in `[dns.static]`) goes to that proxy instead."""
        outbound = self.outbound_proxy
        if outbound is not None and binding is None and not is_ip(uri.host) \
                and uri.host not in self.resolver.static and not self.addresses.is_us(uri):
            uri = outbound
        return self.resolver.locate(uri, secure)

    def stamp(self, ctx: ProxyContext, out: Request, dest: Destination,
              keep: bool = False) -> Tuple[Optional[Request], Optional[str]]:
        """§16.6 steps 4 and 8 for one destination: Record-Route and our Via for the transport
        it leaves on (on a copy when `keep`: the failover targets need the original).
        Returns (request, branch), or (None, None) when we cannot send over that transport."""
        request = ctx.request
        outbound = outbound_point(self.addresses, dest)
        if outbound is None:
            return None, None
        if keep:
            out = out.copy()
        if ctx.record_routes():
            flow = ctx.flow
            inbound = self.addresses.listening_point(flow.transport, flow.remote[0], flow.local)
            add_record_route(out, outbound, inbound, ctx.route_token(),
                             request.uri.scheme == "sips")
        branch = self.new_branch(request)
        add_via(out, outbound, branch)
        return out, branch

    def unroutable(self, ctx: ProxyContext, hop: Any) -> Response:
        """The answer when no target of a hop could be tried (`selection.unroutable_status`),
        with a Warning that says which name and why."""
        request = ctx.request
        name = getattr(hop, "name", "")
        detail = getattr(hop, "detail", "") or "no usable target"
        status, reason = unroutable_status(request, hop)
        self.log.info("No route for {method} {call_id} to {name}: {detail} ({status})",
                      method=request.method, call_id=request.call_id, name=name,
                      detail=detail, status=status)
        response = make_response(request, status, reason, to_tag=ctx.to_tag)
        if name:
            text = ("%s: %s" % (name, detail)).replace("\\", "").replace('"', "'")
            response.add("Warning", '399 %s "%s"' % (self.config.domains[0], text[:200]))
        return response

    def _forward_ack(self, ack: Request, flow: Flow) -> None:
        """ACK for a 2xx is end to end: forwarded statelessly along the route set (§16.11)."""
        max_forwards = ack.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            return
        dialog_token = self.policy.dialog_token(ack, strip_own_routes(ack, self.addresses))
        routes = ack.routes
        if not routes and self.addresses.is_us(ack.uri) and not ack.uri.user:
            return
        if not self.policy.ack_may_pass(ack, dialog_token):
            self.log.info("Dropping ACK {call_id} from {peer}: in-dialog request without a "
                          "valid route token, next hop foreign", call_id=ack.call_id,
                          peer=_peer(flow))
            return
        binding = None
        if not routes:
            if self.addresses.is_us(ack.uri):
                found = self.location.lookup(self.policy.canonical(ack.uri).aor(),
                                             self.clock.seconds())
                binding = found[0] if found else None
            else:
                binding = self._binding_for_contact(ack.uri)
        out = ack.copy()
        out.set("Max-Forwards", forwarded_max_forwards(max_forwards))
        hop = self.next_hop(out, binding)
        if isinstance(hop, Resolution):
            hop.wait(lambda resolved: self._send_ack(out, ack, resolved.targets))
        else:
            self._send_ack(out, ack, [hop])

    def _send_ack(self, out: Request, ack: Request, dests: Sequence[Destination]) -> None:
        for dest in dests:
            point = outbound_point(self.addresses, dest)
            if point is None:
                continue
            add_via(out, point, ack_branch(ack))
            self.send(out, dest)
            return
        self.log.info("Dropping ACK {call_id}: no next hop", call_id=ack.call_id)

    # -- CANCEL ----------------------------------------------------------------------------

    def _handle_cancel(self, cancel: Request, dest: Destination) -> None:
        """§16.10: answer the CANCEL at once, cancel every pending branch ourselves."""
        invite = self.transactions.find_invite_server(cancel)
        server = self.transactions.new_server(cancel, dest, None)
        if invite is None:
            server.respond(make_response(cancel, 481, to_tag=new_tag()))
            return
        server.respond(make_response(cancel, 200, to_tag=new_tag()))
        context = self.contexts.get(invite)
        if context is not None:
            context.cancel()

    # -- responses ---------------------------------------------------------------------------

    def handle_response(self, response: Response, flow: Flow) -> None:
        try:
            if self.transactions.handle_response(response):
                return
        except UnexpectedEvent as error:
            report(error)
            return
        # A stray response. 2xx to INVITE is forwarded statelessly (§16.7, RFC 6026); the
        # rest is dropped.
        vias = response.vias
        if (200 <= response.status < 300 and response.cseq.method == "INVITE" and len(vias) > 1
                and self.addresses.is_local_address(vias[0].host, vias[0].port)):
            out = self.rebind_route_tokens(upstream(response))
            self.send(out, via_destination(out.via))
            return
        self.log.info("Dropping stray response {status} {call_id}", status=response.status,
                      call_id=response.call_id)

    def flow_closed(self, flow: Flow) -> None:
        gone = self.location.flow_closed(flow)
        if gone:
            self.log.info("Connection {peer} closed: {count} bindings no longer reachable",
                          peer=flow.remote, count=len(gone))

    def context_done(self, ctx: ProxyContext) -> None:
        if self.contexts.pop(ctx.server, None) is not None:
            ctx.trim()


def _peer(flow: Flow) -> str:
    """A flow's remote address as the message log writes it."""
    return hostport(*flow.remote)
