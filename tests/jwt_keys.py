"""Test helper: key pairs, JWKS files and servers, and JWTs (good and deliberately bad) as a CDS client would send.

Nothing here is used by the service; it mints what `service.api.auth` must accept or refuse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

ISSUER = "https://ehr.example.org"
AUDIENCE = "https://cds.example.org/cds-services/oligocds-patient-view"

_PEM = serialization.PrivateFormat.PKCS8


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A signing key with its public JWK (kid, alg and use set) and public PEM."""

    kid: str
    alg: str
    private_pem: bytes
    public_pem: bytes
    public_jwk: dict[str, Any]


def _pair(kid: str, alg: str, private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> KeyPair:
    public = private.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    return KeyPair(
        kid=kid,
        alg=alg,
        private_pem=private.private_bytes(serialization.Encoding.PEM, _PEM, serialization.NoEncryption()),
        public_pem=public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public_jwk={**jwk, "kid": kid, "alg": alg, "use": "sig"},
    )


def es384_key(kid: str | None = None, curve: ec.EllipticCurve | None = None, alg: str = "ES384") -> KeyPair:
    """A fresh EC key (P-384 unless `curve` says otherwise)."""
    return _pair(kid or f"ec-{uuid.uuid4()}", alg, ec.generate_private_key(curve or ec.SECP384R1()))


def rs384_key(kid: str | None = None, bits: int = 2048) -> KeyPair:
    """A fresh RSA key (2048 bits unless `bits` says otherwise)."""
    return _pair(kid or f"rsa-{uuid.uuid4()}", "RS384", rsa.generate_private_key(public_exponent=65537, key_size=bits))


def jwks(*keys: KeyPair) -> dict[str, Any]:
    """A JWKS document with the public halves of `keys`."""
    return {"keys": [k.public_jwk for k in keys]}


def write_jwks(directory: Path, *keys: KeyPair, name: str = "jwks.json") -> Path:
    """Write the JWKS of `keys` into `directory`; return its path."""
    path = directory / name
    path.write_text(json.dumps(jwks(*keys)), encoding="utf-8")
    return path


def claims(now: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Valid CDS Hooks client claims issued at `now` (default: the wall clock), valid 5 minutes, with a fresh `jti`.
    An override set to None removes that claim."""
    issued = int(time.time() if now is None else now)
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "client-id",
        "aud": AUDIENCE,
        "exp": issued + 300,
        "iat": issued,
        "jti": str(uuid.uuid4()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: KeyPair, payload: dict[str, Any], **headers: Any) -> str:
    """A token signed by `key` (alg = the key's alg, kid and typ set). A header override set to None removes it."""
    header: dict[str, Any] = {"typ": "JWT", "kid": key.kid, "alg": key.alg}
    header.update(headers)
    alg = header.pop("alg")
    kept = {k: v for k, v in header.items() if v is not None or k == "typ"}  # PyJWT drops a falsy typ itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # weak keys are minted on purpose
        return jwt.encode(payload, key.private_pem, algorithm=alg, headers=kept)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def unsigned(payload: dict[str, Any], kid: str = "any") -> str:
    """A hand-built `alg: none` token with an empty signature."""
    return f"{_segment({'typ': 'JWT', 'kid': kid, 'alg': 'none'})}.{_segment(payload)}."


def hs256(secret: bytes, payload: dict[str, Any], kid: str) -> str:
    """A hand-built HS256 token (PyJWT refuses a PEM as an HMAC secret; an attacker does not)."""
    signing_input = f"{_segment({'typ': 'JWT', 'kid': kid, 'alg': 'HS256'})}.{_segment(payload)}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tampered(token: str, **changes: Any) -> str:
    """`token` with its payload changed and its original header and signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{_segment(data)}.{signature}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


class JwksServer:
    """A JWKS served over real HTTP on 127.0.0.1; `document` may be swapped while it runs (key rotation) and
    `requests` counts every GET it answered, whatever the path (unknown paths get 404)."""

    def __init__(self, document: dict[str, Any], path: str = "/.well-known/jwks.json") -> None:
        self.document = document
        self.path = path
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def serve(self, *keys: KeyPair) -> None:
        """From now on, serve the JWKS of `keys`."""
        with self._lock:
            self.document = jwks(*keys)

    def _answer(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
            return (200, json.dumps(self.document).encode()) if path == self.path else (404, b"{}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = owner._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def jwks_server(*keys: KeyPair) -> Iterator[JwksServer]:
    """A running `JwksServer` serving the JWKS of `keys`."""
    server = JwksServer(jwks(*keys)).start()
    try:
        yield server
    finally:
        server.stop()
