"""The stateful proxy of RFC 3261 §16, with the registrar and digest authentication in front.

`Proxy` is the transaction user for every server and client transaction. For each request it
validates (§16.3), processes Route (§16.4), authenticates, finds the target set (§16.5, through
the location service), forwards (§16.6) and sends the caller exactly one final response chosen
as §16.7 says; CANCEL (§16.10), Timer C (§16.8) and hop-by-hop ACK come with it.

No socket and no reactor here: messages leave through `core.send_message` (statelessly) or the
transaction layer, time comes from the core's injected clock.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import os
import zlib

from twisted.logger import Logger

from reticulum import events
from reticulum.addresses import advertised_host, hostport, is_ip
from reticulum.dns import FAILED, INSECURE, NOT_FOUND, Resolution, uri_transport
from reticulum.sip import MAGIC_COOKIE, new_tag, Request, Response, make_response, parse_address, parse_uri

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO",
                   "UPDATE", "PRACK", "REFER", "SUBSCRIBE", "NOTIFY", "PUBLISH")
KNOWN_METHODS = frozenset(ALLOWED_METHODS)
DIALOG_CREATING = frozenset(("INVITE", "SUBSCRIBE", "REFER"))
SUPPORTED_OPTIONS = ("path", "outbound")
ALLOW = ", ".join(ALLOWED_METHODS)
#: URI parameters that must match when URIs are compared (RFC 3261 §19.1.4)
_URI_PARAMS_COMPARED = ("transport", "user", "ttl", "method", "maddr")
#: RFC 5393: concurrent branches a request may fan out to in all, when it names no lower limit
MAX_BREADTH = 60
#: the Record-Route URI parameter that carries our route token
TOKEN_PARAM = "rtok"


def hop_key(uri) -> str:
    """The next hop a URI names, as a route token binds it: host (case and trailing dot
    folded) and port as written. A dialog's remote target is copied verbatim from its
    Contact, and a Route from its Record-Route, so the same text comes back."""
    if uri is None:
        return ""
    host = (uri.params.get("maddr") or uri.host or "").lower().rstrip(".")
    return "%s:%s" % (host, uri.port or "")


class RouteTokens:
    """Marks on the Record-Route URIs we mint, so that only they open the way in a dialog.

    A token is a keyed MAC over the dialog's Call-ID and the hop a request carrying it takes
    after us (`hop_key`): the caller's side of the dialog may only go on to the callee's next
    hop and the callee's side only back to the caller's, so a stranger who called one of our
    users cannot use the dialog to reach anyone else. The entry in the request (what the callee
    keeps) is bound to the caller's next hop; the same entry in the responses (what the caller
    keeps, RFC 3261 §16.7 step 4 lets us rewrite it) to the callee's. One keyed hash checks
    a request; the key comes from the server's secret in `state_dir`, so tokens outlive a
    restart. The prefix of our stateless To tags comes from the same key, so the ACK for such
    an answer is recognised after a restart too."""

    __slots__ = ("_key", "stateless_prefix")

    def __init__(self, secret: bytes):
        self._key = hmac.new(secret, b"reticulum record-route token", hashlib.sha256).digest()
        self.stateless_prefix = hashlib.blake2b(b"stateless to-tag", key=self._key,
                                                digest_size=4).hexdigest() + "."

    def token(self, call_id: str, hop: str = "") -> str:
        """The token for a dialog (`call_id`) whose requests go on to `hop` (`hop_key`)."""
        text = "%s\n%s" % (call_id, hop)
        mac = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), key=self._key,
                              digest_size=12).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii")  # 16 characters, no padding

    def valid(self, call_id: str, token, hop: str = "") -> bool:
        return bool(token) and self.valid_any(call_id, (token,), hop)

    def valid_any(self, call_id: str, tokens, hop: str = "") -> bool:
        """Is any of `tokens` (text from the wire) the one for this Call-ID and next hop?
        One MAC for all."""
        expected = self.token(call_id, hop).encode("ascii")
        return any(hmac.compare_digest(expected, token.encode("utf-8", "surrogatepass"))
                   for token in tokens)

    def stateless_tag(self, request: Request) -> str:
        """The To tag of an answer sent without a transaction: our prefix, so that its ACK
        is known, and a checksum of the request, so that a retransmission gets the same."""
        seed = "%s %s %s" % (request.call_id, request.from_.tag, request.via.branch)
        return "%s%08x" % (self.stateless_prefix,
                           zlib.crc32(seed.encode("utf-8", "surrogatepass")))

    def is_stateless_tag(self, tag) -> bool:
        return bool(tag) and tag.startswith(self.stateless_prefix)


class Proxy:
    """Decides what happens to every request and response the core has parsed."""

    log = Logger()

    def __init__(self, core):
        self.core = core
        self.clock = core.clock
        self.config = core.config
        self.transactions = core.transactions
        self.location = core.location
        self.dialogs = core.dialogs
        self.contexts: dict = {}
        self._rebound: dict = {}  # (Call-ID, Contact, Record-Route) -> the rewritten entries
        self._branch_ids = itertools.count(1)
        self._branch_salt = os.urandom(4).hex()
        self.registrar = None
        self.auth = None
        self.tokens = None
        self.resolver = core.resolver
        self.addresses = core.addresses
        outbound = getattr(getattr(self.config, "proxy", None), "outbound_proxy", None)
        self.outbound_proxy = parse_uri(outbound) if outbound else None

    def start(self) -> None:
        from reticulum.auth import Authenticator, load_or_create_secret
        from reticulum.registrar import Registrar

        config = self.config
        # one secret, read in one place: nonces and route tokens are derived from it
        secret = load_or_create_secret(config.state_dir)
        self.tokens = RouteTokens(secret)
        self.registrar = Registrar(
            list(config.domains), self.location, self.clock,
            min_expires=config.registrar.min_expires,
            max_expires=config.registrar.max_expires,
            default_expires=config.registrar.default_expires,
            nat=config.registrar.nat,
            max_contacts=getattr(config.registrar, "max_contacts", 10),
            domain_of=self.addresses.local_domain,
            points_here=self._reaches_us,
        )
        if getattr(config.auth, "enabled", True):
            self.auth = Authenticator(
                self.core.accounts, list(config.domains), self.clock,
                secret,
                algorithms=tuple(config.auth.algorithms),
                nonce_lifetime=config.auth.nonce_lifetime,
                max_failures=config.auth.max_failures,
                lockout_seconds=config.auth.lockout_seconds,
                check_uri=config.auth.check_uri,
            )

    # -- requests ------------------------------------------------------------------------------

    def handle_request(self, request: Request, flow) -> None:
        if self.transactions.handle_request(request) is True:
            return  # a retransmission, or the ACK of a non-2xx final response
        method = request.method
        if method == "ACK":
            if self.tokens.is_stateless_tag(request.to.tag):
                return  # the ACK for an answer we sent without a transaction (§16.11)
            self._forward_ack(request, flow)
            return
        dest = self.core.response_destination(request, flow)
        if method == "CANCEL":
            self._handle_cancel(request, dest)
            return
        # No transaction yet: what is refused or challenged is answered once, statelessly,
        # so that a spoofed source gets one datagram per request (RFC 3261 §16.11).
        # `ProxyContext.begin` makes the server transaction once the request is accepted.
        context = ProxyContext(self, request, flow, dest)
        try:
            self._route(context)
        except Exception:
            self.log.failure("Failed to route {method} {call_id}", method=method,
                             call_id=request.call_id)
            if not context.final_sent and not context.branches:
                context.respond(500)

    def _reaches_us(self, uri) -> bool:
        """Would a request sent to this Contact arrive at our own listening address?"""
        port = uri.port
        if port is None:
            port = 5061 if uri.scheme == "sips" or uri.transport == "tls" else 5060
        return self.addresses.is_local_address(uri.host or "", port, uri.transport)

    @staticmethod
    def max_breadth(request: Request) -> int:
        """The concurrent branches a request may still fan out to (RFC 5393): its
        Max-Breadth, at most MAX_BREADTH, which is also what a request without one gets."""
        value = request.get("Max-Breadth")
        if value is None:
            return MAX_BREADTH
        try:
            return min(int(value.strip()), MAX_BREADTH)
        except ValueError:
            return MAX_BREADTH

    def refuse(self, ctx: "ProxyContext", status: int, reason: str | None, rule: str) -> None:
        """Answer `status` and log the rule that refused the request (once per request)."""
        request = ctx.request
        self.log.info("Refused {method} {call_id} from {peer} with {status}: {rule}",
                      method=request.method, call_id=request.call_id, peer=_peer(ctx.flow),
                      status=status, rule=rule)
        if events.listening:
            events.emit("refused", request=request, flow=ctx.flow, status=status, rule=rule)
        ctx.respond(status, reason)

    def _route(self, ctx: "ProxyContext") -> None:
        request = ctx.request
        uri = request.uri
        # §16.3 validation
        if uri.scheme not in ("sip", "sips"):
            ctx.respond(416)
            return
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            if request.method == "OPTIONS" and not request.routes and self.addresses.is_us(uri) \
                    and not uri.user:
                ctx.answer_options()
            else:
                self.refuse(ctx, 483, None, "Max-Forwards exhausted")
            return
        if self._is_loop(request):
            self.refuse(ctx, 482, None, "loop: our own Via with this request's hash")
            return
        unsupported = [option for option in request.get_all("Proxy-Require")
                       if option.strip().lower() not in SUPPORTED_OPTIONS]
        if unsupported:
            ctx.respond(420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        # §16.4 route information preprocessing
        ctx.dialog_token = self._preprocess_routes(request)
        uri = request.uri
        routes = request.routes
        to_us = not routes and self.addresses.is_us(uri)
        if to_us and not uri.user or request.method == "REGISTER" and not routes:
            self._answer_locally(ctx, to_us)
            return
        if not self._authorize(ctx):
            return
        if request.to.tag is not None:
            self.dialogs.in_dialog_request(request)
        ctx.targets = self._target_set(ctx, routes)
        if ctx.targets is None:
            return
        ctx.begin()
        ctx.start()

    def _answer_locally(self, ctx: "ProxyContext", to_us: bool) -> None:
        """Requests addressed to the server itself (§16.5 "the proxy is the target")."""
        request = ctx.request
        method = request.method
        if method == "REGISTER":
            if not to_us:
                self.refuse(ctx, 403, "Not a domain served here",
                            "REGISTER for a domain not served here")
                return
            if not self.location.writable:  # the shared store is out of reach
                ctx.respond(503, headers=[("Retry-After", str(self.location.retry_after))])
                return
            user = None
            if self.auth is not None:
                result = self.auth.authenticate(request, ctx.flow.remote[0], proxy=False)
                if result.response is not None:
                    ctx.send_final(result.response)
                    return
                user = result.user
                if not self.auth.owns(user, self._canonical(request.to.uri)):
                    self.refuse(ctx, 403, "Not your address",
                                "REGISTER for an address that is not the user's own")
                    return
            ctx.begin()  # a retransmission must get this answer, not a second registration
            response = self.registrar.handle(request, ctx.flow, authenticated_user=user)
            if response.status >= 300:
                self.log.info("Refused REGISTER {call_id} from {peer} with {status}: {rule}",
                              call_id=request.call_id, peer=_peer(ctx.flow),
                              status=response.status, rule=response.reason)
            ctx.send_final(response)
        elif method == "OPTIONS":
            ctx.answer_options()
        elif method in KNOWN_METHODS:
            ctx.respond(405, headers=[("Allow", ALLOW)])
        else:
            ctx.respond(501)

    def _authorize(self, ctx: "ProxyContext") -> bool:
        """Who may send what where: the decision is about the hop the request takes next.

        - An in-dialog request (To tag) that came through a Route entry we minted (a valid
          token) follows its dialog, in both directions, unchallenged.
        - Otherwise a sender whose From is local (a served domain or one of our addresses)
          proves who they are (407) and that the From is their own; then it may go anywhere.
        - Anyone else may only reach this server's users: a foreign next hop is refused.
        - Another node of the cluster ([cluster]) passes on what it authorised already, to a
          user or a flow of this node.
        """
        if self.auth is None:
            return True  # no authentication, no identities: a closed lab, a benchmark
        request = ctx.request
        in_dialog = request.to.tag is not None
        if in_dialog and ctx.dialog_token:
            return True
        cluster = self.core.cluster
        if cluster is not None and cluster.is_peer(ctx.flow) and self._next_hop_is_local(request):
            return True
        from_uri = request.from_.uri
        from_domain = self.addresses.local_domain(from_uri)
        if from_domain is not None:
            result = self.auth.authenticate(
                request, ctx.flow.remote[0], proxy=True,
                context="in-dialog request without a valid route token" if in_dialog else "")
            if result.response is not None:
                ctx.send_final(result.response)
                return False
            if not self.auth.owns(result.user, self._canonical(from_uri, from_domain)):
                self.refuse(ctx, 403, "From is not yours",
                            "From names a local user other than the authenticated one")
                return False
            self.auth.strip_credentials(request, proxy=True)
            return True
        if self._next_hop_is_local(request):
            return True
        if in_dialog:
            self.refuse(ctx, 403, "Relaying denied",
                        "in-dialog request without a valid route token")
        else:
            self.refuse(ctx, 403, "Relaying denied",
                        "relaying denied: next hop foreign and sender not authenticated")
        return False

    def _next_hop_is_local(self, request: Request) -> bool:
        """Does the request, our own Route entries taken off, go to one of our users: this
        server (a local user, looked up) or the Contact of a current binding?"""
        if request.routes:
            return False  # the top Route left is someone else's hop
        uri = request.uri
        return self.addresses.is_us(uri) or self._binding_for_contact(uri) is not None

    def _canonical(self, uri, domain: str | None = None):
        """`uri` with its host as the served domain it names (`alice@RETICULUM.LOCAL.` and
        `alice@<our address>` are `alice@reticulum.local`)."""
        domain = domain or self.addresses.local_domain(uri)
        if domain is None or uri.host == domain and uri.port is None:
            return uri
        return uri.copy(host=domain, port=None)

    def _preprocess_routes(self, request: Request) -> bool:
        """§16.4: take our own entries off the Route set. True when one of them carried a
        valid token for this Call-ID (we record-routed this dialog)."""
        given = []  # the tokens on our entries, checked with one MAC at the end
        uri = request.uri
        if "lr" in uri.params and request.routes and self.addresses.is_us(uri):
            # A strict router put our Record-Route URI in the Request-URI (§16.4).
            given.append(uri.params.get(TOKEN_PARAM))
            routes = request.get_all("Route")
            request.uri = parse_address(routes[-1]).uri
            request.set("Route", ", ".join(routes[:-1])) if len(routes) > 1 \
                else request.remove("Route")
        # RFC 5658 double Record-Route puts two of ours on top; take off every one of ours
        routes = request.routes
        while routes and self.addresses.is_us(routes[0].uri):
            given.append(routes[0].uri.params.get(TOKEN_PARAM))
            request.remove_first("Route")
            routes = request.routes
        if not given:
            return False
        given = [token for token in given if token]
        if not given:
            return False
        routes = request.routes
        hop = routes[0].uri if routes else request.uri  # where the request goes after us
        return self.tokens.valid_any(request.call_id, given, hop_key(hop))

    def _target_set(self, ctx: "ProxyContext", routes) -> list | None:
        """§16.5: one list of (uri, binding) per q-value group, tried in order."""
        request = ctx.request
        uri = request.uri
        if routes:
            return [[(uri, None)]]
        domain = self.addresses.local_domain(uri)
        if domain is not None:
            aor = self._canonical(uri, domain).aor()
            bindings = self.location.lookup(aor, self.clock.seconds())
            if not bindings:
                binding = self._binding_for_contact(uri)
                if binding is not None:
                    return [[(uri, binding)]]
                user = uri.user or ""
                if self.core.accounts.exists(user) or request.to.tag is not None:
                    self.refuse(ctx, 480, None, "%s has no registered contact" % aor)
                else:
                    self.refuse(ctx, 404, None, "no such user %s" % aor)
                return None
            groups: list = []
            last_q = None
            for binding in bindings:
                if binding.q != last_q:
                    groups.append([])
                    last_q = binding.q
                groups[-1].append((parse_uri(binding.contact), binding))
            return groups
        return [[(uri, self._binding_for_contact(uri))]]

    def _aor(self, uri) -> str:
        """The address-of-record a URI naming this server stands for."""
        return self._canonical(uri).aor()

    def _binding_for_contact(self, uri):
        find = getattr(self.location, "find_contact", None)
        if find is None:
            return None
        now = self.clock.seconds()
        binding = find(str(uri), now)
        if binding is None and uri.params:
            # RFC 3261 §19.1.4: a parameter on one side only (RFC 5626 "ob" in a dialog's
            # Contact, as WebSocket phones send) does not make the URIs differ
            kept = {k: v for k, v in uri.params.items() if k in _URI_PARAMS_COMPARED}
            if len(kept) != len(uri.params):
                binding = find(str(uri.copy(params=kept)), now)
        return binding

    def _is_loop(self, request: Request) -> bool:
        """§16.3 step 4: our own Via with this request's loop hash means it came back."""
        vias = request.vias
        if len(vias) < 2:
            return False  # only the sender's own Via: it cannot have passed through us
        marker = None
        for via in vias:
            if not self.addresses.is_local_address(via.host, via.port):
                continue
            if marker is None:
                marker = MAGIC_COOKIE + self.loop_hash(request)
            if (via.branch or "").startswith(marker):
                return True
        return False

    @staticmethod
    def loop_hash(request: Request) -> str:
        """Ten hex digits over the fields §16.6 step 8 names. Only this process compares
        them (a request that comes back to us), so Python's own (salted) hash will do."""
        routes = requires = ()
        for key, _, _ in request.headers._h:
            if key == "route":
                routes = tuple(request.get_all("Route"))
            elif key == "proxy-require":
                requires = tuple(request.get_all("Proxy-Require"))
        parts = (str(request.uri), request.from_.tag, request.to.tag, request.call_id,
                 request.cseq.number, routes, requires)
        return "%010x" % (hash(parts) & 0xFFFFFFFFFF)

    def new_branch(self, request: Request) -> str:
        return "%s%s.%s%d" % (MAGIC_COOKIE, self.loop_hash(request), self._branch_salt,
                              next(self._branch_ids))

    # -- forwarding ------------------------------------------------------------------------

    def next_hop(self, request: Request, binding, secure: bool = False):
        """Where a forwarded request goes (§16.6 steps 6-7, RFC 5626 flows): a flow, or a
        `Resolution` (the targets in failover order, maybe still pending DNS). A sips:
        Request-URI (or `secure`: the request as it reached us had one) leaves only over
        TLS/WSS, never in clear text."""
        sips = secure or request.uri.scheme == "sips"
        flow = None
        if binding is not None and binding.flow is not None and not binding.path:
            flow = binding.flow
            if not self.core.transports.alive(flow) or (
                    sips and flow.transport not in ("tls", "wss")):
                flow = None
            elif self._use_flow(binding, request.uri):
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

    def locate(self, uri, binding=None, secure: bool = False) -> Resolution:
        """RFC 3263: where the next hop's URI leads, in failover order (maybe still pending:
        see `Resolution.wait`). With `[proxy] outbound_proxy`, a hop to a domain name not
        served here (nor in `[dns.static]`) goes to that proxy instead."""
        outbound = self.outbound_proxy
        if outbound is not None and binding is None and not is_ip(uri.host) \
                and uri.host not in self.resolver.static and not self.addresses.is_us(uri):
            uri = outbound
        return self.resolver.locate(uri, secure)

    @staticmethod
    def _use_flow(binding, contact) -> bool:
        """RFC 3261 §16.5: requests go to the registered Contact, unless the registrar found it
        reachable only through the REGISTER's flow (RFC 5626 outbound, `.invalid`, NAT).
        A connection still open from the Contact's own host, for the Contact's transport, is
        reused (phones expect it); once it closes, the Contact is connected to anew."""
        if binding.flow_bound:
            return True
        flow = binding.flow
        if flow.transport == "udp" or not contact.is_ip():
            return False
        return contact.host == flow.remote[0] and uri_transport(contact) == flow.transport

    def prepare(self, ctx: "ProxyContext", uri, binding) -> Request:
        """A copy of the request for one target with §16.6 steps 1-3, 5 and 6 applied; the
        steps that depend on the transport it leaves on come with `stamp`."""
        request = ctx.request
        out = request.copy()
        out.uri = uri
        if binding is not None and binding.path:
            existing = out.get_all("Route")
            out.set("Route", ", ".join(list(binding.path) + existing))
        max_forwards = request.max_forwards
        out.set("Max-Forwards", str(max_forwards - 1 if max_forwards is not None else 69))
        return out

    def stamp(self, ctx: "ProxyContext", out: Request, dest, keep: bool = False):
        """§16.6 steps 4 and 8 for one destination: Record-Route and our Via for the transport
        it leaves on (on a copy when `keep`: the failover targets need the original).
        Returns (request, branch), or (None, None) when we cannot send over that transport."""
        request = ctx.request
        transport = dest.transport
        remote = getattr(dest, "remote", None)
        if remote is not None:
            outbound = self.addresses.listening_point(transport, remote[0], dest.local)
        else:
            outbound = self.addresses.listening_point(transport, dest.host)
        if outbound is None:
            return None, None
        if keep:
            out = out.copy()
        if request.method in DIALOG_CREATING and request.to.tag is None:
            flow = ctx.flow
            inbound = self.addresses.listening_point(flow.transport, flow.remote[0], flow.local)
            self._record_route(out, outbound, inbound, ctx.route_token(),
                               request.uri.scheme == "sips")
        branch = self.new_branch(request)
        out.add("Via", "SIP/2.0/%s %s;branch=%s" % (transport.upper(), _hostport(outbound),
                                                   branch), first=True)
        return out, branch

    def unroutable(self, ctx: "ProxyContext", hop) -> Response:
        """The answer when no target of a hop could be tried. A name that does not exist is a
        404 (definitive, RFC 3261 §21.4.5: a 503 would make RFC 3263 clients retry elsewhere
        and is turned into a 500 by every proxy upstream, §16.7); DNS that did not answer is a
        504 (an external server failed us, §21.5.5). A Warning says which name and why."""
        request = ctx.request
        problem = getattr(hop, "problem", None)
        name = getattr(hop, "name", "")
        detail = getattr(hop, "detail", "") or "no usable target"
        if problem == INSECURE or request.uri.scheme == "sips" and problem is None:
            status, reason = 480, "No secure path to the target"
        elif problem == NOT_FOUND:
            status, reason = 404, "Domain Not Found"
        elif problem == FAILED:
            status, reason = 504, "DNS Lookup Failed"
        else:
            status, reason = 503, "Unresolvable destination"
        self.log.info("No route for {method} {call_id} to {name}: {detail} ({status})",
                      method=request.method, call_id=request.call_id, name=name,
                      detail=detail, status=status)
        response = make_response(request, status, reason, to_tag=ctx.to_tag)
        if name:
            text = ("%s: %s" % (name, detail)).replace("\\", "").replace('"', "'")
            response.add("Warning", '399 %s "%s"' % (self.config.domains[0], text[:200]))
        return response

    def _record_route(self, out: Request, outbound, inbound, token: str,
                      secure: bool = False) -> None:
        """§16.6 step 4, with the dialog's token on each of our URIs (RFC 5658 double
        Record-Route when the two sides differ in transport or address)."""
        suffix = ";%s=%s>" % (TOKEN_PARAM, token)
        values = [_rr_value(outbound, secure) + suffix]
        if inbound is not None and (inbound.transport != outbound.transport
                                    or inbound.host != outbound.host):
            values.append(_rr_value(inbound, secure) + suffix)
        for value in reversed(values):
            out.add("Record-Route", value, first=True)

    def _forward_ack(self, ack: Request, flow) -> None:
        """ACK for a 2xx is end to end: forwarded statelessly along the route set (§16.11)."""
        max_forwards = ack.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            return
        dialog_token = self._preprocess_routes(ack)
        routes = ack.routes
        if not routes and self.addresses.is_us(ack.uri) and not ack.uri.user:
            return
        if not dialog_token and not self._next_hop_is_local(ack):
            # an ACK cannot be challenged: without a token it only reaches our own users
            self.log.info("Dropping ACK {call_id} from {peer}: in-dialog request without a "
                          "valid route token, next hop foreign", call_id=ack.call_id,
                          peer=_peer(flow))
            return
        binding = None
        if not routes:
            if self.addresses.is_us(ack.uri):
                found = self.location.lookup(self._aor(ack.uri), self.clock.seconds())
                binding = found[0] if found else None
            else:
                binding = self._binding_for_contact(ack.uri)
        out = ack.copy()
        out.set("Max-Forwards", str(max_forwards - 1 if max_forwards is not None else 69))
        hop = self.next_hop(out, binding)
        if isinstance(hop, Resolution):
            hop.wait(lambda resolved: self._send_ack(out, ack, resolved.targets))
        else:
            self._send_ack(out, ack, [hop])

    def _send_ack(self, out: Request, ack: Request, dests) -> None:
        for dest in dests:
            remote = getattr(dest, "remote", None)
            if remote is not None:
                point = self.addresses.listening_point(dest.transport, remote[0], dest.local)
            else:
                point = self.addresses.listening_point(dest.transport, dest.host)
            if point is None:
                continue
            # the same branch for every retransmission of this ACK (stateless, §16.11)
            branch = "%s%016x" % (MAGIC_COOKIE, hash((ack.via.branch or ack.call_id, "ack"))
                                  & 0xFFFFFFFFFFFFFFFF)
            out.add("Via", "SIP/2.0/%s %s;branch=%s" % (dest.transport.upper(), _hostport(point),
                                                       branch), first=True)
            self.core.send_message(out, dest)
            return
        self.log.info("Dropping ACK {call_id}: no next hop", call_id=ack.call_id)

    # -- CANCEL ----------------------------------------------------------------------------

    def _handle_cancel(self, cancel: Request, dest) -> None:
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

    def rebind_route_tokens(self, response: Response) -> Response:
        """Our Record-Route entries in a response on its way to the caller, with the token
        for the hop the caller's requests take after us: the nearest Record-Route above
        ours (towards the callee), else the callee's Contact (RFC 3261 §16.7 step 4 lets a
        proxy rewrite its own entries). The caller builds its route set from these."""
        values = response.get_all("Record-Route")
        if not values or not any(TOKEN_PARAM in value for value in values):
            return response
        # a call's 18x, 2xx and their retransmissions carry the same entries: rewrite once
        key = (response.call_id, response.get("Contact"), tuple(values))
        rebound = self._rebound.get(key)
        if rebound is None:
            rebound = self._rebind(response, values)
            if len(self._rebound) >= 4096:
                self._rebound.clear()
            self._rebound[key] = rebound
        response.set("Record-Route", rebound)
        return response

    def _rebind(self, response: Response, values) -> str:
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

    def handle_response(self, response: Response, flow) -> None:
        if self.transactions.handle_response(response):
            return
        # A stray response. 2xx to INVITE is forwarded statelessly (§16.7, RFC 6026); the
        # rest is dropped.
        vias = response.vias
        if (200 <= response.status < 300 and response.cseq.method == "INVITE" and len(vias) > 1
                and self.addresses.is_local_address(vias[0].host, vias[0].port)):
            out = self.rebind_route_tokens(_upstream(response))
            self.core.send_message(out, self.core.via_destination(out.via))
            return
        self.log.info("Dropping stray response {status} {call_id}", status=response.status,
                      call_id=response.call_id)

    def flow_closed(self, flow) -> None:
        gone = self.location.flow_closed(flow)
        if gone:
            self.log.info("Connection {peer} closed: {count} bindings no longer reachable",
                          peer=flow.remote, count=len(gone))

    def context_done(self, ctx: "ProxyContext") -> None:
        if self.contexts.pop(ctx.server, None) is not None:
            ctx.trim()


