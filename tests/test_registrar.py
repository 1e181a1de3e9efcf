"""The registrar: RFC 3261 §10.3, RFC 5626 outbound, RFC 3327 Path."""

from __future__ import annotations

import itertools
from email.utils import parsedate_to_datetime

import pytest
from twisted.internet.task import Clock

from reticulum.location import MemoryLocation, SqliteLocation
from reticulum.registrar import Registrar
from reticulum.sip import parse
from reticulum.addresses import Flow

AOR = "sip:alice@example.com"
LOCAL = ("192.0.2.1", 5060)
UDP = Flow("udp", LOCAL, ("192.0.2.4", 5062))
TCP = Flow("tcp", LOCAL, ("192.0.2.4", 40000), 7)
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"
_branches = itertools.count(1)


def register(
    *contacts,
    expires=None,
    call_id="reg-1@192.0.2.4",
    cseq=1,
    to="sip:alice@example.com",
    supported=None,
    path=(),
    transport="UDP",
    validate=True,
):
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/%s 192.0.2.4:5062;branch=z9hG4bK-%d" % (transport, next(_branches)),
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=f1",
        "To: <%s>" % to,
        "Call-ID: %s" % call_id,
        "CSeq: %d REGISTER" % cseq,
    ]
    lines += ["Path: %s" % p for p in path]
    if supported is not None:
        lines.append("Supported: %s" % supported)
    lines += ["Contact: %s" % c for c in contacts]
    if expires is not None:
        lines.append("Expires: %s" % expires)
    lines += ["Content-Length: 0", "", ""]
    request = parse("\r\n".join(lines).encode())
    if validate:
        request.validate()
    return request


def contacts_of(response):
    """{uri: params} of the Contacts listed in a response."""
    return {str(c.uri): c.params for c in response.contacts}


@pytest.fixture
def clock():
    c = Clock()
    c.advance(1_700_000_000)
    return c


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path, clock):
    s = MemoryLocation() if request.param == "memory" else SqliteLocation(tmp_path, clock=clock)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def registrar(store, clock):
    return Registrar(["example.com", "Example.NET"], store, clock)


# -- the basics ------------------------------------------------------------------------------


def test_register_stores_the_binding_and_lists_it(registrar, store, clock):
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>"), UDP)
    assert response.status == 200
    assert contacts_of(response) == {"sip:alice@192.0.2.4:5062": {"expires": "3600"}}
    (b,) = store.lookup(AOR, clock.seconds())
    assert b.contact == "sip:alice@192.0.2.4:5062"
    assert b.aor == AOR
    assert b.expires_at == clock.seconds() + 3600
    assert (b.call_id, b.cseq, b.flow, b.q) == ("reg-1@192.0.2.4", 1, UDP, 1.0)
    assert b.registered_at == clock.seconds()


def test_the_200_carries_date_supported_and_a_to_tag(registrar, clock):
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>"), UDP)
    date = response.get("Date")
    assert date.endswith(" GMT")
    assert parsedate_to_datetime(date).timestamp() == clock.seconds()
    tags = {t.strip() for v in response.get_all("Supported") for t in v.split(",")}
    assert {"outbound", "path"} <= tags
    assert response.get("Require") is None
    assert response.to.tag
    assert response.call_id == "reg-1@192.0.2.4"
    assert response.cseq.number == 1 and response.cseq.method == "REGISTER"
    assert str(response.to.uri) == AOR


def test_query_lists_bindings_with_remaining_time(registrar, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=600), UDP)
    clock.advance(100)
    response = registrar.handle(register(cseq=2), UDP)
    assert response.status == 200
    assert contacts_of(response) == {"sip:alice@192.0.2.4:5062": {"expires": "500"}}
    assert response.get("Date")


def test_query_of_an_unknown_aor_is_an_empty_200(registrar):
    response = registrar.handle(register(to="sip:bob@example.com"), UDP)
    assert response.status == 200
    assert response.contacts == []


def test_aor_is_canonical_and_domains_match_case_insensitively(registrar, store, clock):
    response = registrar.handle(
        register("<sip:alice@192.0.2.4:5062>", to="sips:alice@EXAMPLE.net;user=phone"), UDP
    )
    assert response.status == 200
    assert len(store.lookup("sip:alice@example.net", clock.seconds())) == 1


