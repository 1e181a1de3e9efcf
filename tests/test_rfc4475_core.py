"""The RFC 4475 torture messages fed through the whole core, as they would arrive over UDP:
each gets the answer a proxy/registrar owes it (see ../shared/rfc4475/README.md), and none
crashes anything or leaves a transaction behind."""
from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from reticulum.config import config_from_dict
from reticulum.service import build_core
from reticulum.location import Binding, MemoryLocation
from reticulum.sip import Request
from reticulum.addresses import Flow
from tests.proxy.test_proxy import PROXY, RecordingTransports, _Accounts

TORTURE = Path(__file__).resolve().parents[2] / "shared" / "rfc4475"
PEER = Flow("udp", PROXY, ("192.0.2.50", 5060))
CALLEE = Flow("udp", PROXY, ("127.0.0.1", 7000))

# file -> what must happen: a status answered to the sender, "forwarded" (sent on to the
# callee), "dropped" (nothing sent at all), or "handled" (routed like any request: no 400;
# their foreign hosts need DNS, which this server does not do yet).
EXPECTED = {
    # valid: parse and handle
    "wsinv.dat": "handled", "intmeth.dat": "handled", "esc01.dat": "handled",
    "escnull.dat": "handled", "esc02.dat": "handled", "lwsdisp.dat": "forwarded",
    "longreq.dat": "forwarded", "dblreq.dat": "handled", "semiuri.dat": "handled",
    "transports.dat": "forwarded", "mpart01.dat": "handled", "unreason.dat": "dropped",
    "noreason.dat": "dropped",
    # invalid: rejected
    "badinv01.dat": 400, "clerr.dat": 400, "ncl.dat": 400, "scalar02.dat": 400,
    "scalarlg.dat": "dropped", "quotbal.dat": 400, "ltgtruri.dat": 400, "lwsruri.dat": 400,
    "lwsstart.dat": 400, "trws.dat": 400, "escruri.dat": 400, "baddate.dat": 400,
    "regbadct.dat": 400, "badaspec.dat": 400, "baddn.dat": 400, "badvers.dat": 505,
    "mismatch01.dat": 400, "mismatch02.dat": 400, "bigcode.dat": "dropped",
    # semantics
    "badbranch.dat": "forwarded", "insuf.dat": 400, "unkscm.dat": 416, "novelsc.dat": 416,
    "unksm2.dat": (400, 403, 404), "bext01.dat": 420, "invut.dat": "forwarded",
    "regaut01.dat": 401, "multi01.dat": 400, "mcl01.dat": 400, "bcast.dat": "dropped",
    "zeromf.dat": 483, "cparam01.dat": (200, 401), "cparam02.dat": (200, 401),
    "regescrt.dat": (200, 400, 401), "sdp01.dat": "forwarded", "inv2543.dat": "handled",
}


def make_core(tmp_path, auth=True):
    config = config_from_dict({
        "domains": ["example.com"],
        "state_dir": str(tmp_path),
        "listen": {"udp": ["127.0.0.1:5060"]},
        "auth": {"enabled": auth},
    }, base_dir=str(tmp_path))
    clock = Clock()
    clock.advance(1_800_000_000)
    net = RecordingTransports()
    core = build_core(config, clock, net, location=MemoryLocation(), accounts=_Accounts(["user"]))
    core.start()
    core.location.put(Binding(aor="sip:user@example.com", contact="sip:user@127.0.0.1:7000",
                              expires_at=clock.seconds() + 3600, flow=CALLEE,
                              registered_at=clock.seconds()))
    return core, clock, net


def test_every_file_is_covered():
    assert TORTURE.is_dir(), "RFC 4475 messages not found at %s" % TORTURE
    assert sorted(EXPECTED) == sorted(p.name for p in TORTURE.glob("*.dat"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message(tmp_path, name):
    expected = EXPECTED[name]
    core, clock, net = make_core(tmp_path, auth=(name == "regaut01.dat"))
    data = (TORTURE / name).read_bytes()
    core.message_received(data, PEER)
    sent = net.take()
    answers = [m.status for m, flow in sent if not isinstance(m, Request)
               and flow.remote != CALLEE.remote]
    forwarded = [m for m, flow in sent if isinstance(m, Request) and flow.remote == CALLEE.remote]
    for message, flow in sent:
        assert flow.remote[0] != "255.255.255.255"
    finals = [s for s in answers if s >= 200]
    if expected == "dropped":
        assert sent == []
    elif expected == "forwarded":
        assert forwarded, answers
        assert all(s < 300 for s in finals)
    elif expected == "handled":
        # parsed and routed: no 400; a name this server cannot resolve may end in 500
        assert 400 not in finals
    else:
        codes = expected if isinstance(expected, tuple) else (expected,)
        assert finals and finals[-1] in codes, (answers, sent)
        assert not forwarded
        if finals[-1] == 400:
            reply = [m for m, _ in sent if not isinstance(m, Request)][-1]
            assert reply.reason and reply.reason != "Bad Request", reply.reason
    # whatever happened, nothing is left behind once the timers ran out
    for _ in range(20):
        clock.advance(10)
    for message, flow in net.take():  # answer anything still waiting downstream
        pass
    assert len(core.transactions) == 0 or expected in ("forwarded", "handled")