class Branch:
    """One target of a forwarded request: its client transaction and Timer C."""

    __slots__ = ("ctx", "request", "dest", "branch_id", "client", "provisional", "done",
                 "cancel_wanted", "cancel_sent", "timer_c", "template", "alternatives")

    def __init__(self, ctx: "ProxyContext", request: Request, dest, branch_id=None):
        self.ctx = ctx
        self.request = request
        self.dest = dest
        self.branch_id = branch_id  # the branch of our Via on `request`
        self.client = None
        self.provisional = False
        self.done = False
        self.cancel_wanted = False
        self.cancel_sent = False
        self.timer_c = None
        self.template = None  # the request before `stamp`, kept while alternatives remain
        self.alternatives = ()  # the targets to fail over to (RFC 3263 §4.3), in order

    def launch(self, dests) -> bool:
        """Send `self.request` (not stamped yet) to the first of `dests` we can leave for; the
        others stay as alternatives. False when none could be tried."""
        ctx = self.ctx
        template = self.request
        dests = list(dests)
        while dests:
            dest = dests.pop(0)
            out, branch_id = ctx.proxy.stamp(ctx, template, dest, keep=bool(dests))
            if out is None:
                continue
            self.request, self.dest, self.branch_id = out, dest, branch_id
            if dests:
                self.template, self.alternatives = template, dests
            self.start()
            return True
        return False

    def resolved(self, resolution) -> None:
        """DNS answered for a branch that was waiting for it."""
        ctx = self.ctx
        if ctx is None or self.done:
            return
        if self.cancel_wanted or ctx.cancelled:
            self.finish(make_response(ctx.request, 487, to_tag=ctx.to_tag))
        elif not self.launch(resolution.targets):
            self.finish(ctx.proxy.unroutable(ctx, resolution))

    def _fail_over(self) -> bool:
        """RFC 3263 §4.3: this target failed (transport error, Timer B/F, 503), so the same
        request goes to the next one as a new branch; the caller hears nothing of this one."""
        ctx = self.ctx
        if not self.alternatives or ctx is None or self.cancel_wanted or ctx.cancelled \
                or ctx.final_sent:
            return False
        successor = Branch(ctx, self.template, None)
        ctx.branches.append(successor)
        if not successor.launch(self.alternatives):
            ctx.branches.remove(successor)
            return False
        ctx.proxy.log.info("{call_id}: {dest} failed; trying {next}", call_id=ctx.request.call_id,
                           dest=self.dest, next=successor.dest)
        self.done = True
        self.template, self.alternatives = None, ()
        self._stop_timer_c()
        return True

    def start(self) -> None:
        ctx = self.ctx
        proxy = ctx.proxy
        self.client = proxy.transactions.new_client(self.request, self.dest, self,
                                                    branch=self.branch_id)
        if self.request.method == "INVITE":
            self._arm_timer_c()

    def _arm_timer_c(self) -> None:
        timeout = self.ctx.proxy.config.timers.invite_timeout
        timer = self.timer_c
        if timer is not None and timer.active():
            timer.reset(timeout)  # moved in place: no new call, no cancelled one left behind
        else:
            self.timer_c = self.ctx.proxy.clock.callLater(timeout, self._timer_c_fired)

    def _stop_timer_c(self) -> None:
        if self.timer_c is not None and self.timer_c.active():
            self.timer_c.cancel()
        self.timer_c = None

    def _timer_c_fired(self) -> None:
        """§16.8: nobody answered in time. The caller hears 408; a ringing branch is CANCELled.
        A branch that heard nothing at all behaves as if its transaction got a 408: the
        INVITE is no longer retransmitted (and there is nothing to CANCEL)."""
        self.timer_c = None
        if self.done:
            return
        if self.provisional:
            self.send_cancel()
        client = self.client
        self.finish(make_response(self.ctx.request, 408, to_tag=self.ctx.to_tag))
        if not self.provisional and client is not None:
            client.terminate()

    def cancel(self) -> None:
        if self.done:
            return
        if self.client is None and self.ctx is not None:  # still waiting for DNS
            self.cancel_wanted = True
            self.finish(make_response(self.ctx.request, 487, to_tag=self.ctx.to_tag))
            return
        if self.request.method != "INVITE":
            return
        self.cancel_wanted = True
        if self.provisional:
            self.send_cancel()

    def send_cancel(self) -> None:
        """§9.1: a CANCEL matching our INVITE, sent once a provisional response came."""
        if self.cancel_sent:
            return
        self.cancel_sent = True
        invite = self.request
        headers = [("Via", invite.get_all("Via")[0])]
        for name in ("Route",):
            for value in invite.get_all(name):
                headers.append((name, value))
        headers += [("Max-Forwards", "70"), ("From", invite.get("From")),
                    ("To", invite.get("To")), ("Call-ID", invite.call_id),
                    ("CSeq", "%d CANCEL" % invite.cseq.number)]
        cancel = Request("CANCEL", invite.uri)
        for name, value in headers:
            cancel.add(name, value)
        self.ctx.proxy.transactions.new_client(cancel, self.dest, _IgnoreResponses,
                                               branch=self.branch_id)

    # transaction user callbacks

    def client_response(self, client, response: Response) -> None:
        if response.status < 200:
            if self.done:
                return
            if not self.provisional:
                self.provisional = True
                if self.cancel_wanted:
                    self.send_cancel()
            if response.status > 100 and self.request.method == "INVITE":
                self._arm_timer_c()
            self.ctx.provisional(self, response)
            return
        if self.done:
            if 200 <= response.status < 300:
                self.ctx.late_success(self, response)
            return
        if response.status == 503 and self._fail_over():
            return
        self.finish(response)

    def client_timeout(self, client) -> None:
        if not self.done and not self._fail_over():
            self.finish(make_response(self.ctx.request, 408, to_tag=self.ctx.to_tag))

    def client_error(self, client) -> None:
        if not self.done and not self._fail_over():
            self.finish(make_response(self.ctx.request, 503, to_tag=self.ctx.to_tag))

    def finish(self, response: Response) -> None:
        self.done = True
        self._stop_timer_c()
        self.ctx.final(self, response)

    def client_terminated(self, client) -> None:
        ctx = self.ctx
        if ctx is not None:
            ctx.release_if_finished()