def test_to_host_not_served_is_403(registrar, store):
    response = registrar.handle(
        register("<sip:alice@192.0.2.4:5062>", to="sip:alice@elsewhere.org"), UDP
    )
    assert (response.status, response.reason) == (403, "Not a domain served here")
    assert store.count() == 0


def test_to_with_a_tel_uri_is_refused(registrar, store):
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", to="tel:+15551234"), UDP)
    assert response.status == 400
    assert store.count() == 0


def test_several_contacts_in_one_register(registrar, store, clock):
    response = registrar.handle(
        register("<sip:alice@192.0.2.4:5062>;q=0.5", "<sip:alice@192.0.2.5:5062>;expires=120"),
        UDP,
    )
    assert response.status == 200
    listed = contacts_of(response)
    assert listed["sip:alice@192.0.2.4:5062"] == {"expires": "3600", "q": "0.5"}
    assert listed["sip:alice@192.0.2.5:5062"] == {"expires": "120"}
    # ordered by q: the q=1 one first
    assert [b.contact for b in store.lookup(AOR, clock.seconds())] == [
        "sip:alice@192.0.2.5:5062",
        "sip:alice@192.0.2.4:5062",
    ]


# -- expiry ----------------------------------------------------------------------------------


def test_expires_header_is_used(registrar, store, clock):
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=300), UDP)
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["expires"] == "300"


def test_contact_expires_param_wins_over_the_header(registrar, store, clock):
    response = registrar.handle(
        register("<sip:alice@192.0.2.4:5062>;expires=200", expires=300), UDP
    )
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["expires"] == "200"


def test_expires_is_capped_at_max_expires(registrar):
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=999999), UDP)
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["expires"] == "7200"
    response = registrar.handle(
        register("<sip:alice@192.0.2.4:5062>;expires=4294967296", cseq=2), UDP
    )
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["expires"] == "7200"


def test_custom_limits(store, clock):
    registrar = Registrar(["example.com"], store, clock, min_expires=30, max_expires=90,
                          default_expires=60)
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>"), UDP)
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["expires"] == "60"
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=30, cseq=2), UDP)
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["expires"] == "30"
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=29, cseq=3), UDP)
    assert response.status == 423 and response.get("Min-Expires") == "30"


def test_too_brief_is_423_with_min_expires_and_changes_nothing(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=600), UDP)
    response = registrar.handle(
        register("<sip:alice@192.0.2.4:5062>", "<sip:alice@192.0.2.9>;expires=59", cseq=2), UDP
    )
    assert (response.status, response.reason) == (423, "Interval Too Brief")
    assert response.get("Min-Expires") == "60"
    (b,) = store.lookup(AOR, clock.seconds())
    assert b.cseq == 1 and b.expires_at == clock.seconds() + 600


def test_expires_zero_removes_that_contact_only(registrar, store, clock):
    registrar.handle(
        register("<sip:alice@192.0.2.4:5062>", "<sip:alice@192.0.2.5:5062>"), UDP
    )
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>;expires=0", cseq=2), UDP)
    assert response.status == 200
    assert list(contacts_of(response)) == ["sip:alice@192.0.2.5:5062"]
    assert [b.contact for b in store.lookup(AOR, clock.seconds())] == ["sip:alice@192.0.2.5:5062"]
    response = registrar.handle(register("<sip:alice@192.0.2.5:5062>", expires=0, cseq=3), UDP)
    assert response.status == 200 and response.contacts == []
    assert store.count() == 0


def test_removing_an_unknown_contact_is_fine(registrar, store):
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=0), UDP)
    assert response.status == 200 and response.contacts == []
    assert store.count() == 0


def test_bad_expires_param_is_400(registrar, store):
    for bad in ("abc", "-5", "1.5"):
        response = registrar.handle(register("<sip:alice@192.0.2.4:5062>;expires=%s" % bad), UDP)
        assert response.status == 400, bad
    assert store.count() == 0


def test_expired_bindings_are_not_listed_and_do_not_block(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=60, cseq=5), UDP)
    clock.advance(60)
    response = registrar.handle(register(cseq=6), UDP)
    assert response.contacts == []
    # the lapsed binding's CSeq no longer matters
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", cseq=1), UDP)
    assert response.status == 200


# -- q ---------------------------------------------------------------------------------------


