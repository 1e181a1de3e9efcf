"""RFC 4475 torture messages: what must parse, what must be refused, what needs an answer.

The 49 messages live in shared/rfc4475 beside the repository (see its README for the
expectations of a proxy/registrar).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from reticulum.sip import (
    ParseError,
    Request,
    Response,
    make_response,
    parse,
    parse_auth,
)

TORTURE = Path(__file__).resolve().parents[2].parent / "shared" / "rfc4475"

VALID = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
         "semiuri", "transports", "mpart01", "unreason", "noreason"]

# name -> (reason, status); every one of them is refused by parse() or validate()
INVALID = {
    "badinv01": ("Bad Via", 400),
    "clerr": ("Incomplete body", 400),
    "ncl": ("Bad Content-Length", 400),
    "scalar02": ("CSeq out of range", 400),
    "scalarlg": ("CSeq out of range", 400),
    "quotbal": ("Unterminated quoted string", 400),
    "ltgtruri": ("Bad Request-URI", 400),
    "lwsruri": ("Bad Request-URI", 400),
    "lwsstart": ("Bad Request-Line", 400),
    "trws": ("Bad Request-Line", 400),
    "escruri": ("Bad Request-URI", 400),
    "baddate": ("Bad Date", 400),
    "regbadct": ("Bad Contact", 400),
    "badaspec": ("Bad To", 400),
    "baddn": ("Bad display name", 400),
    "badvers": ("Version Not Supported", 505),
    "mismatch01": ("CSeq method mismatch", 400),
    "mismatch02": ("CSeq method mismatch", 400),
    "bigcode": ("Bad status code", 400),
}

# These parse; validate() refuses the three whose answer is a 400 for broken framing or
# missing/duplicated headers. The others pass validate(): their answers (416, 420, 483, ...)
# are the core's, made from the parsed message.
SEMANTICS = ["badbranch", "insuf", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01",
             "multi01", "mcl01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01",
             "inv2543"]
SEMANTICS_REFUSED = {"insuf": "Missing To", "multi01": "Multiple To",
                     "mcl01": "Multiple Content-Length"}


def load(name: str) -> bytes:
    if not TORTURE.is_dir():
        pytest.fail("RFC 4475 torture messages not found: expected the folder %s "
                    "(shared/rfc4475 beside the repository)" % TORTURE)
    return (TORTURE / (name + ".dat")).read_bytes()


def test_every_file_is_classified():
    if not TORTURE.is_dir():
        pytest.fail("RFC 4475 torture messages not found in %s" % TORTURE)
    names = {p.stem for p in TORTURE.glob("*.dat")}
    assert len(names) == 49
    assert names == set(VALID) | set(INVALID) | set(SEMANTICS)


def _touch_everything(msg) -> None:
    """Every header is reachable, raw and typed."""
    for name in msg.headers.names():
        assert msg.get_all(name) or msg.get(name) == ""
    msg.vias, msg.via, msg.call_id, msg.cseq, msg.from_, msg.to
    msg.contacts, msg.routes, msg.record_routes, msg.max_forwards, msg.expires


@pytest.mark.parametrize("name", VALID)
def test_valid_messages(name):
    data = load(name)
    msg = parse(data)
    msg.validate()
    _touch_everything(msg)
    out = bytes(msg)
    again = parse(out)
    again.validate()
    assert again == msg
    assert bytes(again) == out
    assert again.vias == msg.vias and again.to == msg.to and again.from_ == msg.from_
    assert again.contacts == msg.contacts and again.cseq == msg.cseq
    assert again.body == msg.body
    # the stream framing gives the same message
    if msg.get("Content-Length") is not None and name != "dblreq":
        assert parse(data, stream=True) == msg


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages(name):
    data = load(name)
    reason, status = INVALID[name]
    try:
        msg = parse(data)
    except ParseError as error:
        assert (error.reason, error.status) == (reason, status)
        if data.startswith(b"SIP/"):
            assert error.partial is None
        else:  # enough was read to answer the request
            partial = error.partial
            assert isinstance(partial, Request)
            response = make_response(partial, error.status, error.reason)
            assert response.status == status and response.reason == reason
            assert response.get("Via") and response.call_id and response.get("CSeq")
            parse(bytes(response))
        return
    with pytest.raises(ParseError) as info:
        msg.validate()
    assert (info.value.reason, info.value.status) == (reason, status)
    if isinstance(msg, Request):
        response = make_response(msg, info.value.status, info.value.reason, to_tag="t1")
        assert parse(bytes(response)).status == status


@pytest.mark.parametrize("name", SEMANTICS)
def test_semantics_messages(name):
    data = load(name)
    msg = parse(data)
    if name in SEMANTICS_REFUSED:
        with pytest.raises(ParseError) as info:
            msg.validate()
        assert info.value.reason == SEMANTICS_REFUSED[name] and info.value.status == 400
        response = make_response(msg, 400, info.value.reason)
        assert response.status == 400
        return
    msg.validate()
    _touch_everything(msg)
    assert parse(bytes(msg)) == msg


def test_dblreq_uses_first_message_only():
    msg = parse(load("dblreq"))
    assert msg.method == "REGISTER" and msg.body == b""


def test_escnull_keeps_escapes():
    msg = parse(load("escnull"))
    assert msg.to.uri.user == "null-%00-null"
    assert [c.uri.user for c in msg.contacts] == ["%00", "%00%00"]
    assert b"\x00" not in bytes(msg)


def test_esc01_and_esc02():
    msg = parse(load("esc01"))
    assert msg.uri.user == "sips%3Auser%40example.com" and msg.uri.host == "example.net"
    assert msg.to.uri.aor() == "sip:user@example.com"
    assert msg.from_.uri.user == "I%20have%20spaces"
    msg = parse(load("esc02"))
    assert msg.method == "RE%47IST%45R" and msg.to.display == "%Z%45"
    assert len(msg.contacts) == 2 and msg.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_wsinv_details():
    msg = parse(load("wsinv"))
    assert msg.max_forwards == 68 and msg.cseq.number == 9
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert [v.branch for v in msg.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert msg.from_.display == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.to.tag == "1918181833n"
    assert msg.contacts[0].display == 'Quoted string ""'
    assert msg.contacts[0].params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.get("Subject") == ""
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"


def test_intmeth_details():
    msg = parse(load("intmeth"))
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~" == msg.cseq.method
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    assert msg.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_mpart01_binary_body():
    msg = parse(load("mpart01"))
    assert len(msg.body) == 553 and msg.via.rport == ""
    assert bytes(msg).endswith(msg.body)


def test_unreason_and_noreason():
    assert parse(load("unreason")).reason.startswith("= 2**3 * 5**2 \u043d\u043e")
    assert parse(load("noreason")).reason == ""


def test_semantic_details():
    assert parse(load("unkscm")).uri.scheme == "nobodyknowsthisscheme"
    assert parse(load("novelsc")).uri.scheme == "soap.beep"
    unksm2 = parse(load("unksm2"))
    assert (unksm2.to.uri.scheme, unksm2.from_.uri.scheme, unksm2.contacts[0].uri.scheme) == \
        ("isbn", "http", "name")
    assert parse(load("bext01")).get_all("Proxy-Require") == ["noProxiesSupportThis",
                                                              "norDoAnyProxiesSupportThis"]
    assert parse_auth(parse(load("regaut01")).get("Authorization"))[0] == "NoOneKnowsThisScheme"
    assert parse(load("zeromf")).max_forwards == 0
    cparam01 = parse(load("cparam01")).contacts[0]
    assert cparam01.params == {"unknownparam": None} and cparam01.uri.params == {}
    cparam02 = parse(load("cparam02")).contacts[0]
    assert cparam02.params == {} and cparam02.uri.params == {"unknownparam": None}
    regescrt = parse(load("regescrt")).contacts[0]
    assert regescrt.uri.headers == "Route=%3Csip:sip.example.com%3E"
    bcast = parse(load("bcast"))
    assert isinstance(bcast, Response) and bcast.vias[1].host == "255.255.255.255"
    inv2543 = parse(load("inv2543"))
    assert inv2543.via.branch is None and inv2543.max_forwards is None
    assert inv2543.body.startswith(b"v=0") and inv2543.get("Content-Length") is None
    badbranch = parse(load("badbranch"))
    assert badbranch.via.branch == "z9hG4bK"
