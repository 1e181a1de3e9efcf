"""HTTP Digest arithmetic for SIP (RFC 2617, RFC 7616, RFC 8760). Standard library only.

    HA1 = H(username ":" realm ":" password)
    HA1-sess = H(HA1 ":" nonce ":" cnonce)           (the "-sess" algorithms)
    HA2 = H(method ":" uri)                          (qop=auth or no qop)
    HA2 = H(method ":" uri ":" H(body))              (qop=auth-int)
    response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)   (with qop)
    response = H(HA1 ":" nonce ":" HA2)                             (RFC 2069, no qop)

Every hash is written as lowercase hex. Strings are encoded as UTF-8.
"""
from __future__ import annotations

import hashlib
import hmac

# Algorithm token (as written in the `algorithm` parameter, upper case) -> hashlib name.
_HASHES = {
    "MD5": "md5",
    "SHA-256": "sha256",
    "SHA-512-256": "sha512_256",
}


def _available(name: str) -> bool:
    try:
        hashlib.new(name, b"")
    except (ValueError, TypeError):
        return False
    return True


_AVAILABLE = {name: _available(name) for name in _HASHES.values()}
_CONSTRUCTORS = {name: getattr(hashlib, name, None) or (lambda data, _n=name: hashlib.new(_n, data))
                 for name in _HASHES.values()}

SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    token
    for base, hash_name in _HASHES.items()
    if _available(hash_name)
    for token in (base, base + "-sess")
)
SUPPORTED_QOPS = ("auth", "auth-int")


def normalize_algorithm(algorithm: str | None) -> str:
    """The canonical spelling of an algorithm token ("md5-SESS" -> "MD5-sess").

    An absent algorithm means MD5 (RFC 2617 §3.2.1). Raises ValueError for unknown ones."""
    if algorithm is None or algorithm == "":
        return "MD5"
    token = algorithm.strip().upper()
    sess = token.endswith("-SESS")
    if sess:
        token = token[: -len("-SESS")]
    if token not in _HASHES or not _AVAILABLE[_HASHES[token]]:
        raise ValueError("unsupported digest algorithm: %r" % (algorithm,))
    return token + "-sess" if sess else token


def base_algorithm(algorithm: str | None) -> str:
    """The algorithm whose HA1 is stored for `algorithm` ("SHA-256-sess" -> "SHA-256")."""
    token = normalize_algorithm(algorithm)
    return token[: -len("-sess")] if token.endswith("-sess") else token


def _to_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def hash_hex(algorithm: str | None, data: str | bytes) -> str:
    """H(data) for the algorithm, as lowercase hex."""
    return _CONSTRUCTORS[_HASHES[base_algorithm(algorithm)]](_to_bytes(data)).hexdigest()


def ha1(user: str, realm: str, password: str, algorithm: str | None = "MD5") -> str:
    """H(user:realm:password) — what is stored instead of the password.

    For a "-sess" algorithm this is still the plain HA1 of its base algorithm: the session
    key also needs the nonce and cnonce, and `response` derives it."""
    return hash_hex(algorithm, "%s:%s:%s" % (user, realm, password))


def session_ha1(ha1_hex: str, nonce: str, cnonce: str, algorithm: str | None) -> str:
    """The HA1 actually used in `response`: H(HA1:nonce:cnonce) for "-sess", else HA1."""
    if normalize_algorithm(algorithm).endswith("-sess"):
        return hash_hex(algorithm, "%s:%s:%s" % (ha1_hex, nonce, cnonce))
    return ha1_hex


def response(
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None,
    cnonce: str | None,
    qop: str | None,
    algorithm: str | None = "MD5",
    body: bytes = b"",
) -> str:
    """The request-digest a client sends in `response` (RFC 7616 §3.4.1).

    `ha1` is the stored HA1 (not the session one). `qop` is "auth", "auth-int", or None/""
    for the RFC 2069 form (then `nc` and `cnonce` are ignored, unless the algorithm is a
    "-sess" one, which needs `cnonce`)."""
    algorithm = normalize_algorithm(algorithm)
    key = session_ha1(ha1, nonce, cnonce or "", algorithm)
    if qop:
        qop = qop.lower()
        if qop not in SUPPORTED_QOPS:
            raise ValueError("unsupported qop: %r" % (qop,))
    if qop == "auth-int":
        ha2 = hash_hex(algorithm, "%s:%s:%s" % (method, uri, hash_hex(algorithm, body)))
    else:
        ha2 = hash_hex(algorithm, "%s:%s" % (method, uri))
    if qop:
        return hash_hex(
            algorithm, "%s:%s:%s:%s:%s:%s" % (key, nonce, nc or "", cnonce or "", qop, ha2)
        )
    return hash_hex(algorithm, "%s:%s:%s" % (key, nonce, ha2))


def equal(expected: str, given: str) -> bool:
    """Constant-time comparison of two hex digests (case-insensitive on `given`)."""
    return hmac.compare_digest(_to_bytes(expected.lower()), _to_bytes(given.lower()))
