"""One proxied request (`ProxyContext`) and each of its targets (`Branch`), as two explicit
state machines in the manner of h11's `_state.py`: a table maps (state, event) to the new
state and the actions to run, in order, once the state has changed. An event the table does
not list for a state raises `UnexpectedEvent`; the entry points (messages, timers, DNS
answers) catch it and log it once, so a bug shows in the log instead of a half-changed call.

`describe(table)` prints a table; the tables as they stand:

ProxyContext (`CONTEXT_TABLE`)::

{context_table}

Branch (`BRANCH_TABLE`)::

{branch_table}
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, TypeVar

from twisted.logger import Logger

from reticulum.addresses import Destination, Flow
from reticulum.dns import Resolution
from reticulum.proxy.policy import ALLOW, SUPPORTED_OPTIONS, RouteTokens, hop_key
from reticulum.proxy.routing import DIALOG_CREATING, copy_for_target, max_breadth, \
    share_breadth
from reticulum.proxy.selection import best_response, upstream
from reticulum.sip import Request, Response, make_response, new_tag


log = Logger(namespace="reticulum.proxy")

Table = Dict[Tuple[str, str], Tuple[str, Tuple[str, ...]]]


class UnexpectedEvent(Exception):
    """An event the state table does not allow in the current state (a bug, or a peer doing
    something the code did not foresee): nothing has changed."""

    def __init__(self, machine: str, state: str, event: str, call_id: str = ""):
        super().__init__("%s %s: %s is not expected in state %s"
                         % (machine, call_id, event, state))
        self.machine = machine
        self.state = state
        self.event = event
        self.call_id = call_id


def describe(table: Table) -> str:
    """The table as text: one line per (state, event), in the table's order."""
    width_state = max(len(state) for state, _ in table)
    width_event = max(len(event) for _, event in table)
    lines = []
    for (state, event), (new, actions) in table.items():
        lines.append("%-*s  %-*s  -> %-*s %s" % (
            width_state, state, width_event, event, width_state, new,
            ", ".join(actions) if actions else "-"))
    return "\n".join(lines)


def _compile(table: Table, owner: type) -> Dict[Tuple[str, str], Tuple[str, tuple]]:
    """The table with each action's name replaced by the method it names."""
    return {key: (new, tuple(getattr(owner, name) for name in actions))
            for key, (new, actions) in table.items()}


F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """An entry point the clock, DNS or the transaction layer calls: an event the table does
    not allow is logged here, once, and goes no further."""

    @functools.wraps(method)
    def entry(*args: Any) -> Any:
        try:
            return method(*args)
        except UnexpectedEvent as error:
            report(error)
            return None

    return entry  # type: ignore[return-value]


def report(error: UnexpectedEvent) -> None:
    log.warn("Ignored an unexpected event: {error}", error=str(error))


class ProxyServices(Protocol):
    """What a context and its branches ask of the proxy that made them."""

    log: Any
    clock: Any
    config: Any
    transactions: Any
    dialogs: Any
    tokens: RouteTokens
    contexts: Dict[Any, "ProxyContext"]

    def send(self, message: Any, dest: Destination) -> bool: ...

    def rebind_route_tokens(self, response: Response) -> Response: ...

    def next_hop(self, request: Request, binding: Any, secure: bool = False) -> Any: ...

    def stamp(self, ctx: "ProxyContext", out: Request, dest: Destination,
              keep: bool = False) -> Tuple[Optional[Request], Optional[str]]: ...

    def unroutable(self, ctx: "ProxyContext", hop: Any) -> Response: ...

    def context_done(self, ctx: "ProxyContext") -> None: ...


# -- the branch ------------------------------------------------------------------------------

#: no client transaction yet: waiting for DNS (or about to be launched)
WAITING = "WAITING"
#: the request is out, nothing heard
TRYING = "TRYING"
#: a provisional response came
PROCEEDING = "PROCEEDING"
#: the INVITE is to be cancelled, but a CANCEL may only follow a provisional response (§9.1)
CANCEL_WANTED = "CANCEL_WANTED"
#: our CANCEL is out; the final response is still to come
CANCELLING = "CANCELLING"
#: the final response went to the context (or the branch failed over to a successor); only a
#: late 2xx is still of interest
DONE = "DONE"