def test_q_is_kept_and_echoed(registrar, store, clock):
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>;q=0.25"), UDP)
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["q"] == "0.25"
    assert store.lookup(AOR, clock.seconds())[0].q == 0.25
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>;q=0", cseq=2), UDP)
    assert contacts_of(response)["sip:alice@192.0.2.4:5062"]["q"] == "0"


@pytest.mark.parametrize("q", ["1.5", "-0.1", "abc", "nan", "inf", ""])
def test_bad_q_is_400(registrar, store, q):
    # the core's validate() may refuse some of these first; the registrar must too
    request = register("<sip:alice@192.0.2.4:5062>;q=%s" % q, validate=False)
    response = registrar.handle(request, UDP)
    assert response.status == 400
    assert store.count() == 0


# -- wildcard --------------------------------------------------------------------------------


def test_star_with_expires_zero_removes_everything(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", "<sip:alice@192.0.2.5>"), UDP)
    registrar.handle(register("<sip:bob@192.0.2.7>", to="sip:bob@example.com",
                              call_id="bob-1"), UDP)
    response = registrar.handle(register("*", expires=0, call_id="other", cseq=1), UDP)
    assert response.status == 200
    assert response.contacts == []
    assert store.lookup(AOR, clock.seconds()) == []
    assert len(store.lookup("sip:bob@example.com", clock.seconds())) == 1


@pytest.mark.parametrize(
    "contacts, expires",
    [
        (("*",), None),
        (("*",), 3600),
        (("*", "<sip:alice@192.0.2.4:5062>"), 0),
        (("<sip:alice@192.0.2.4:5062>", "*"), 0),
    ],
)
def test_star_misused_is_400(registrar, store, clock, contacts, expires):
    registrar.handle(register("<sip:alice@192.0.2.9>"), UDP)
    request = register(*contacts, expires=expires, cseq=2, validate=False)
    response = registrar.handle(request, UDP)
    assert response.status == 400
    assert [b.contact for b in store.lookup(AOR, clock.seconds())] == ["sip:alice@192.0.2.9"]


def test_star_out_of_order_is_500_and_removes_nothing(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", cseq=5), UDP)
    response = registrar.handle(register("*", expires=0, cseq=5), UDP)
    assert (response.status, response.reason) == (500, "Out of order")
    assert store.count() == 1
    response = registrar.handle(register("*", expires=0, cseq=6), UDP)
    assert response.status == 200
    assert store.count() == 0


# -- schemes ---------------------------------------------------------------------------------


def test_unknown_contact_scheme_is_refused(registrar, store):
    # RFC 4475 3.3.12 (unksm2): a REGISTER whose Contact uses an unknown scheme
    response = registrar.handle(register("<isbn:2983792873>"), UDP)
    assert response.status == 400
    assert store.count() == 0


def test_one_bad_scheme_spoils_the_whole_register(registrar, store):
    response = registrar.handle(
        register("<sip:alice@192.0.2.4:5062>", "<tel:+15551234>", "<mailto:a@example.com>"), UDP
    )
    assert response.status == 400
    assert store.count() == 0


def test_sips_contact_is_fine(registrar, store, clock):
    response = registrar.handle(register("<sips:alice@192.0.2.4:5061>"), TCP)
    assert response.status == 200
    assert store.lookup(AOR, clock.seconds())[0].contact == "sips:alice@192.0.2.4:5061"


# -- §10.3 step 7 ----------------------------------------------------------------------------


def test_same_call_id_not_higher_cseq_is_500_and_changes_nothing(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=600, cseq=10), UDP)
    for cseq in (10, 9):
        response = registrar.handle(
            register("<sip:alice@192.0.2.4:5062>", "<sip:alice@192.0.2.9>", expires=1200,
                     cseq=cseq),
            UDP,
        )
        assert (response.status, response.reason) == (500, "Out of order")
    (b,) = store.lookup(AOR, clock.seconds())
    assert b.cseq == 10 and b.expires_at == clock.seconds() + 600


def test_same_call_id_higher_cseq_refreshes(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=600, cseq=10), UDP)
    clock.advance(300)
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", expires=600, cseq=11), TCP)
    assert response.status == 200
    (b,) = store.lookup(AOR, clock.seconds())
    assert b.cseq == 11 and b.remaining(clock.seconds()) == 600 and b.flow == TCP


