"""Verifying the CDS client's JWT (cds-hooks.md §8) and the bare 401 that answers every failure.

`JwtVerifier.verify` runs the checks of §8 in order and either returns the claims or raises `AuthError`. The token
itself is never logged, stored or put into an exception: `AuthError.reason` names the failed check only, and the
replay store keeps `(iss, jti)` pairs, never tokens: in the state store shared by replicas (`StoreReplay`, wired
by `service/api/cds.py`), or in memory (`ReplayCache`, one process: unit tests). Keys come only from the JWKS
configured for the issuer (`OLIGOCDS_CDS_TRUSTED_ISSUERS`); the one exception is development mode with an empty
allow-list, where a signed token's own `jku` supplies them (the CDS Hooks sandbox case).

`verify` is synchronous and may fetch a JWKS over the network (first use, hourly refresh, key rotation); call it from
a worker thread (e.g. `starlette.concurrency.run_in_threadpool`) in async routes, or first with `offline=True` on the
event loop, which never loads or waits and raises `KeysNotHeld` when a load is needed. All classes are thread-safe.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import jwt
from fastapi.responses import Response

from service.api.errors import outcome
from service.api.json import fhir_json
from service.store import Store

log = logging.getLogger("oligocds.auth")

_FORBIDDEN_ALG_PREFIXES = ("HS", "NONE")
_MAX_TOKEN_CHARS = 16 * 1024
_MAX_JWKS_BYTES = 256 * 1024
_SPEC_MAX_CLOCK_SKEW_S = 60
_SPEC_MAX_TOKEN_AGE_S = 3600


class AuthError(Exception):
    """A request's credentials were refused. `reason` is for logs only: it is never sent to the client (every
    failure answers the same bare 401) and never contains the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysNotHeld(Exception):
    """`JwtVerifier.verify(..., offline=True)` would have to load a JWKS (or wait for a load under way): nothing
    was checked or recorded; verify again without `offline`, in a worker thread."""


class _SettingsLike(Protocol):
    """The fields of `service.config.Settings` that authentication reads."""

    @property
    def env(self) -> str: ...

    @property
    def cds_trusted_issuers(self) -> str | None: ...

    @property
    def public_base_url(self) -> str | None: ...


def is_url(source: str) -> bool:
    """True when a JWKS source is an http(s) URL; anything else in the allow-list is a file path."""
    return urlsplit(source).scheme in ("http", "https")


def _check_source(issuer: str, source: str) -> None:
    parts = urlsplit(source)
    if "://" in source and parts.scheme not in ("http", "https"):
        raise ValueError(f"JWKS of issuer {issuer!r}: only http(s) URLs or file paths are allowed")
    if is_url(source) and not parts.netloc:
        raise ValueError(f"JWKS of issuer {issuer!r}: URL without host")
    if not source.strip():
        raise ValueError(f"JWKS of issuer {issuer!r}: empty")


