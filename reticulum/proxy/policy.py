"""Who may do what: which requests are challenged, who may be relayed where, and the route
tokens that let a dialog's requests through.

Every decision is about the real next hop, after our own Route entries are off (§16.4):
nothing a stranger writes in a header grants anything but a token we minted ourselves."""
from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from typing import Any, Callable, Iterable, NamedTuple, Optional, Tuple

from reticulum.addresses import Flow, LocalAddresses
from reticulum.proxy.routing import next_hop_uri
from reticulum.sip import Request, Response

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO",
                   "UPDATE", "PRACK", "REFER", "SUBSCRIBE", "NOTIFY", "PUBLISH")
KNOWN_METHODS = frozenset(ALLOWED_METHODS)
ALLOW = ", ".join(ALLOWED_METHODS)
#: the Proxy-Require options (and Supported extensions) this proxy knows
SUPPORTED_OPTIONS = ("path", "outbound")


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

    def valid(self, call_id: str, token: Optional[str], hop: str = "") -> bool:
        return token is not None and token != "" and self.valid_any(call_id, (token,), hop)

    def valid_any(self, call_id: str, tokens: Iterable[str], hop: str = "") -> bool:
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


class Refusal(NamedTuple):
    """A request that may not go on: a ready answer (a digest challenge), or a status with
    the rule that refused it (logged and emitted by the proxy)."""

    status: int
    reason: Optional[str] = None
    rule: str = ""
    response: Optional[Response] = None


class RelayPolicy:
    """The relay rules and who is challenged (see docs/architecture.md, "Relaying")."""

    __slots__ = ("addresses", "auth", "tokens", "cluster", "find_binding")

    def __init__(self, addresses: LocalAddresses, auth: Any, tokens: RouteTokens,
                 cluster: Any, find_binding: Callable[[Any], Any]):
        self.addresses = addresses
        self.auth = auth  # None: no authentication, no identities (a closed lab, a benchmark)
        self.tokens = tokens
        self.cluster = cluster
        self.find_binding = find_binding  # Contact URI -> its current binding, or None

    def dialog_token(self, request: Request, given: Iterable[str]) -> bool:
        """Did one of our Route entries (their tokens `given`, from `strip_own_routes`) carry
        the valid token for this Call-ID and the hop the request takes next?"""
        given = list(given)
        if not given:
            return False
        return self.tokens.valid_any(request.call_id, given, hop_key(next_hop_uri(request)))

    def canonical(self, uri, domain: Optional[str] = None):
        """`uri` with its host as the served domain it names (`alice@RETICULUM.LOCAL.` and
        `alice@<our address>` are `alice@reticulum.local`)."""
        domain = domain or self.addresses.local_domain(uri)
        if domain is None or uri.host == domain and uri.port is None:
            return uri
        return uri.copy(host=domain, port=None)

    def next_hop_is_local(self, request: Request) -> bool:
        """Does the request, our own Route entries taken off, go to one of our users: this
        server (a local user, looked up) or the Contact of a current binding?"""
        if request.routes:
            return False  # the top Route left is someone else's hop
        uri = request.uri
        return self.addresses.is_us(uri) or self.find_binding(uri) is not None

    def authorize(self, request: Request, flow: Flow, dialog_token: bool) -> Optional[Refusal]:
        """Who may send what where (None: it may go on); the decision is about the hop the
        request takes next.

        - An in-dialog request (To tag) that came through a Route entry we minted (a valid
          token) follows its dialog, in both directions, unchallenged.
        - Otherwise a sender whose From is local (a served domain or one of our addresses)
          proves who they are (407) and that the From is their own; then it may go anywhere.
        - Anyone else may only reach this server's users: a foreign next hop is refused.
        - Another node of the cluster ([cluster]) passes on what it authorised already, to a
          user or a flow of this node.
        """
        auth = self.auth
        if auth is None:
            return None
        in_dialog = request.to.tag is not None
        if in_dialog and dialog_token:
            return None
        cluster = self.cluster
        if cluster is not None and cluster.is_peer(flow) and self.next_hop_is_local(request):
            return None
        from_uri = request.from_.uri
        from_domain = self.addresses.local_domain(from_uri)
        if from_domain is not None:
            result = auth.authenticate(
                request, flow.remote[0], proxy=True,
                context="in-dialog request without a valid route token" if in_dialog else "")
            if result.response is not None:
                return Refusal(result.response.status, response=result.response)
            if not auth.owns(result.user, self.canonical(from_uri, from_domain)):
                return Refusal(403, "From is not yours",
                               "From names a local user other than the authenticated one")
            auth.strip_credentials(request, proxy=True)
            return None
        if self.next_hop_is_local(request):
            return None
        if in_dialog:
            return Refusal(403, "Relaying denied", "in-dialog request without a valid route token")
        return Refusal(403, "Relaying denied",
                       "relaying denied: next hop foreign and sender not authenticated")

    def authorize_register(self, request: Request,
                           flow: Flow) -> Tuple[Optional[str], Optional[Refusal]]:
        """A REGISTER for a served domain: the authenticated user (None without
        authentication), or why it is refused. One may only register one's own address."""
        auth = self.auth
        if auth is None:
            return None, None
        result = auth.authenticate(request, flow.remote[0], proxy=False)
        if result.response is not None:
            return None, Refusal(result.response.status, response=result.response)
        if not auth.owns(result.user, self.canonical(request.to.uri)):
            return None, Refusal(403, "Not your address",
                                 "REGISTER for an address that is not the user's own")
        return result.user, None

    def ack_may_pass(self, ack: Request, dialog_token: bool) -> bool:
        """An ACK cannot be challenged: without a valid token it only reaches our own users."""
        return dialog_token or self.next_hop_is_local(ack)