def test_different_call_id_replaces_the_binding(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", cseq=50, call_id="a"), UDP)
    response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", cseq=1, call_id="b"), UDP)
    assert response.status == 200
    assert store.count() == 1
    (b,) = store.lookup(AOR, clock.seconds())
    assert (b.call_id, b.cseq) == ("b", 1)


def test_re_registering_never_grows_the_store(registrar, store, clock):
    for cseq in range(1, 501):
        response = registrar.handle(register("<sip:alice@192.0.2.4:5062>", cseq=cseq), UDP)
        assert response.status == 200
        assert len(response.contacts) == 1
        clock.advance(10)
    assert store.count() == 1


# -- RFC 5626 outbound -------------------------------------------------------------------------


def outbound_contact(uri="sip:alice@192.0.2.4:5062;transport=tcp;ob", reg_id=1):
    return '<%s>;+sip.instance="%s";reg-id=%d' % (uri, INSTANCE, reg_id)


def test_same_instance_and_reg_id_replaces_even_with_another_uri(registrar, store, clock):
    registrar.handle(register(outbound_contact(), supported="outbound, path"), TCP)
    tcp2 = Flow("tcp", LOCAL, ("198.51.100.7", 41000), 8)
    response = registrar.handle(
        register(outbound_contact("sip:alice@198.51.100.7:41000;transport=tcp;ob"),
                 supported="outbound, path", call_id="reg-2", cseq=1),
        tcp2,
    )
    assert response.status == 200
    assert list(contacts_of(response)) == ["sip:alice@198.51.100.7:41000;transport=tcp;ob"]
    (b,) = store.lookup(AOR, clock.seconds())
    assert b.flow == tcp2 and b.reg_id == 1 and b.instance is not None
    assert store.count() == 1


def test_different_reg_id_is_another_binding(registrar, store, clock):
    registrar.handle(register(outbound_contact(reg_id=1), supported="outbound"), TCP)
    tcp2 = Flow("tcp", LOCAL, ("192.0.2.4", 40001), 9)
    response = registrar.handle(
        register(outbound_contact("sip:alice@192.0.2.4:5063;transport=tcp;ob", reg_id=2),
                 supported="outbound", call_id="reg-2"),
        tcp2,
    )
    assert len(response.contacts) == 2
    assert store.count() == 2


def test_outbound_200_requires_outbound_and_echoes_instance_and_reg_id(registrar):
    response = registrar.handle(register(outbound_contact(), supported="path, outbound"), TCP)
    assert response.status == 200
    assert [v.strip().lower() for v in response.get_all("Require")] == ["outbound"]
    (params,) = contacts_of(response).values()
    assert params["reg-id"] == "1"
    assert INSTANCE in params["+sip.instance"]
    assert params["expires"] == "3600"


def test_no_require_outbound_without_supported_outbound(registrar, store):
    response = registrar.handle(register(outbound_contact()), TCP)
    assert response.status == 200
    assert response.get("Require") is None
    assert store.count() == 1


def test_instance_without_reg_id_is_a_plain_binding(registrar, store, clock):
    contact = '<sip:alice@192.0.2.4:5062>;+sip.instance="%s"' % INSTANCE
    response = registrar.handle(register(contact, supported="outbound"), UDP)
    assert response.status == 200
    assert response.get("Require") is None
    (b,) = store.lookup(AOR, clock.seconds())
    assert b.reg_id is None and b.instance is not None


def test_more_than_one_reg_id_contact_with_outbound_is_400(registrar, store):
    response = registrar.handle(
        register(outbound_contact(reg_id=1),
                 outbound_contact("sip:alice@192.0.2.4:5063;transport=tcp;ob", reg_id=2),
                 supported="outbound"),
        TCP,
    )
    assert response.status == 400
    assert store.count() == 0


@pytest.mark.parametrize("reg_id", ["0", "abc", "2147483648"])
def test_bad_reg_id_is_400(registrar, store, reg_id):
    contact = '<sip:alice@192.0.2.4:5062>;+sip.instance="%s";reg-id=%s' % (INSTANCE, reg_id)
    response = registrar.handle(register(contact, supported="outbound"), TCP)
    assert response.status == 400
    assert store.count() == 0


def test_outbound_out_of_order_against_the_replaced_binding(registrar, store, clock):
    registrar.handle(register(outbound_contact(), supported="outbound", cseq=5), TCP)
    response = registrar.handle(
        register(outbound_contact("sip:alice@192.0.2.4:9999;transport=tcp;ob"),
                 supported="outbound", cseq=4),
        TCP,
    )
    assert response.status == 500
    assert [b.contact for b in store.lookup(AOR, clock.seconds())] == [
        "sip:alice@192.0.2.4:5062;transport=tcp;ob"
    ]


def test_outbound_deregistration_by_instance(registrar, store):
    registrar.handle(register(outbound_contact(), supported="outbound", cseq=1), TCP)
    response = registrar.handle(
        register(outbound_contact("sip:alice@192.0.2.4:7777;transport=tcp;ob") + ";expires=0",
                 supported="outbound", cseq=2),
        TCP,
    )
    assert response.status == 200
    assert response.contacts == []
    assert store.count() == 0


# -- RFC 3327 Path ---------------------------------------------------------------------------


PATH = ("<sip:p2.example.com;lr>", "<sip:edge.example.com;lr;ob>")


def test_path_is_stored_and_echoed_when_supported(registrar, store, clock):
    response = registrar.handle(
        register("<sip:alice@10.0.0.5:5060>", supported="path", path=PATH), TCP
    )
    assert response.status == 200
    assert response.get_all("Path") == list(PATH)
    (b,) = store.lookup(AOR, clock.seconds())
    assert b.path == list(PATH)
    # a connection from the edge proxy closing does not cut a binding reached via Path
    assert store.flow_closed(TCP) == []
    assert store.count() == 1


def test_path_without_supported_path_is_not_echoed(registrar, store, clock):
    response = registrar.handle(register("<sip:alice@10.0.0.5:5060>", path=PATH), TCP)
    assert response.status == 200
    assert response.get_all("Path") == []
    # still kept: it is how the contact is reached
    assert store.lookup(AOR, clock.seconds())[0].path == list(PATH)


def test_path_is_replaced_on_re_register(registrar, store, clock):
    registrar.handle(register("<sip:alice@10.0.0.5:5060>", supported="path", path=PATH), TCP)
    registrar.handle(register("<sip:alice@10.0.0.5:5060>", supported="path", cseq=2), UDP)
    assert store.lookup(AOR, clock.seconds())[0].path == []


# -- flows -----------------------------------------------------------------------------------


def test_flow_closed_stops_a_tcp_binding_at_once(registrar, store, clock):
    registrar.handle(register("<sip:alice@10.0.0.5:5060;transport=tcp>", transport="TCP"), TCP)
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", call_id="udp-1"), UDP)
    gone = store.flow_closed(TCP)
    assert [b.contact for b in gone] == ["sip:alice@10.0.0.5:5060;transport=tcp"]
    assert [b.contact for b in store.lookup(AOR, clock.seconds())] == ["sip:alice@192.0.2.4:5062"]
    response = registrar.handle(register(cseq=9, call_id="q"), UDP)
    assert list(contacts_of(response)) == ["sip:alice@192.0.2.4:5062"]
    assert store.flow_closed(UDP) == []


def test_bindings_survive_a_restart_through_the_registrar(tmp_path, clock):
    store = SqliteLocation(tmp_path, clock=clock)
    store.start()
    registrar = Registrar(["example.com"], store, clock)
    registrar.handle(register("<sip:alice@10.0.0.5:5060;transport=tcp>", transport="TCP"), TCP)
    registrar.handle(register("<sip:alice@192.0.2.4:5062>", call_id="udp-1"), UDP)
    store.stop()
    clock.advance(1000)
    store = SqliteLocation(tmp_path, clock=clock)
    store.start()
    try:
        registrar = Registrar(["example.com"], store, clock)
        response = registrar.handle(register(call_id="q"), UDP)
        assert contacts_of(response) == {"sip:alice@192.0.2.4:5062": {"expires": "2600"}}
        # the TCP client comes back on a new connection with a new Call-ID
        tcp2 = Flow("tcp", LOCAL, ("192.0.2.4", 40002), 1)
        response = registrar.handle(
            register("<sip:alice@10.0.0.5:5060;transport=tcp>", transport="TCP",
                     call_id="new"), tcp2
        )
        assert len(response.contacts) == 2
        assert store.count() == 2
    finally:
        store.stop()


# -- RFC 4475 torture messages -----------------------------------------------------------------

UNKSM2 = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"To: isbn:2983792873\r\n"
    b"From: <http://www.example.com>;tag=3234233\r\n"
    b"Call-ID: unksm2.daksdj@hyphenated.example.com\r\n"
    b"CSeq: 234902 REGISTER\r\n"
    b"Max-Forwards: 70\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw\r\n"
    b"Contact: <name@example.com>\r\n"
    b"l: 0\r\n"
    b"\r\n"
)