def parse_trusted_issuers(text: str | None) -> dict[str, str]:
    """`OLIGOCDS_CDS_TRUSTED_ISSUERS` (JSON object issuer → JWKS URL or file path) as a dict; unset/blank → {}.

    Raises ValueError when the text is not such an object."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"OLIGOCDS_CDS_TRUSTED_ISSUERS is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("OLIGOCDS_CDS_TRUSTED_ISSUERS must be a JSON object: issuer -> JWKS URL or file path")
    issuers: dict[str, str] = {}
    for issuer, source in data.items():
        if not issuer or not isinstance(source, str):
            raise ValueError("OLIGOCDS_CDS_TRUSTED_ISSUERS: every issuer must map to a JWKS URL or file path")
        _check_source(issuer, source)
        issuers[issuer] = source
    return issuers


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """What the verifier needs. Invariants (checked on construction, ValueError otherwise): clock skew 0–60 s, token
    age 1–3600 s (cds-hooks.md §8.6), only asymmetric algorithms, and in production a non-empty allow-list and a
    public base URL (contract.md §7)."""

    development: bool
    trusted_issuers: Mapping[str, str]
    public_base_url: str | None
    clock_skew_s: int = 60
    max_token_age_s: int = 3600
    allowed_algs: frozenset[str] = frozenset({"ES384", "RS384"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_issuers", MappingProxyType(dict(self.trusted_issuers)))
        for issuer, source in self.trusted_issuers.items():
            _check_source(issuer, source)
        if not 0 <= self.clock_skew_s <= _SPEC_MAX_CLOCK_SKEW_S:
            raise ValueError(f"clock skew must be 0..{_SPEC_MAX_CLOCK_SKEW_S} s")
        if not 0 < self.max_token_age_s <= _SPEC_MAX_TOKEN_AGE_S:
            raise ValueError(f"maximum token age must be 1..{_SPEC_MAX_TOKEN_AGE_S} s")
        if not self.allowed_algs or any(a.upper().startswith(_FORBIDDEN_ALG_PREFIXES) for a in self.allowed_algs):
            raise ValueError("allowed JWT algorithms must be a non-empty set of asymmetric algorithms")
        if not self.development and not self.trusted_issuers:
            raise ValueError("OLIGOCDS_CDS_TRUSTED_ISSUERS is required in production")
        if not self.development and not self.public_base_url:
            raise ValueError("OLIGOCDS_PUBLIC_BASE_URL is required in production")

    @staticmethod
    def from_settings(settings: _SettingsLike) -> AuthSettings:
        """From `service.config.Settings`; raises ValueError on a malformed or (in production) missing setting."""
        return AuthSettings(
            development=settings.env == "development",
            trusted_issuers=parse_trusted_issuers(settings.cds_trusted_issuers),
            public_base_url=settings.public_base_url,
        )


# --- JWKS -------------------------------------------------------------------------------------------------------


def _keys_by_kid(document: Any) -> dict[str, dict[str, Any]]:
    """The JWKs of a JWKS document that carry a string `kid`; raises ValueError when it is not a JWKS."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS (an object with a 'keys' array)")
    return {k["kid"]: k for k in document["keys"] if isinstance(k, dict) and isinstance(k.get("kid"), str)}