class _IgnoreResponsesType:
    """The transaction user of our own CANCELs: their answers need no action."""

    def client_response(self, client, response):
        pass

    def client_timeout(self, client):
        pass

    def client_error(self, client):
        pass


_IgnoreResponses = _IgnoreResponsesType()


class ProxyContext:
    """The state of one proxied request: its server transaction, branches and best answer."""

    __slots__ = ("proxy", "request", "flow", "dest", "server", "targets", "branches",
                 "responses", "final_sent", "success", "cancelled", "to_tag", "is_dialog",
                 "dialog_token", "token")

    def __init__(self, proxy: Proxy, request: Request, flow, dest=None):
        self.proxy = proxy
        self.request = request
        self.flow = flow
        self.dest = dest  # where responses go (§18.2.2)
        self.server = None  # made by begin(); until then answers go out statelessly
        self.targets: list = []
        self.branches: list[Branch] = []
        self.responses: list[Response] = []
        self.final_sent = False
        self.success = False
        self.cancelled = False
        self.to_tag = new_tag()
        self.is_dialog = request.method in ("INVITE", "SUBSCRIBE")
        self.dialog_token = False  # a Route entry of ours had a valid token
        self.token = None  # the token of our Record-Route, made once for all branches

    def begin(self) -> None:
        """The request is accepted: from here on a server transaction absorbs its
        retransmissions and retransmits our final answer (an INVITE hears 100 at once)."""
        if self.server is not None:
            return
        self.server = self.proxy.transactions.new_server(self.request, self.dest, self)
        self.proxy.contexts[self.server] = self
        if self.request.method == "INVITE":
            self.respond(100)

    def route_token(self) -> str:
        """The token of our Record-Route in the request: the callee's requests go back to
        the caller's next hop, the Record-Route below ours or else the caller's Contact."""
        token = self.token
        if token is None:
            request = self.request
            beyond = request.record_routes or request.contacts
            hop = hop_key(beyond[0].uri) if beyond and not beyond[0].star else ""
            token = self.token = self.proxy.tokens.token(request.call_id, hop)
        return token

    # local answers

    def respond(self, status: int, reason: str | None = None, headers=()) -> None:
        if status == 100:
            tag = None
        elif self.server is None:
            tag = self.proxy.tokens.stateless_tag(self.request)
        else:
            tag = self.to_tag
        response = make_response(self.request, status, reason, to_tag=tag)
        for name, value in headers:
            response.add(name, value)
        if status == 100:
            self.server.respond(response)
        else:
            self.send_final(response)

    def answer_options(self) -> None:
        self.respond(200, headers=[("Allow", ALLOW), ("Accept", "application/sdp"),
                                   ("Supported", ", ".join(SUPPORTED_OPTIONS))])

    def send_final(self, response: Response) -> None:
        if self.final_sent:
            return
        self.final_sent = True
        server = self.server
        if response.to.tag is None and response.status >= 200:
            to = response.to
            to.params["tag"] = self.to_tag if server is not None \
                else self.proxy.tokens.stateless_tag(self.request)
            response.set("To", str(to))
        if server is None:
            # §16.11 stateless: sent once; a retransmitted request is answered again, and the
            # ACK is recognised by its To tag
            self.proxy.core.send_message(response, self.dest)
            return
        server.respond(response)
        self.proxy.context_done(self)

    # forwarding

    def start(self) -> None:
        if not self._next_group() and not self.final_sent:
            self._send_best()  # no target could be tried: answer now (480/503 collected)

    def _next_group(self) -> bool:
        """Fork to the next q-value group; False when nothing was left to try."""
        proxy = self.proxy
        secure = self.request.uri.scheme == "sips"
        while self.targets:
            group, breadths = self._share_breadth(self.targets.pop(0))
            started = 0
            for (uri, binding), breadth in zip(group, breadths):
                out = proxy.prepare(self, uri, binding)
                out.set("Max-Breadth", breadth)
                hop = proxy.next_hop(out, binding, secure)
                branch = Branch(self, out, None)
                self.branches.append(branch)
                if isinstance(hop, Resolution):
                    if not hop.done:
                        hop.wait(branch.resolved)  # the branch goes once DNS has answered
                        started += 1
                        continue
                    dests = hop.targets
                else:
                    dests = (hop,)
                if branch.launch(dests):
                    started += 1
                else:
                    self.branches.pop()
                    self.responses.append(proxy.unroutable(self, hop))
            if started:
                return True
        return False

    def _share_breadth(self, group: list):
        """RFC 5393 §5.3: the concurrent branches of a group share the request's Max-Breadth
        (each gets at least 1, the sum stays within it); targets beyond it are not tried. A
        spiral thus divides its breadth at every pass instead of multiplying requests."""
        breadth = self.proxy.max_breadth(self.request)
        if len(group) > breadth:
            request = self.request
            self.proxy.log.info(
                "Max-Breadth {breadth} of {method} {call_id} allows {breadth} of {count} "
                "targets", breadth=max(breadth, 0), method=request.method,
                call_id=request.call_id, count=len(group))
            self.responses.append(make_response(request, 440, to_tag=self.to_tag))
            group = group[:max(breadth, 0)]
        if not group:
            return group, ()
        base, extra = divmod(breadth, len(group))
        return group, ["%d" % (base + (i < extra)) for i in range(len(group))]

    def cancel(self) -> None:
        self.cancelled = True
        self.targets = []
        for branch in self.branches:
            branch.cancel()

    def provisional(self, branch: Branch, response: Response) -> None:
        if response.status == 100:
            return
        if self.is_dialog:
            self.proxy.dialogs.response_seen(self.request, response)
        if not self.final_sent:
            self.server.respond(self.proxy.rebind_route_tokens(_upstream(response)))

    def late_success(self, branch: Branch, response: Response) -> None:
        """A 2xx retransmission (or a 2xx after we gave up on a branch): always forwarded."""
        if self.request.method == "INVITE":
            self.server.respond(self.proxy.rebind_route_tokens(_upstream(response)))

    def final(self, branch: Branch, response: Response) -> None:
        status = response.status
        if self.is_dialog:
            self.proxy.dialogs.response_seen(self.request, response)
        if 200 <= status < 300:
            self.success = True
            first = not self.final_sent
            self.final_sent = True
            self.server.respond(self.proxy.rebind_route_tokens(_upstream(response)))
            if first and self.request.method == "INVITE":
                for other in self.branches:
                    if other is not branch:
                        other.cancel()
                self.targets = []
            self._maybe_done()
            return
        self.responses.append(response)
        if status >= 600:
            self.cancel()
        if any(not b.done for b in self.branches):
            return
        if not self.final_sent and not self.cancelled and self._next_group():
            return
        if not self.final_sent:
            self._send_best()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if all(b.done for b in self.branches):
            self.proxy.context_done(self)

    def _send_best(self) -> None:
        """§16.7 step 6: the best of the final responses, challenges aggregated."""
        responses = self.responses
        if not responses:
            best = make_response(self.request, 408, to_tag=self.to_tag)
        else:
            sixes = [r for r in responses if r.status >= 600]
            pool = sixes or responses
            best = min(pool, key=lambda r: (r.status // 100, r.status == 408))
        if best.status == 503:
            best = make_response(self.request, 500, to_tag=self.to_tag)
        elif best.status in (401, 407):
            best = self._aggregate_challenges(best)
        if best.vias and len(best.vias) > len(self.request.vias):
            best = _upstream(best)
        self.send_final(best)

    def _aggregate_challenges(self, best: Response) -> Response:
        merged = _upstream(best) if len(best.vias) > len(self.request.vias) else best.copy()
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            values = []
            for response in self.responses:
                if response.status in (401, 407):
                    values.extend(response.get_all(name))
            if values:
                merged.remove(name)
                for value in values:
                    merged.add(name, value)
        return merged

    # server transaction user callbacks

    def server_timeout(self, server) -> None:
        self.proxy.log.info("No ACK for the final response to {call_id}",
                            call_id=self.request.call_id)

    def server_terminated(self, server) -> None:
        self.proxy.context_done(self)
        self.release_if_finished()

    def trim(self) -> None:
        """The final answer is out (usually every branch is done too). Transactions linger for
        tens of seconds to absorb retransmissions: keep only what late 2xx responses need."""
        self.request.forget_parsed()
        if any(not b.done for b in self.branches):
            return  # the server transaction ended first (a cancelled fork still waits)
        self.responses = ()  # nothing is added once every branch is done
        self.targets = ()
        for branch in self.branches:
            branch.request = None  # its client transaction has let go of it too
        server = self.server
        if server is not None and server.tu is self and self.request.method != "INVITE":
            server.tu = None  # nothing left to hear from a non-INVITE server transaction
        self.release_if_finished()

    def release_if_finished(self) -> None:
        """Once neither the server transaction nor any branch's client transaction can call
        back, drop the context <-> branch references, so that the whole call is freed by
        reference counting instead of waiting for the cycle collector."""
        server = self.server
        if server is not None and server.tu is self:
            return
        for branch in self.branches:
            client = branch.client
            if client is not None and client.tu is branch:
                return
        for branch in self.branches:
            branch._stop_timer_c()
            branch.ctx = None
        self.branches = []


def _upstream(response: Response) -> Response:
    """The response to send towards the caller: our own Via taken off (§16.7 step 3)."""
    out = response.copy()
    out.remove_first("Via")
    return out


def _peer(flow) -> str:
    """A flow's remote address as the message log writes it."""
    return hostport(*flow.remote)


@functools.lru_cache(maxsize=64)  # a listening point's text never changes
def _hostport(point) -> str:
    return hostport(advertised_host(point.host), point.port)


@functools.lru_cache(maxsize=128)
def _rr_value(point, secure: bool = False) -> str:
    """Our Record-Route name-addr for a listening point, without its closing ">" (the
    dialog's token goes last)."""
    if secure and point.transport in ("tls", "wss"):
        # §16.6 step 4: a sips: request is record-routed with sips: URIs
        params = "" if point.transport == "tls" else ";transport=%s" % point.transport
        return "<sips:%s%s;lr" % (_hostport(point), params)
    params = "" if point.transport == "udp" else ";transport=%s" % point.transport
    return "<sip:%s%s;lr" % (_hostport(point), params)