@pytest.mark.parametrize(
    "raw",
    [UNKSM2, UNKSM2.replace(b"To: isbn:2983792873", b"To: <sip:alice@example.com>")],
    ids=["as-is", "with-sip-to"],
)
def test_unksm2_is_refused_without_crashing(registrar, store, raw):
    # RFC 4475 3.3.12: To and Contact with unknown schemes (or none); the registrar answers
    # 400 even when handed the request unvalidated
    response = registrar.handle(parse(raw), UDP)
    assert response.status == 400
    assert store.count() == 0


# -- Contact or flow (RFC 3261 §10, §16.5; RFC 5626) -------------------------------------------

from reticulum.registrar import flow_bound, nat_evident  # noqa: E402
from reticulum.sip import parse_uri  # noqa: E402


@pytest.mark.parametrize("contact, source, evident", [
    ("192.168.1.20", "203.0.113.7", True),     # RFC 1918 behind a public source
    ("10.1.2.3", "198.51.100.1", True),
    ("172.16.0.9", "203.0.113.7", True),
    ("172.31.255.1", "203.0.113.7", True),
    ("100.64.0.5", "203.0.113.7", True),       # RFC 6598 shared address space
    ("100.127.255.254", "203.0.113.7", True),
    ("192.168.1.20", "192.168.1.20", False),   # same address (another port is not NAT)
    ("192.168.1.20", "10.0.0.1", False),       # both private: a LAN, routable as written
    ("192.168.1.20", "100.64.0.1", False),
    ("203.0.113.9", "198.51.100.1", False),    # a public Contact: reachable as written
    ("172.32.0.1", "203.0.113.7", False),      # just outside 172.16/12
    ("100.128.0.1", "203.0.113.7", False),     # just outside 100.64/10
    ("127.0.0.1", "127.0.0.2", False),
    ("phone.example.com", "203.0.113.7", False),
    ("192.168.1.20", "::ffff:203.0.113.7", True),
    ("fd00::1", "2001:db8::1", False),         # the rule is about IPv4 NAT
])
def test_nat_rule(contact, source, evident):
    assert nat_evident(contact, source) is evident