@dataclass(slots=True)
class _JwksEntry:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded_at: float | None = None  # monotonic time of the last successful load
    attempted_at: float | None = None  # monotonic time of the last load attempt, successful or not
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksCache:
    """Per-source JWKS (source = a JWKS URL or a file path, as configured for an issuer).

    A URL is fetched with httpx (no redirects, bounded size and time) and re-fetched after `ttl_s`; a file is read
    when first needed. For both, an unknown `kid` triggers a reload (key rotation: a key added to the file or the
    URL is found without a restart). Every load of one source, whatever its cause, happens at most once per
    `min_refresh_interval_s`. A failed reload keeps the keys already held.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 3600.0,
        min_refresh_interval_s: float = 60.0,
        timeout_s: float = 2.0,
        client: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._min_interval_s = min_refresh_interval_s
        self._timeout_s = timeout_s
        self._client = client
        self._monotonic = monotonic
        self._entries: dict[str, _JwksEntry] = {}
        self._lock = threading.Lock()

    def key(self, source: str, kid: str) -> dict[str, Any] | None:
        """The JWK with this `kid` from `source` (loading it when needed), or None when the source does not have it
        even after the one refresh allowed now. Raises AuthError when the source cannot be loaded at all."""
        entry = self._entry(source)
        with entry.lock:
            return self._key(source, entry, kid)

    def held_key(self, source: str, kid: str) -> dict[str, Any]:
        """The JWK with this `kid` when it is held and fresh, without loading or waiting for anything (safe on an
        event loop); raises KeysNotHeld when `key` would have to load the source or wait for a load under way."""
        entry = self._entry(source)
        if not entry.lock.acquire(blocking=False):
            raise KeysNotHeld
        try:
            jwk = entry.keys.get(kid) if entry.loaded_at is not None else None
            if jwk is None or (is_url(source) and self._expired(entry)):
                raise KeysNotHeld
            return jwk
        finally:
            entry.lock.release()

    def _key(self, source: str, entry: _JwksEntry, kid: str) -> dict[str, Any] | None:
        """`key` with `entry.lock` held."""
        if entry.loaded_at is None or (is_url(source) and self._expired(entry)):
            self._load(source, entry)
        if kid not in entry.keys:
            self._load(source, entry)
        if entry.loaded_at is None:
            raise AuthError("JWKS unavailable")
        return entry.keys.get(kid)

    def close(self) -> None:
        """Close the HTTP client if this cache created it."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _entry(self, source: str) -> _JwksEntry:
        with self._lock:
            return self._entries.setdefault(source, _JwksEntry())

    def _expired(self, entry: _JwksEntry) -> bool:
        return entry.loaded_at is not None and self._monotonic() - entry.loaded_at >= self._ttl_s

    def _load(self, source: str, entry: _JwksEntry) -> None:
        """Load `source` into `entry` unless a load happened less than the minimum interval ago (or the file was
        already read). Called with `entry.lock` held."""
        now = self._monotonic()
        if entry.attempted_at is not None and now - entry.attempted_at < self._min_interval_s:
            return
        entry.attempted_at = now
        try:
            entry.keys = _keys_by_kid(self._fetch(source) if is_url(source) else _read_file(source))
            entry.loaded_at = now
        except (OSError, ValueError, httpx.HTTPError) as exc:
            log.warning("JWKS load failed for %s: %s", source, type(exc).__name__)

    def _fetch(self, url: str) -> Any:
        client = self._http()
        with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_JWKS_BYTES:
                    raise ValueError("JWKS too large")
        return json.loads(bytes(body))

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout_s, follow_redirects=False)
            return self._client