LAUNCH = "launch"  # a destination was chosen: the client transaction starts
DNS_ANSWERED = "dns answered"
PROVISIONAL = "1xx"
SUCCESS = "2xx"
FAILURE = "3xx-6xx"  # a final non-2xx response, or the answer for a target that cannot be tried
UNAVAILABLE = "unavailable"  # 503, Timer B/F, transport error: the next target may be tried
TIMER_C = "timer C"
CANCEL = "cancel"  # an INVITE branch
GIVE_UP = "give up"  # the same for a non-INVITE branch: once sent it runs to its end (§9.1)

_LIVE = (TRYING, PROCEEDING, CANCEL_WANTED, CANCELLING)

BRANCH_TABLE: Table = {
    (WAITING, LAUNCH): (TRYING, ("start_client",)),
    (WAITING, DNS_ANSWERED): (WAITING, ("launch_or_fail",)),
    (WAITING, FAILURE): (DONE, ("finish",)),
    (WAITING, CANCEL): (DONE, ("finish_cancelled",)),
    (WAITING, GIVE_UP): (DONE, ("finish_cancelled",)),

    (TRYING, PROVISIONAL): (PROCEEDING, ("relay_provisional",)),
    (TRYING, SUCCESS): (DONE, ("finish",)),
    (TRYING, FAILURE): (DONE, ("finish",)),
    (TRYING, UNAVAILABLE): (DONE, ("fail_over_or_finish",)),
    (TRYING, TIMER_C): (DONE, ("finish_timeout", "terminate_client")),
    (TRYING, CANCEL): (CANCEL_WANTED, ()),
    (TRYING, GIVE_UP): (TRYING, ()),

    (PROCEEDING, PROVISIONAL): (PROCEEDING, ("relay_provisional",)),
    (PROCEEDING, SUCCESS): (DONE, ("finish",)),
    (PROCEEDING, FAILURE): (DONE, ("finish",)),
    (PROCEEDING, UNAVAILABLE): (DONE, ("fail_over_or_finish",)),
    (PROCEEDING, TIMER_C): (DONE, ("send_cancel", "finish_timeout")),
    (PROCEEDING, CANCEL): (CANCELLING, ("send_cancel",)),
    (PROCEEDING, GIVE_UP): (PROCEEDING, ()),

    (CANCEL_WANTED, PROVISIONAL): (CANCELLING, ("send_cancel", "relay_provisional")),
    (CANCEL_WANTED, SUCCESS): (DONE, ("finish",)),
    (CANCEL_WANTED, FAILURE): (DONE, ("finish",)),
    (CANCEL_WANTED, UNAVAILABLE): (DONE, ("finish",)),
    (CANCEL_WANTED, TIMER_C): (DONE, ("finish_timeout", "terminate_client")),
    (CANCEL_WANTED, CANCEL): (CANCEL_WANTED, ()),

    (CANCELLING, PROVISIONAL): (CANCELLING, ("relay_provisional",)),
    (CANCELLING, SUCCESS): (DONE, ("finish",)),
    (CANCELLING, FAILURE): (DONE, ("finish",)),
    (CANCELLING, UNAVAILABLE): (DONE, ("finish",)),
    (CANCELLING, TIMER_C): (DONE, ("finish_timeout",)),
    (CANCELLING, CANCEL): (CANCELLING, ()),

    (DONE, DNS_ANSWERED): (DONE, ()),
    (DONE, PROVISIONAL): (DONE, ()),
    (DONE, SUCCESS): (DONE, ("late_success",)),
    (DONE, FAILURE): (DONE, ()),
    (DONE, UNAVAILABLE): (DONE, ()),
    (DONE, TIMER_C): (DONE, ()),
    (DONE, CANCEL): (DONE, ()),
    (DONE, GIVE_UP): (DONE, ()),
}