PUBLIC_UDP = Flow("udp", LOCAL, ("203.0.113.7", 5062))


@pytest.mark.parametrize("contact, instance, reg_id, flow, nat, bound", [
    ("sip:alice@192.0.2.4:5070", None, None, UDP, "auto", False),   # same IP, other port
    ("sip:alice@198.51.100.2:5060", None, None, UDP, "auto", False),  # registered for another
    ("sip:alice@192.168.1.20:5060", None, None, PUBLIC_UDP, "auto", True),  # NAT
    ("sip:alice@192.168.1.20:5060", None, None, PUBLIC_UDP, "never", False),
    ("sip:alice@192.0.2.4:5062", None, None, UDP, "always", True),
    ("sip:alice@192.0.2.4:5062", INSTANCE, 1, UDP, "auto", True),     # RFC 5626 outbound
    ("sip:alice@192.0.2.4:5062", INSTANCE, 1, UDP, "never", True),
    ("sip:alice@192.0.2.4:5062", INSTANCE, None, UDP, "auto", False),  # instance alone
    ("sip:k3j2@df7jal23ls0d.invalid;transport=ws", None, None, TCP, "never", True),
    ("sip:alice@192.0.2.4:5062;transport=wss", None, None, TCP, "auto", True),
    ("sip:alice@192.0.2.4:5063;transport=tcp", None, None, TCP, "auto", False),
    ("sip:alice@10.0.0.5:5060;transport=tcp", None, None, TCP, "auto", True),  # NAT
    ("sip:alice@10.0.0.5:5060", None, None, None, "always", False),   # no flow to use
])
def test_flow_bound_rule(contact, instance, reg_id, flow, nat, bound):
    assert flow_bound(parse_uri(contact), instance, reg_id, flow, nat) is bound