def _read_file(path: str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- replay -----------------------------------------------------------------------------------------------------


class Replay(Protocol):
    def first_use(self, iss: str, jti: str, *, keep_until: float, now: float) -> bool:
        """Record `(iss, jti)`, kept at least until `keep_until`, and return True; False when held (a replay)."""
        ...


class StoreReplay:
    """The replay store shared by replicas (cds-hooks.md §8 check 8): `(iss, jti)` in the state store of
    `OLIGOCDS_STORE_URL` (`store` opens it on first use). Blocks on database I/O: call it from a worker thread."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def first_use(self, iss: str, jti: str, *, keep_until: float, now: float) -> bool:
        return self._store().remember_jti(iss, jti, keep_until, now)


class ReplayCache:
    """`jti` values seen per issuer, each kept until the moment after which its token would be refused anyway (the
    verifier passes that moment: the longest accepted lifetime of that token). In memory, thread-safe."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}
        self._expiries: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, *, keep_until: float, now: float) -> bool:
        """Record `(iss, jti)` and return True, or return False when it is already held (a replay)."""
        with self._lock:
            self._purge(now)
            if (iss, jti) in self._until:
                return False
            self._until[iss, jti] = keep_until
            heapq.heappush(self._expiries, (keep_until, iss, jti))
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

    def _purge(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, iss, jti = heapq.heappop(self._expiries)
            self._until.pop((iss, jti), None)


# --- verifier ---------------------------------------------------------------------------------------------------


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("Authorization is not a Bearer token")
    if len(token) > _MAX_TOKEN_CHARS:
        raise AuthError("token too long")
    return token


def _unverified(token: str) -> dict[str, Any]:
    """Header and claims of `token`, read without checking the signature: one parse for checks 1 and 2."""
    try:
        decoded: dict[str, Any] = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthError("malformed token") from None
    return decoded


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (seconds since the epoch), None when absent; AuthError when malformed."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(f"{name} is not a NumericDate")
    return float(value)


def _required_numeric(claims: Mapping[str, Any], name: str) -> float:
    value = _numeric(claims, name)
    if value is None:
        raise AuthError(f"{name} missing")
    return value


def _jti(claims: Mapping[str, Any]) -> str:
    """Check 8, first half: `jti` present, a non-empty string."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise AuthError("jti missing or malformed")
    return jti


def _matches_audience(aud: Any, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and all(isinstance(a, str) for a in aud) and audience in aud


class JwtVerifier:
    """The checks of cds-hooks.md §8 over one `Authorization` header. Thread-safe."""

    def __init__(
        self,
        settings: AuthSettings,
        jwks: JwksCache | None = None,
        replay: Replay | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.jwks = jwks if jwks is not None else JwksCache()
        self.replay: Replay = replay if replay is not None else ReplayCache()
        self._now = now
        # (source, kid, alg) → (the JWK, its key object); a dict item write is atomic, so threads may share it
        self._public_keys: dict[tuple[str, str, str], tuple[dict[str, Any], jwt.PyJWK]] = {}

    def verify(
        self, authorization: str | None, audience: str, *, offline: bool = False, replay_check: bool = True
    ) -> dict[str, Any] | None:
        """Return the claims; None when development mode accepts a request without a token; raise AuthError otherwise.

        `authorization` is the raw header value (None when absent); `audience` the exact URL called
        (`audience_for`). On success the token's `jti` is recorded: the same token is refused the next time.
        With `offline` it never loads keys (an event loop may call it): it raises KeysNotHeld, having recorded
        nothing, when the issuer's keys are not held fresh yet. With `replay_check=False` the `jti` is checked
        for presence but neither looked up nor recorded: the caller must then call `check_replay(claims)`
        (the replay store may be a database, which an event loop must not wait for)."""
        if authorization is None:
            if self.settings.development:
                return None
            raise AuthError("Authorization missing")
        token = _bearer_token(authorization)
        unverified = _unverified(token)
        header = self._header(unverified["header"])
        alg, kid = header["alg"], header["kid"]
        iss = self._issuer(unverified["payload"])
        source = self._jwks_source(iss, header.get("jku"))
        claims = self._signed_claims(token, source, kid, alg, offline)
        if claims.get("iss") != iss:
            raise AuthError("iss changed")  # cannot happen for one token; guards the unverified read above
        if not _matches_audience(claims.get("aud"), audience):
            raise AuthError("aud does not match")
        keep_until = self._check_times(claims)
        jti = _jti(claims)
        if replay_check:
            self._check_replay(iss, jti, keep_until)
        return claims

    def check_replay(self, claims: Mapping[str, Any]) -> None:
        """Check 8 for claims `verify(..., replay_check=False)` returned: record `jti` or raise AuthError (a replay).
        May block on the replay store: call it from a worker thread in async code."""
        exp, iat = _required_numeric(claims, "exp"), _required_numeric(claims, "iat")
        self._check_replay(claims["iss"], _jti(claims), self._keep_until(exp, iat))

    def _header(self, header: dict[str, Any]) -> dict[str, Any]:
        """Check 1: typ, kid and alg of the (unverified) JOSE header."""
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise AuthError("typ is not JWT")
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            raise AuthError("kid missing")
        if header.get("alg") not in self.settings.allowed_algs:
            raise AuthError("alg not allowed")
        return header

    def _issuer(self, unverified: Mapping[str, Any]) -> str:
        """Check 2: `iss` (read before the signature, to choose the keys) on the allow-list."""
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError("iss missing")
        if iss not in self.settings.trusted_issuers and not self._jku_supplies_keys():
            raise AuthError("iss not trusted")
        return iss

    def _jku_supplies_keys(self) -> bool:
        return self.settings.development and not self.settings.trusted_issuers

    def _jwks_source(self, iss: str, jku: Any) -> str:
        """Check 3: where the keys come from. A configured URL must equal `jku` when one is sent; a configured file
        (keys exchanged out of band) ignores `jku`, which is never fetched. Development with an empty allow-list
        takes the keys from `jku`, an http(s) URL."""
        if jku is not None and not isinstance(jku, str):
            raise AuthError("jku malformed")
        if self._jku_supplies_keys():
            if jku is None or not is_url(jku):
                raise AuthError("jku missing (development, no allow-list)")
            return jku
        source = self.settings.trusted_issuers[iss]
        if jku is not None and is_url(source) and jku != source:
            raise AuthError("jku differs from the configured JWKS")
        return source

    def _signed_claims(self, token: str, source: str, kid: str, alg: str, offline: bool) -> dict[str, Any]:
        """Check 4: the signature, with key `kid` of the issuer's JWKS, bound to the header's (allowed) `alg`."""
        jwk = self.jwks.held_key(source, kid) if offline else self.jwks.key(source, kid)
        if jwk is None:
            raise AuthError("unknown kid")
        if jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig":
            raise AuthError("key not usable for this alg")
        try:
            key = self._public_key(source, kid, alg, jwk)
            return jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                options={
                    "verify_signature": True,
                    "enforce_minimum_key_length": True,
                    # The claims are checked below, in the order of §8 and on our clock.
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_iss": False,
                    "verify_jti": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"signature not verified ({type(exc).__name__})") from None

    def _public_key(self, source: str, kid: str, alg: str, jwk: dict[str, Any]) -> jwt.PyJWK:
        """The key object of `jwk`, built once per (source, kid, alg) and JWK content (a rotated key is rebuilt)."""
        held = self._public_keys.get((source, kid, alg))
        if held is not None and held[0] == jwk:
            return held[1]
        key = jwt.PyJWK(jwk, algorithm=alg)
        self._public_keys[source, kid, alg] = (dict(jwk), key)
        return key

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        """Check 6: exp, iat and nbf with clock skew. Returns the last moment at which this token is accepted."""
        now, skew = self._now(), self.settings.clock_skew_s
        exp, iat, nbf = _required_numeric(claims, "exp"), _required_numeric(claims, "iat"), _numeric(claims, "nbf")
        if exp <= now - skew:
            raise AuthError("token expired")
        if iat > now + skew:
            raise AuthError("iat in the future")
        if now - iat > self.settings.max_token_age_s + skew:
            raise AuthError("token too old")
        if nbf is not None and nbf > now + skew:
            raise AuthError("token not yet valid (nbf)")
        return self._keep_until(exp, iat)

    def _keep_until(self, exp: float, iat: float) -> float:
        """The last moment at which a token with these `exp` and `iat` is accepted: how long its `jti` is kept."""
        return min(exp, iat + self.settings.max_token_age_s) + self.settings.clock_skew_s

    def _check_replay(self, iss: str, jti: str, keep_until: float) -> None:
        """Check 8: `jti` not seen before for this issuer (recorded when new)."""
        if not self.replay.first_use(iss, jti, keep_until=keep_until, now=self._now()):
            raise AuthError("jti replayed")


# --- FastAPI helpers ----------------------------------------------------------------------------------------------


def audience_for(public_base_url: str, path: str) -> str:
    """The exact `aud` a call to `path` must carry: the configured base URL without trailing slash, plus `path`
    (which starts with "/", e.g. "/cds-services/oligocds-patient-view")."""
    if not path.startswith("/"):
        raise ValueError("path must start with '/'")
    return public_base_url.rstrip("/") + path


def unauthorized() -> Response:
    """The one 401 for every JWT failure: OperationOutcome with issue code `security` and no diagnostics,
    `WWW-Authenticate: Bearer`."""
    response = fhir_json(outcome("security", None), 401)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response
