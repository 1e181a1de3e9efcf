"""TLS certificates and contexts for SIP over TLS and secure WebSocket.

* ``make_self_signed(names, addresses)`` makes a self-signed certificate and
  its key (PEM) with ``cryptography``.
* ``certificate_files(config)`` returns the (certificate, private key) paths
  to use: ``[tls] certificate`` / ``private_key`` when set, otherwise a
  self-signed pair made once in ``state_dir/tls/`` for the first domain, the
  host's names and the listening addresses, and kept there.
* ``TLSContexts(config)`` loads them and builds pyOpenSSL options for Twisted:
  servers (TLS, WSS) and outgoing TLS connections.  TLS 1.2 is the minimum.

``[tls] verify_peers``: outgoing connections (server-to-server links) require
a certificate the peer proves, signed by a trusted authority and naming the
address dialled (service-identity does the name check); incoming TLS
connections ask for a client certificate and reject one that does not
verify (phones without one are still served).  Trusted authorities are the
system's plus every certificate in our own certificate file, so servers
whose certificate files carry the same private CA trust each other.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, cast

from reticulum.addresses import own_address

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = [
    "make_self_signed",
    "certificate_files",
    "TLSContexts",
    "CERT_FILENAME",
    "KEY_FILENAME",
]

CERT_FILENAME = "certificate.pem"
KEY_FILENAME = "private_key.pem"
#: the self-signed certificate's lifetime
VALID_DAYS = 3650


def _host_names(domains: Iterable[str]) -> List[str]:
    names: List[str] = []
    for name in list(domains) + [socket.gethostname(), socket.getfqdn(), "localhost"]:
        name = (name or "").strip().lower().rstrip(".")
        if not name or name in names:
            continue
        try:
            ipaddress.ip_address(name)
            continue
        except ValueError:
            pass
        names.append(name)
    return names


def _addresses(listening: Iterable[str]) -> List[str]:
    out: List[str] = ["127.0.0.1", "::1"]
    for host in listening:
        if host in ("0.0.0.0", "::"):
            found = own_address(ipv6=host == "::")
            host = found or ""
        if host and host not in out:
            out.append(host)
    return out


def make_self_signed(
    names: List[str], addresses: Iterable[str] = (), days: int = VALID_DAYS
) -> Tuple[bytes, bytes]:
    """(certificate PEM, private key PEM): a self-signed ECDSA P-256 certificate
    for ``names`` (the first is the common name) and IP ``addresses``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not names:
        raise ValueError("a certificate needs at least one name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    alt: List[Any] = [x509.DNSName(n) for n in names]
    for a in addresses:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            continue
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def _write_private(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def certificate_files(config: Any) -> Tuple[str, str]:
    """The (certificate, private key) PEM paths; see the module docstring."""
    cert_path, key_path, _made = _certificate_files(config)
    return cert_path, key_path


#: certificates this process made (a daemon's checks make it before twistd forks)
_MADE: set = set()


def _certificate_files(config: Any) -> Tuple[str, str, bool]:
    """certificate_files() and whether the pair was made just now (for the start-up log)."""
    tls = config.tls
    if tls.certificate or tls.private_key:
        if not (tls.certificate and tls.private_key):
            raise ValueError("[tls] certificate and private_key must be given together")
        return tls.certificate, tls.private_key, False
    folder = os.path.join(config.state_dir, "tls")
    cert_path = os.path.join(folder, CERT_FILENAME)
    key_path = os.path.join(folder, KEY_FILENAME)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path, cert_path in _MADE
    os.makedirs(folder, mode=0o700, exist_ok=True)
    hosts = [host for name, (host, _port) in config.listen.items() if name in ("tls", "wss")]
    cert_pem, key_pem = make_self_signed(_host_names(config.domains), _addresses(hosts))
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert_pem)
    _MADE.add(cert_path)
    return cert_path, key_path, True


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError("cannot read the TLS %s %s: %s" % (what, path, e.strerror or e)) from None


class _OwnAndSystemTrust:
    """A trust root: the system's authorities plus the given certificates."""

    def __init__(self, certificates: List[Any]) -> None:
        self.certificates = certificates

    def _addCACertsToContext(self, context: Any) -> None:
        context.set_default_verify_paths()
        store = context.get_cert_store()
        for cert in self.certificates:
            try:
                store.add_cert(cert)
            except Exception:  # already there
                pass


def _implements_trust_root(cls: Any) -> Any:
    from twisted.internet._sslverify import IOpenSSLTrustRoot
    from zope.interface import classImplements

    classImplements(cls, IOpenSSLTrustRoot)
    return cls


class TLSContexts:
    """The certificate, key and the option objects built from them."""

    def __init__(self, config: Any) -> None:
        from OpenSSL import crypto
        from twisted.internet import ssl

        _implements_trust_root(_OwnAndSystemTrust)
        self.verify_peers: bool = bool(config.tls.verify_peers)
        try:
            self.cert_path, self.key_path, self.made = _certificate_files(config)
        except OSError as e:
            where = " in %s" % os.path.dirname(e.filename) if e.filename else ""
            raise ValueError("cannot make a TLS certificate%s: %s" % (where, e.strerror or e)) from None
        cert_data = _read(self.cert_path, "certificate")
        key_data = _read(self.key_path, "private key")
        try:
            chain = _pem_certificates(cert_data)
            if not chain:
                raise ValueError("no certificate in %s" % self.cert_path)
            self.certificate = ssl.Certificate.loadPEM(chain[0])
            self.private_key = ssl.KeyPair.load(key_data, crypto.FILETYPE_PEM)
            self.private = ssl.PrivateCertificate.fromCertificateAndKeyPair(self.certificate, self.private_key)
            self.extra_chain = [ssl.Certificate.loadPEM(c) for c in chain[1:]]
        except ValueError:
            raise
        except Exception as e:
            raise ValueError("cannot load the TLS certificate %s / key %s: %s" % (self.cert_path, self.key_path, e)) from None
        self.trusted = [c.original for c in [self.certificate] + self.extra_chain]
        self._server: Any = None
        self._client_plain: Any = None

    def fingerprint(self) -> str:
        """The certificate's SHA-256 fingerprint, ``AB:CD:...`` (what phones show)."""
        return self.certificate.original.digest("sha256").decode("ascii")

    def expires(self) -> str:
        """The certificate's notAfter as ``YYYY-MM-DD HH:MM:SS UTC``."""
        raw = self.certificate.original.get_notAfter() or b""
        try:
            when = datetime.datetime.strptime(raw.decode("ascii"), "%Y%m%d%H%M%SZ")
        except ValueError:
            return raw.decode("ascii", "replace")
        return when.strftime("%Y-%m-%d %H:%M:%S UTC")

    def describe(self) -> str:
        """One line for the start-up log: path, made or loaded, fingerprint, expiry."""
        return "TLS certificate %s %s, SHA-256 %s, expires %s" % (
            self.cert_path, "made" if self.made else "loaded", self.fingerprint(), self.expires())

    # -- servers

    def server_options(self, ask_peers: Optional[bool] = None) -> Any:
        """Options for a listening socket; ``ask_peers`` (default: verify_peers)
        asks clients for a certificate and checks any they send."""
        from twisted.internet import ssl

        if ask_peers is None:
            ask_peers = self.verify_peers
        kwargs = dict(
            privateKey=self.private_key.original,
            certificate=self.certificate.original,
            extraCertChain=[c.original for c in self.extra_chain],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            enableSessions=False,
        )
        if ask_peers:
            return _ServerAskingPeers(_OwnAndSystemTrust(self.trusted), **kwargs)
        return ssl.CertificateOptions(**kwargs)

    def ws_server_options(self) -> Any:
        """Options for WSS: browsers have no client certificates to ask for."""
        if self._server is None:
            self._server = self.server_options(ask_peers=False)
        return self._server

    # -- clients

    def client_creator(self, host: str) -> Any:
        """An IOpenSSLClientConnectionCreator for an outgoing connection to ``host``."""
        from twisted.internet import ssl

        if self.verify_peers:
            return ssl.optionsForClientTLS(
                host,
                # provides it from TLSContexts() on (classImplements): mypy cannot see that
                trustRoot=cast("IOpenSSLTrustRoot", _OwnAndSystemTrust(self.trusted)),
                clientCertificate=self.private,
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
        if self._client_plain is None:
            self._client_plain = ssl.CertificateOptions(
                privateKey=self.private_key.original,
                certificate=self.certificate.original,
                extraCertChain=[c.original for c in self.extra_chain],
                raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            )
        return self._client_plain


def _server_asking_peers_class() -> Any:
    from OpenSSL import SSL
    from twisted.internet import ssl

    class ServerAskingPeers(ssl.CertificateOptions):
        """Asks the client for a certificate and refuses one that does not verify;
        a client without one is served (Twisted's own options require one)."""

        def __init__(self, trust: Any, **kwargs: Any) -> None:
            ssl.CertificateOptions.__init__(self, **kwargs)
            self._trust = trust

        def _makeContext(self, *args: Any, **kwargs: Any) -> Any:
            ctx = ssl.CertificateOptions._makeContext(self, *args, **kwargs)
            self._trust._addCACertsToContext(ctx)
            ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
            ctx.set_session_id(b"reticulum")
            return ctx

    return ServerAskingPeers


_classes: Dict[str, Any] = {}


def _ServerAskingPeers(trust: Any, **kwargs: Any) -> Any:
    cls = _classes.get("server_asking_peers")
    if cls is None:
        cls = _classes["server_asking_peers"] = _server_asking_peers_class()
    return cls(trust, **kwargs)



def _pem_certificates(data: bytes) -> List[bytes]:
    out = []
    begin = b"-----BEGIN CERTIFICATE-----"
    end = b"-----END CERTIFICATE-----"
    pos = 0
    while True:
        i = data.find(begin, pos)
        if i < 0:
            break
        j = data.find(end, i)
        if j < 0:
            break
        out.append(data[i : j + len(end)] + b"\n")
        pos = j + len(end)
    return out