def test_a_contact_registered_from_another_port_is_not_flow_bound(registrar, store, clock):
    registrar.handle(register("<sip:alice@192.0.2.4:5070>"), UDP)
    (b,) = store.lookup(AOR, clock.seconds())
    assert not b.flow_bound and b.flow == UDP


def test_nat_modes(store, clock):
    for nat, bound in (("auto", True), ("never", False), ("always", True)):
        registrar = Registrar(["example.com"], store, clock, nat=nat)
        registrar.handle(register("<sip:alice@192.168.1.20:5060>", call_id=nat), PUBLIC_UDP)
        assert store.get(AOR, "sip:alice@192.168.1.20:5060").flow_bound is bound, nat
    with pytest.raises(ValueError):
        Registrar(["example.com"], store, clock, nat="sometimes")


def test_a_tcp_binding_with_a_reachable_contact_survives_its_connection(registrar, store, clock):
    public_tcp = Flow("tcp", LOCAL, ("203.0.113.7", 40000), 8)
    registrar.handle(register("<sip:alice@192.0.2.4:5063;transport=tcp>", transport="TCP"), TCP)
    registrar.handle(register("<sip:alice@192.168.1.20:5063;transport=tcp>", transport="TCP",
                              call_id="nat"), public_tcp)
    registrar.handle(register("<sip:alice@192.0.2.4:5064;transport=tcp>;reg-id=1;"
                              "+sip.instance=\"%s\"" % INSTANCE, transport="TCP",
                              supported="outbound", call_id="ob"), TCP)
    assert [b.contact for b in store.flow_closed(TCP)] == [
        "sip:alice@192.0.2.4:5064;transport=tcp"]
    assert [b.contact for b in store.flow_closed(public_tcp)] == [
        "sip:alice@192.168.1.20:5063;transport=tcp"]
    assert [b.contact for b in store.lookup(AOR, clock.seconds())] == [
        "sip:alice@192.0.2.4:5063;transport=tcp"]


def test_flow_bound_survives_a_restart(tmp_path, clock):
    store = SqliteLocation(tmp_path, clock=clock)
    store.start()
    registrar = Registrar(["example.com"], store, clock)
    registrar.handle(register("<sip:alice@192.0.2.4:5063;transport=tcp>", transport="TCP"), TCP)
    registrar.handle(register("<sip:alice@x.invalid;transport=ws>", transport="TCP",
                              call_id="ws"), TCP)
    store.stop()
    store = SqliteLocation(tmp_path, clock=clock)
    store.start()
    try:
        reached = store.get(AOR, "sip:alice@192.0.2.4:5063;transport=tcp")
        assert not reached.flow_bound and reached.reachable  # its Contact is dialled anew
        tied = store.get(AOR, "sip:alice@x.invalid;transport=ws")
        assert tied.flow_bound and not tied.reachable  # its connection is gone
    finally:
        store.stop()


def test_a_database_without_the_flow_bound_column_is_upgraded(tmp_path, clock):
    import sqlite3

    db = sqlite3.connect(str(tmp_path / "reticulum.sqlite3"))
    db.execute(
        "CREATE TABLE bindings (aor TEXT NOT NULL, contact TEXT NOT NULL, expires_at REAL NOT "
        "NULL, q REAL NOT NULL, call_id TEXT NOT NULL, cseq INTEGER NOT NULL, instance TEXT, "
        "reg_id INTEGER, path TEXT NOT NULL, params TEXT NOT NULL, registered_at REAL NOT NULL, "
        "transport TEXT, local_host TEXT, local_port INTEGER, remote_host TEXT, remote_port "
        "INTEGER, conn INTEGER, PRIMARY KEY (aor, contact))")
    db.execute("INSERT INTO bindings VALUES (?, ?, ?, 1.0, 'c', 1, NULL, NULL, '[]', '', ?, "
               "'udp', '192.0.2.1', 5060, '192.0.2.4', 5062, 0)",
               (AOR, "sip:alice@192.0.2.4:5062", clock.seconds() + 100, clock.seconds()))
    db.commit()
    db.close()
    store = SqliteLocation(tmp_path, clock=clock)
    store.start()
    try:
        (b,) = store.lookup(AOR, clock.seconds())
        assert b.flow_bound  # as every binding was before
        Registrar(["example.com"], store, clock).handle(
            register("<sip:alice@192.0.2.4:5070>", call_id="n"), UDP)
        assert store.flush(5)
    finally:
        store.stop()