class Branch:
    """One target of a forwarded request: its client transaction and Timer C (§16.8)."""

    __slots__ = ("ctx", "request", "dest", "branch_id", "client", "state", "invite", "timer_c",
                 "template", "alternatives")

    def __init__(self, ctx: "ProxyContext", request: Request, dest: Optional[Destination] = None,
                 branch_id: Optional[str] = None):
        self.ctx: Optional[ProxyContext] = ctx
        self.request: Any = request
        self.dest = dest
        self.branch_id = branch_id  # the branch of our Via on `request`
        self.client: Any = None
        self.state = WAITING
        self.invite = request.method == "INVITE"
        self.timer_c: Any = None
        self.template: Optional[Request] = None  # the request before `stamp`, kept while
        self.alternatives: Sequence[Destination] = ()  # there are targets to fail over to

    def handle(self, event: str, arg: Any = None) -> None:
        """Take one event through `BRANCH_TABLE`: the new state, then its actions."""
        try:
            self.state, actions = _BRANCH_STEPS[(self.state, event)]
        except KeyError:
            ctx = self.ctx
            raise UnexpectedEvent("branch", self.state, event,
                                  ctx.request.call_id if ctx is not None else "") from None
        for action in actions:
            action(self, arg)

    # -- what happens to a branch (the entry points) ------------------------------------------

    def launch(self, dests: Sequence[Destination]) -> bool:
        """Send `self.request` (not stamped yet) to the first of `dests` we can leave for; the
        others stay as alternatives (RFC 3263 §4.3). False when none could be tried."""
        ctx = self.ctx
        assert ctx is not None
        template = self.request
        remaining = list(dests)
        while remaining:
            dest = remaining.pop(0)
            out, branch_id = ctx.proxy.stamp(ctx, template, dest, keep=bool(remaining))
            if out is None:
                continue
            self.request, self.dest, self.branch_id = out, dest, branch_id
            if remaining:
                self.template, self.alternatives = template, remaining
            self.handle(LAUNCH)
            return True
        return False

    @guarded
    def resolved(self, resolution: Any) -> None:
        """DNS answered for a branch that was waiting for it."""
        if self.ctx is not None:
            self.handle(DNS_ANSWERED, resolution)

    def cancel(self) -> None:
        self.handle(CANCEL if self.invite else GIVE_UP)

    def refuse(self, response: Response) -> None:
        """No target of this branch could be tried: `response` is its answer."""
        self.handle(FAILURE, response)

    @guarded
    def _timer_c_fired(self) -> None:
        """§16.8: nobody answered in time. The caller hears 408; a ringing branch is CANCELled.
        A branch that heard nothing at all behaves as if its transaction got a 408: the
        INVITE is no longer retransmitted (and there is nothing to CANCEL)."""
        self.timer_c = None
        self.handle(TIMER_C)

    # transaction user callbacks

    def client_response(self, client: Any, response: Response) -> None:
        status = response.status
        if status < 200:
            self.handle(PROVISIONAL, response)
        elif status < 300:
            self.handle(SUCCESS, response)
        elif status == 503:
            self.handle(UNAVAILABLE, response)
        else:
            self.handle(FAILURE, response)

    @guarded
    def client_timeout(self, client: Any) -> None:
        if self.state != DONE:
            self.handle(UNAVAILABLE, self._own_response(408))

    @guarded
    def client_error(self, client: Any) -> None:
        if self.state != DONE:
            self.handle(UNAVAILABLE, self._own_response(503))

    def client_terminated(self, client: Any) -> None:
        ctx = self.ctx
        if ctx is not None:
            ctx.release_if_finished()

    # -- actions (named in BRANCH_TABLE) ------------------------------------------------------

    def start_client(self, _: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        self.client = ctx.proxy.transactions.new_client(self.request, self.dest, self,
                                                        branch=self.branch_id)
        if self.invite:
            self._arm_timer_c()

    def launch_or_fail(self, resolution: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        if ctx.state == CANCELLED:
            self.handle(CANCEL if self.invite else GIVE_UP)
        elif not self.launch(resolution.targets):
            self.handle(FAILURE, ctx.proxy.unroutable(ctx, resolution))

    def relay_provisional(self, response: Response) -> None:
        if response.status > 100 and self.invite:
            self._arm_timer_c()
        ctx = self.ctx
        assert ctx is not None
        ctx.provisional(self, response)

    def send_cancel(self, _: Any) -> None:
        """§9.1: a CANCEL matching our INVITE, sent once a provisional response came."""
        invite = self.request
        headers = [("Via", invite.get_all("Via")[0])]
        for value in invite.get_all("Route"):
            headers.append(("Route", value))
        headers += [("Max-Forwards", "70"), ("From", invite.get("From")),
                    ("To", invite.get("To")), ("Call-ID", invite.call_id),
                    ("CSeq", "%d CANCEL" % invite.cseq.number)]
        cancel = Request("CANCEL", invite.uri)
        for name, value in headers:
            cancel.add(name, value)
        ctx = self.ctx
        assert ctx is not None
        ctx.proxy.transactions.new_client(cancel, self.dest, IGNORE_RESPONSES,
                                          branch=self.branch_id)

    def finish(self, response: Response) -> None:
        self._stop_timer_c()
        ctx = self.ctx
        assert ctx is not None
        ctx.final(self, response)

    def finish_cancelled(self, _: Any) -> None:
        self.finish(self._own_response(487))

    def finish_timeout(self, _: Any) -> None:
        self.finish(self._own_response(408))

    def terminate_client(self, _: Any) -> None:
        if self.client is not None:
            self.client.terminate()

    def late_success(self, response: Response) -> None:
        ctx = self.ctx
        if ctx is not None:
            ctx.late_success(self, response)

    def fail_over_or_finish(self, response: Response) -> None:
        if not self._fail_over():
            self.finish(response)

    # -- helpers --------------------------------------------------------------------------

    def _own_response(self, status: int) -> Response:
        ctx = self.ctx
        assert ctx is not None
        return make_response(ctx.request, status, to_tag=ctx.to_tag)

    def _fail_over(self) -> bool:
        """RFC 3263 §4.3: this target failed (transport error, Timer B/F, 503), so the same
        request goes to the next one as a new branch; the caller hears nothing of this one."""
        ctx = self.ctx
        if not self.alternatives or ctx is None or ctx.state != FORWARDING:
            return False
        assert self.template is not None
        successor = Branch(ctx, self.template)
        ctx.branches.append(successor)
        if not successor.launch(self.alternatives):
            ctx.branches.remove(successor)
            return False
        ctx.proxy.log.info("{call_id}: {dest} failed; trying {next}", call_id=ctx.request.call_id,
                           dest=self.dest, next=successor.dest)
        self.template, self.alternatives = None, ()
        self._stop_timer_c()
        return True

    def _arm_timer_c(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        timeout = ctx.proxy.config.timers.invite_timeout
        timer = self.timer_c
        if timer is not None and timer.active():
            timer.reset(timeout)  # moved in place: no new call, no cancelled one left behind
        else:
            self.timer_c = ctx.proxy.clock.callLater(timeout, self._timer_c_fired)

    def _stop_timer_c(self) -> None:
        if self.timer_c is not None and self.timer_c.active():
            self.timer_c.cancel()
        self.timer_c = None


class _IgnoreResponses:
    """The transaction user of our own CANCELs: their answers need no action."""

    def client_response(self, client: Any, response: Response) -> None:
        pass

    def client_timeout(self, client: Any) -> None:
        pass

    def client_error(self, client: Any) -> None:
        pass


IGNORE_RESPONSES = _IgnoreResponses()


# -- the context -----------------------------------------------------------------------------

#: no server transaction: what is refused or challenged is answered once (§16.11)
STATELESS = "STATELESS"
#: accepted: a server transaction absorbs retransmissions, the branches are forwarded
FORWARDING = "FORWARDING"
#: the caller cancelled (or a 6xx came) before the final answer: no further target is tried
CANCELLED = "CANCELLED"
#: the final answer is out; later 2xx responses are still forwarded
ANSWERED = "ANSWERED"

BEGIN = "begin"
START = "start"  # fork to the first group of targets
FINAL = "final"  # a final answer of our own (or the best of the fork)
# SUCCESS, PROVISIONAL and CANCEL as for a branch
EXHAUSTED = "branches done"  # every branch has its final response, none was a 2xx

CONTEXT_TABLE: Table = {
    (STATELESS, BEGIN): (FORWARDING, ("open_server",)),
    (STATELESS, FINAL): (ANSWERED, ("send_stateless",)),

    (FORWARDING, START): (FORWARDING, ("next_group_or_best",)),
    (FORWARDING, PROVISIONAL): (FORWARDING, ("forward_response",)),
    (FORWARDING, SUCCESS): (ANSWERED, ("forward_response", "cancel_others")),
    (FORWARDING, EXHAUSTED): (FORWARDING, ("next_group_or_best",)),
    (FORWARDING, FINAL): (ANSWERED, ("respond_final",)),
    (FORWARDING, CANCEL): (CANCELLED, ("cancel_branches",)),

    (CANCELLED, PROVISIONAL): (CANCELLED, ("forward_response",)),
    (CANCELLED, SUCCESS): (ANSWERED, ("forward_response", "cancel_others")),
    (CANCELLED, EXHAUSTED): (CANCELLED, ("send_best",)),
    (CANCELLED, FINAL): (ANSWERED, ("respond_final",)),
    (CANCELLED, CANCEL): (CANCELLED, ("cancel_branches",)),

    (ANSWERED, PROVISIONAL): (ANSWERED, ()),
    (ANSWERED, SUCCESS): (ANSWERED, ("forward_response",)),
    (ANSWERED, EXHAUSTED): (ANSWERED, ()),
    (ANSWERED, FINAL): (ANSWERED, ()),
    (ANSWERED, CANCEL): (ANSWERED, ("cancel_branches",)),
}


class ProxyContext:
    """The state of one proxied request: its server transaction, branches and best answer."""

    __slots__ = ("proxy", "request", "flow", "dest", "server", "state", "targets", "branches",
                 "responses", "to_tag", "is_dialog", "token")

    def __init__(self, proxy: ProxyServices, request: Request, flow: Flow,
                 dest: Destination):
        self.proxy = proxy
        self.request = request
        self.flow = flow
        self.dest = dest  # where responses go (§18.2.2)
        self.server: Any = None  # made by begin(); until then answers go out statelessly
        self.state = STATELESS
        self.targets: Any = []  # groups of (uri, binding) still to fork to, in turn
        self.branches: List[Branch] = []
        self.responses: Any = []  # the final non-2xx responses so far
        self.to_tag = new_tag()
        self.is_dialog = request.method in ("INVITE", "SUBSCRIBE")
        self.token: Optional[str] = None  # our Record-Route's token, made once for all branches

    def handle(self, event: str, branch: Optional[Branch] = None,
               response: Optional[Response] = None) -> None:
        """Take one event through `CONTEXT_TABLE`: the new state, then its actions."""
        try:
            self.state, actions = _CONTEXT_STEPS[(self.state, event)]
        except KeyError:
            raise UnexpectedEvent("request", self.state, event, self.request.call_id) from None
        for action in actions:
            action(self, branch, response)

    @property
    def final_sent(self) -> bool:
        return self.state == ANSWERED

    # -- what happens to a request (the entry points) -----------------------------------------

    def begin(self) -> None:
        """The request is accepted: from here on a server transaction absorbs its
        retransmissions and retransmits our final answer (an INVITE hears 100 at once)."""
        self.handle(BEGIN)

    def start(self) -> None:
        """Fork to the target set (`targets`, set by the proxy)."""
        self.handle(START)

    def cancel(self) -> None:
        self.handle(CANCEL)

    def send_final(self, response: Response) -> None:
        """The only way a final answer of our own leaves: once (later ones are dropped)."""
        self.handle(FINAL, None, response)

    def respond(self, status: int, reason: Optional[str] = None, headers: Sequence = ()) -> None:
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

    def record_routes(self) -> bool:
        """Does this request's forwarded copy get our Record-Route (§16.6 step 4)?"""
        request = self.request
        return request.method in DIALOG_CREATING and request.to.tag is None

    # what the branches report

    def provisional(self, branch: Branch, response: Response) -> None:
        if response.status == 100:
            return
        if self.is_dialog:
            self.proxy.dialogs.response_seen(self.request, response)
        self.handle(PROVISIONAL, branch, response)

    def late_success(self, branch: Branch, response: Response) -> None:
        """A 2xx retransmission (or a 2xx after we gave up on a branch): always forwarded."""
        if self.request.method == "INVITE":
            self.server.respond(self.proxy.rebind_route_tokens(upstream(response)))

    def final(self, branch: Branch, response: Response) -> None:
        status = response.status
        if self.is_dialog:
            self.proxy.dialogs.response_seen(self.request, response)
        if 200 <= status < 300:
            self.handle(SUCCESS, branch, response)
        else:
            self.responses.append(response)
            if status >= 600:
                self.handle(CANCEL)
            if any(b.state != DONE for b in self.branches):
                return
            self.handle(EXHAUSTED)
        if all(b.state == DONE for b in self.branches):
            self.proxy.context_done(self)

    # -- actions (named in CONTEXT_TABLE) -----------------------------------------------------

    def open_server(self, _branch: Any, _response: Any) -> None:
        self.server = self.proxy.transactions.new_server(self.request, self.dest, self)
        self.proxy.contexts[self.server] = self
        if self.request.method == "INVITE":
            self.respond(100)

    def send_stateless(self, _branch: Any, response: Response) -> None:
        # §16.11: sent once; a retransmitted request is answered again, and the ACK is
        # recognised by its To tag
        self._tag(response, self.proxy.tokens.stateless_tag(self.request))
        self.proxy.send(response, self.dest)

    def respond_final(self, _branch: Any, response: Response) -> None:
        self._tag(response, self.to_tag)
        self.server.respond(response)
        self.proxy.context_done(self)

    def forward_response(self, _branch: Any, response: Response) -> None:
        self.server.respond(self.proxy.rebind_route_tokens(upstream(response)))

    def cancel_others(self, branch: Branch, _response: Any) -> None:
        """The first 2xx of an INVITE ends the fork: the other branches are cancelled."""
        if self.request.method == "INVITE":
            for other in self.branches:
                if other is not branch:
                    other.cancel()
            self.targets = []

    def cancel_branches(self, _branch: Any, _response: Any) -> None:
        self.targets = []
        for branch in self.branches:
            branch.cancel()

    def next_group_or_best(self, _branch: Any, _response: Any) -> None:
        if not self._next_group():
            self.send_best(None, None)  # no target could be tried: answer now (480/503...)

    def send_best(self, _branch: Any, _response: Any) -> None:
        """§16.7 step 6: the best of the final responses, challenges aggregated."""
        self.send_final(best_response(self.request, self.responses, self.to_tag))

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _tag(response: Response, tag: str) -> None:
        if response.to.tag is None and response.status >= 200:
            to = response.to
            to.params["tag"] = tag
            response.set("To", str(to))

    def _next_group(self) -> bool:
        """Fork to the next q-value group; False when nothing was left to try."""
        proxy = self.proxy
        secure = self.request.uri.scheme == "sips"
        while self.targets:
            group, breadths = self._share_breadth(self.targets.pop(0))
            started = 0
            for (uri, binding), breadth in zip(group, breadths):
                out = copy_for_target(self.request, uri, binding)
                out.set("Max-Breadth", breadth)
                hop = proxy.next_hop(out, binding, secure)
                branch = Branch(self, out)
                self.branches.append(branch)
                if isinstance(hop, Resolution):
                    if not hop.done:
                        hop.wait(branch.resolved)  # the branch goes once DNS has answered
                        started += 1
                        continue
                    dests: Sequence[Destination] = hop.targets
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

    def _share_breadth(self, group: list) -> Tuple[list, Sequence[str]]:
        """RFC 5393 §5.3 (`share_breadth`); a group cut short is logged and leaves a 440
        among the responses."""
        breadth = max_breadth(self.request)
        if len(group) > breadth:
            request = self.request
            self.proxy.log.info(
                "Max-Breadth {breadth} of {method} {call_id} allows {breadth} of {count} "
                "targets", breadth=max(breadth, 0), method=request.method,
                call_id=request.call_id, count=len(group))
            self.responses.append(make_response(request, 440, to_tag=self.to_tag))
        return share_breadth(group, breadth)

    # server transaction user callbacks

    def server_timeout(self, server: Any) -> None:
        self.proxy.log.info("No ACK for the final response to {call_id}",
                            call_id=self.request.call_id)

    def server_terminated(self, server: Any) -> None:
        self.proxy.context_done(self)
        self.release_if_finished()

    def trim(self) -> None:
        """The final answer is out (usually every branch is done too). Transactions linger for
        tens of seconds to absorb retransmissions: keep only what late 2xx responses need."""
        self.request.forget_parsed()
        if any(b.state != DONE for b in self.branches):
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


_BRANCH_STEPS = _compile(BRANCH_TABLE, Branch)
_CONTEXT_STEPS = _compile(CONTEXT_TABLE, ProxyContext)

if __doc__:  # not under python -OO
    __doc__ = __doc__.format(
        context_table="\n".join("    " + line for line in describe(CONTEXT_TABLE).splitlines()),
        branch_table="\n".join("    " + line for line in describe(BRANCH_TABLE).splitlines()))
