"""JWT verification of CDS Hooks calls (cds-hooks.md §8): every check, in production and development, with JWKS from
files and from a real HTTP server (key rotation, rate-limited refresh)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from service.api.auth import (
    AuthError,
    AuthSettings,
    JwksCache,
    JwtVerifier,
    KeysNotHeld,
    ReplayCache,
    audience_for,
    parse_trusted_issuers,
    unauthorized,
)
from service.config import Settings
from tests.conftest import shared_dir
from tests.jwt_keys import (
    AUDIENCE,
    ISSUER,
    KeyPair,
    bearer,
    claims,
    es384_key,
    hs256,
    jwks_server,
    mint,
    rs384_key,
    tampered,
    unsigned,
    write_jwks,
)

NOW = 1_800_000_000.0
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


@dataclass
class Clock:
    """Wall clock for the verifier and monotonic clock for the JWKS cache, moved by the test."""

    t: float = NOW

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True)
class Keys:
    es: KeyPair
    rs: KeyPair
    other_es: KeyPair


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(es=es384_key("es-1"), rs=rs384_key("rs-1"), other_es=es384_key("es-2"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    return write_jwks(tmp_path, keys.es, keys.rs)


@pytest.fixture
def cache(clock: Clock) -> Iterator[JwksCache]:
    c = JwksCache(monotonic=clock)
    yield c
    c.close()


def verifier(
    issuers: dict[str, str], clock: Clock, cache: JwksCache, *, development: bool = False, **kw: Any
) -> JwtVerifier:
    settings = AuthSettings(development=development, trusted_issuers=issuers, public_base_url="https://cds", **kw)
    return JwtVerifier(settings, jwks=cache, now=clock)


@pytest.fixture
def prod(jwks_file: Path, clock: Clock, cache: JwksCache) -> JwtVerifier:
    return verifier({ISSUER: str(jwks_file)}, clock, cache)


def refused(v: JwtVerifier, authorization: str | None, audience: str = AUDIENCE) -> str:
    with pytest.raises(AuthError) as info:
        v.verify(authorization, audience)
    return info.value.reason


# --- valid tokens -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["es", "rs"])
def test_valid_es384_and_rs384_tokens_return_the_claims(prod: JwtVerifier, keys: Keys, which: str) -> None:
    key = getattr(keys, which)
    payload = claims(NOW, tenant="t1")
    result = prod.verify(bearer(mint(key, payload)), AUDIENCE)
    assert result == payload
    assert jwt.get_unverified_header(mint(key, payload))["alg"] == ("ES384" if which == "es" else "RS384")


def test_bearer_scheme_is_case_insensitive(prod: JwtVerifier, keys: Keys) -> None:
    assert prod.verify("bearer " + mint(keys.es, claims(NOW)), AUDIENCE) is not None


def test_audience_as_a_list_containing_the_url_passes(prod: JwtVerifier, keys: Keys) -> None:
    payload = claims(NOW, aud=["https://other.example", AUDIENCE])
    assert prod.verify(bearer(mint(keys.es, payload)), AUDIENCE) == payload


# --- check 1: header ----------------------------------------------------------------------------------------------


def test_alg_none_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    assert refused(prod, bearer(unsigned(claims(NOW), kid=keys.es.kid))) == "alg not allowed"


def test_hs256_signed_with_the_public_key_pem_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    for key in (keys.es, keys.rs):
        token = hs256(key.public_pem, claims(NOW), kid=key.kid)
        assert refused(prod, bearer(token)) == "alg not allowed"


def test_other_asymmetric_alg_is_refused_unless_allowed(prod: JwtVerifier, tmp_path: Path, clock: Clock) -> None:
    p256 = es384_key("p256", curve=ec.SECP256R1(), alg="ES256")
    path = write_jwks(tmp_path, p256, name="p256.json")
    token = mint(p256, claims(NOW))
    strict = verifier({ISSUER: str(path)}, clock, JwksCache())
    assert refused(strict, bearer(token)) == "alg not allowed"
    relaxed = verifier({ISSUER: str(path)}, clock, JwksCache(), allowed_algs=frozenset({"ES256"}))
    assert relaxed.verify(bearer(token), AUDIENCE) is not None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({"typ": None}, "typ is not JWT"), ({"typ": "at+jwt"}, "typ is not JWT"), ({"kid": None}, "kid missing")],
)
def test_header_typ_and_kid_are_required(prod: JwtVerifier, keys: Keys, headers: dict[str, Any], reason: str) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW), **headers))) == reason


@pytest.mark.parametrize("authorization", ["", "Bearer", "Basic dXNlcjpwdw==", "Bearer a.b", "Bearer x y", "Token t"])
def test_malformed_authorization_is_refused(prod: JwtVerifier, authorization: str) -> None:
    refused(prod, authorization)


# --- check 2: issuer ----------------------------------------------------------------------------------------------


def test_unknown_issuer_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW, iss="https://evil.example")))) == "iss not trusted"


def test_missing_issuer_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW, iss=None)))) == "iss missing"


def test_a_trusted_issuer_cannot_use_another_issuers_keys(tmp_path: Path, keys: Keys, clock: Clock) -> None:
    mine, theirs = write_jwks(tmp_path, keys.es, name="a.json"), write_jwks(tmp_path, keys.other_es, name="b.json")
    v = verifier({ISSUER: str(mine), "https://b.example": str(theirs)}, clock, JwksCache())
    token = mint(keys.es, claims(NOW, iss="https://b.example"))
    assert refused(v, bearer(token)) == "unknown kid"


# --- check 3: jku -------------------------------------------------------------------------------------------------


def test_jku_must_equal_the_configured_url(keys: Keys, clock: Clock, cache: JwksCache) -> None:
    with jwks_server(keys.es) as server:
        v = verifier({ISSUER: server.url}, clock, cache)
        assert v.verify(bearer(mint(keys.es, claims(NOW), jku=server.url)), AUDIENCE) is not None
        other = server.url.replace("/.well-known/jwks.json", "/attacker.json")
        assert refused(v, bearer(mint(keys.es, claims(NOW), jku=other))) == "jku differs from the configured JWKS"
        assert refused(v, bearer(mint(keys.es, claims(NOW), jku=server.url + "/"))) == (
            "jku differs from the configured JWKS"
        )
        assert server.requests == 1


def test_jku_is_never_fetched_when_the_issuer_has_a_jwks_file(prod: JwtVerifier, keys: Keys) -> None:
    with jwks_server(keys.other_es) as server:
        assert prod.verify(bearer(mint(keys.es, claims(NOW), jku=server.url)), AUDIENCE) is not None
        assert refused(prod, bearer(mint(keys.other_es, claims(NOW), jku=server.url))) == "unknown kid"
        assert server.requests == 0


# --- check 4: signature -------------------------------------------------------------------------------------------


def test_tampered_payload_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    token = mint(keys.es, claims(NOW, sub="client-id"))
    assert refused(prod, bearer(tampered(token, sub="admin"))).startswith("signature not verified")
    token = mint(keys.rs, claims(NOW, aud="https://elsewhere"))
    assert refused(prod, bearer(tampered(token, aud=AUDIENCE))).startswith("signature not verified")


def test_token_signed_by_another_key_under_a_known_kid_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    forged = mint(keys.other_es, claims(NOW), kid=keys.es.kid)
    assert refused(prod, bearer(forged)).startswith("signature not verified")


def test_key_and_alg_must_match(prod: JwtVerifier, keys: Keys) -> None:
    """An RS384 token naming the EC key, and the reverse, are refused (no algorithm confusion)."""
    assert refused(prod, bearer(mint(keys.rs, claims(NOW), kid=keys.es.kid))) == "key not usable for this alg"
    assert refused(prod, bearer(mint(keys.es, claims(NOW), kid=keys.rs.kid))) == "key not usable for this alg"


def test_jwk_without_alg_still_binds_kty_and_curve(tmp_path: Path, keys: Keys, clock: Clock) -> None:
    bare = {k: v for k, v in keys.es.public_jwk.items() if k != "alg"}
    path = tmp_path / "bare.json"
    path.write_text(json.dumps({"keys": [bare]}), encoding="utf-8")
    v = verifier({ISSUER: str(path)}, clock, JwksCache())
    assert v.verify(bearer(mint(keys.es, claims(NOW))), AUDIENCE) is not None
    confused = mint(keys.rs, claims(NOW), kid=keys.es.kid)  # RS384 against an EC key
    assert refused(v, bearer(confused)).startswith("signature not verified")


def test_encryption_keys_are_not_used_for_signatures(tmp_path: Path, keys: Keys, clock: Clock) -> None:
    path = tmp_path / "enc.json"
    path.write_text(json.dumps({"keys": [{**keys.es.public_jwk, "use": "enc"}]}), encoding="utf-8")
    v = verifier({ISSUER: str(path)}, clock, JwksCache())
    assert refused(v, bearer(mint(keys.es, claims(NOW)))) == "key not usable for this alg"


def test_short_rsa_keys_are_refused(tmp_path: Path, clock: Clock) -> None:
    weak = rs384_key("weak", bits=1024)
    v = verifier({ISSUER: str(write_jwks(tmp_path, weak))}, clock, JwksCache())
    assert refused(v, bearer(mint(weak, claims(NOW)))) == "signature not verified (InvalidKeyError)"


def test_unknown_kid_in_a_file_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    assert refused(prod, bearer(mint(keys.other_es, claims(NOW)))) == "unknown kid"


def test_a_key_added_to_the_jwks_file_is_found_after_one_rate_limited_reload(
    jwks_file: Path, keys: Keys, clock: Clock, cache: JwksCache
) -> None:
    """cds-hooks.md §8 check 4 (rotating JWKS): a file-configured issuer adds a key; no restart is needed."""
    v = verifier({ISSUER: str(jwks_file)}, clock, cache)
    assert v.verify(bearer(mint(keys.es, claims(clock.t))), AUDIENCE) is not None
    write_jwks(jwks_file.parent, keys.es, keys.rs, keys.other_es)  # the operator adds the new key
    clock.t += 10
    assert refused(v, bearer(mint(keys.other_es, claims(clock.t)))) == "unknown kid"  # reload not yet allowed
    clock.t += 55
    assert v.verify(bearer(mint(keys.other_es, claims(clock.t))), AUDIENCE) is not None


def test_unknown_kid_triggers_one_refresh_then_fails(keys: Keys, clock: Clock, cache: JwksCache) -> None:
    with jwks_server(keys.es) as server:
        v = verifier({ISSUER: server.url}, clock, cache)
        assert v.verify(bearer(mint(keys.es, claims(NOW))), AUDIENCE) is not None
        assert server.requests == 1
        clock.t += 61
        assert refused(v, bearer(mint(keys.other_es, claims(clock.t)))) == "unknown kid"
        assert server.requests == 2  # exactly one refresh
        assert refused(v, bearer(mint(keys.other_es, claims(clock.t)))) == "unknown kid"
        assert server.requests == 2  # rate-limited: no second refresh within 60 s


def test_offline_verification_never_loads_keys_and_records_nothing(keys: Keys, clock: Clock, cache: JwksCache) -> None:
    """`offline=True` (the event-loop path) raises KeysNotHeld instead of fetching; the token stays usable."""
    with jwks_server(keys.es) as server:
        v = verifier({ISSUER: server.url}, clock, cache)
        token = bearer(mint(keys.es, claims(NOW)))
        with pytest.raises(KeysNotHeld):
            v.verify(token, AUDIENCE, offline=True)
        assert server.requests == 0 and len(v.replay) == 0
        assert v.verify(token, AUDIENCE) is not None and server.requests == 1
        assert v.verify(bearer(mint(keys.es, claims(NOW))), AUDIENCE, offline=True) is not None
        assert refused(v, token) == "jti replayed"
        with pytest.raises(KeysNotHeld):  # an unknown kid may mean a rotation: the worker thread refreshes
            v.verify(bearer(mint(keys.other_es, claims(NOW))), AUDIENCE, offline=True)
        clock.t += 3600  # expired keys are not used offline either
        with pytest.raises(KeysNotHeld):
            v.verify(bearer(mint(keys.es, claims(clock.t))), AUDIENCE, offline=True)
        assert server.requests == 1


def test_offline_verification_does_not_wait_for_a_load_under_way(prod: JwtVerifier, keys: Keys) -> None:
    assert prod.verify(bearer(mint(keys.es, claims(NOW))), AUDIENCE) is not None  # the file is read
    entry = prod.jwks._entry(prod.settings.trusted_issuers[ISSUER])
    with entry.lock, pytest.raises(KeysNotHeld):  # another thread holds the lock: it is (re)loading the source
        prod.verify(bearer(mint(keys.es, claims(NOW))), AUDIENCE, offline=True)
    assert prod.verify(bearer(mint(keys.es, claims(NOW))), AUDIENCE, offline=True) is not None


def test_a_rotated_key_under_the_same_kid_is_not_verified_with_the_old_key_object(
    keys: Keys, clock: Clock, cache: JwksCache
) -> None:
    with jwks_server(keys.es) as server:
        v = verifier({ISSUER: server.url}, clock, cache)
        assert v.verify(bearer(mint(keys.es, claims(clock.t))), AUDIENCE) is not None
        reused = es384_key(keys.es.kid)  # same kid, new key material
        server.serve(reused)
        clock.t += 3601
        assert v.verify(bearer(mint(reused, claims(clock.t))), AUDIENCE) is not None
        assert refused(v, bearer(mint(keys.es, claims(clock.t)))).startswith("signature not verified")


# --- JWKS over HTTP: rotation and caching -----------------------------------------------------------------------


def test_key_rotation_over_http_is_picked_up_after_one_rate_limited_refresh(
    keys: Keys, clock: Clock, cache: JwksCache
) -> None:
    with jwks_server(keys.es) as server:
        v = verifier({ISSUER: server.url}, clock, cache)
        assert v.verify(bearer(mint(keys.es, claims(clock.t))), AUDIENCE) is not None

        clock.t += 10
        server.serve(keys.other_es)  # the issuer rotates to a new key
        assert refused(v, bearer(mint(keys.other_es, claims(clock.t)))) == "unknown kid"
        assert server.requests == 1  # 10 s after the last fetch: refresh not yet allowed

        clock.t += 55  # 65 s after the last fetch
        assert v.verify(bearer(mint(keys.other_es, claims(clock.t))), AUDIENCE) is not None
        assert server.requests == 2

        newest = es384_key("es-3")
        server.serve(keys.other_es, newest)
        clock.t += 1
        assert refused(v, bearer(mint(newest, claims(clock.t)))) == "unknown kid"
        assert server.requests == 2
        clock.t += 60
        assert v.verify(bearer(mint(newest, claims(clock.t))), AUDIENCE) is not None
        assert server.requests == 3


def test_jwks_is_cached_for_an_hour_then_refetched(keys: Keys, clock: Clock, cache: JwksCache) -> None:
    with jwks_server(keys.es) as server:
        v = verifier({ISSUER: server.url}, clock, cache)
        for _ in range(6):
            v.verify(bearer(mint(keys.es, claims(clock.t))), AUDIENCE)
            clock.t += 599
        assert server.requests == 1  # 2995 s after the first fetch
        server.serve(keys.other_es)
        clock.t += 606  # 3601 s after the first fetch
        assert refused(v, bearer(mint(keys.es, claims(clock.t)))) == "unknown kid"
        assert server.requests == 2


def test_unreachable_jwks_fails_closed_and_retries_at_most_once_a_minute(
    keys: Keys, clock: Clock, cache: JwksCache
) -> None:
    with jwks_server(keys.es) as server:
        missing = server.url.replace("jwks.json", "missing.json")  # 404
        v = verifier({ISSUER: missing}, clock, cache)
        assert refused(v, bearer(mint(keys.es, claims(clock.t)))) == "JWKS unavailable"
        assert refused(v, bearer(mint(keys.es, claims(clock.t)))) == "JWKS unavailable"
        assert server.requests == 1  # the second call did not retry
        clock.t += 61
        assert refused(v, bearer(mint(keys.es, claims(clock.t)))) == "JWKS unavailable"
        assert server.requests == 2


def test_failed_refresh_keeps_the_keys_already_held(keys: Keys, clock: Clock, cache: JwksCache) -> None:
    with jwks_server(keys.es) as server:
        url = server.url
        v = verifier({ISSUER: url}, clock, cache)
        assert v.verify(bearer(mint(keys.es, claims(clock.t))), AUDIENCE) is not None
    clock.t += 3601  # the server is gone and the cached JWKS has expired
    assert v.verify(bearer(mint(keys.es, claims(clock.t))), AUDIENCE) is not None


# --- check 5: audience --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aud",
    [
        "https://cds.example.org/cds-services/other",
        AUDIENCE + "/",
        AUDIENCE.upper(),
        ["https://cds.example.org/cds-services"],
        [],
        None,
        42,
    ],
)
def test_wrong_audience_is_refused(prod: JwtVerifier, keys: Keys, aud: Any) -> None:
    payload = claims(NOW)
    payload["aud"] = aud
    if aud is None:
        del payload["aud"]
    assert refused(prod, bearer(mint(keys.es, payload))) == "aud does not match"


# --- check 6: times -----------------------------------------------------------------------------------------------


def test_expired_token_is_refused_beyond_the_clock_skew(prod: JwtVerifier, keys: Keys) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW - 400, exp=NOW - 61)))) == "token expired"
    assert prod.verify(bearer(mint(keys.es, claims(NOW - 400, exp=NOW - 59))), AUDIENCE) is not None


def test_future_iat_is_refused_beyond_the_clock_skew(prod: JwtVerifier, keys: Keys) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW + 120)))) == "iat in the future"
    assert prod.verify(bearer(mint(keys.es, claims(NOW + 30))), AUDIENCE) is not None


def test_too_old_iat_is_refused_even_if_exp_is_far_away(prod: JwtVerifier, keys: Keys) -> None:
    old = claims(NOW - 3600 - 61, exp=NOW + 86400)
    assert refused(prod, bearer(mint(keys.es, old))) == "token too old"


def test_max_token_age_is_a_setting(jwks_file: Path, keys: Keys, clock: Clock) -> None:
    v = verifier({ISSUER: str(jwks_file)}, clock, JwksCache(), max_token_age_s=300, clock_skew_s=0)
    assert refused(v, bearer(mint(keys.es, claims(NOW - 301, exp=NOW + 60)))) == "token too old"
    assert v.verify(bearer(mint(keys.es, claims(NOW - 299, exp=NOW + 60))), AUDIENCE) is not None


@pytest.mark.parametrize("missing", ["exp", "iat"])
def test_exp_and_iat_are_required(prod: JwtVerifier, keys: Keys, missing: str) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW, **{missing: None})))) == f"{missing} missing"


@pytest.mark.parametrize("bad", ["1800000000", True, [1]])
def test_non_numeric_times_are_refused(prod: JwtVerifier, keys: Keys, bad: Any) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW, exp=bad)))) == "exp is not a NumericDate"


def test_nbf_is_respected(prod: JwtVerifier, keys: Keys) -> None:
    assert refused(prod, bearer(mint(keys.es, claims(NOW, nbf=NOW + 120)))) == "token not yet valid (nbf)"
    assert prod.verify(bearer(mint(keys.es, claims(NOW, nbf=NOW - 5))), AUDIENCE) is not None


# --- check 8: replay ----------------------------------------------------------------------------------------------


def test_replayed_jti_is_refused(prod: JwtVerifier, keys: Keys) -> None:
    token = bearer(mint(keys.es, claims(NOW, jti="j-1")))
    assert prod.verify(token, AUDIENCE) is not None
    assert refused(prod, token) == "jti replayed"
    assert refused(prod, bearer(mint(keys.rs, claims(NOW, jti="j-1")))) == "jti replayed"  # new token, same jti


def test_same_jti_from_another_issuer_is_not_a_replay(tmp_path: Path, keys: Keys, clock: Clock) -> None:
    a, b = write_jwks(tmp_path, keys.es, name="a.json"), write_jwks(tmp_path, keys.rs, name="b.json")
    v = verifier({ISSUER: str(a), "https://b.example": str(b)}, clock, JwksCache())
    assert v.verify(bearer(mint(keys.es, claims(NOW, jti="same"))), AUDIENCE) is not None
    assert v.verify(bearer(mint(keys.rs, claims(NOW, jti="same", iss="https://b.example"))), AUDIENCE) is not None


@pytest.mark.parametrize("jti", [None, "", 7])
def test_missing_jti_is_refused(prod: JwtVerifier, keys: Keys, jti: Any) -> None:
    payload = claims(NOW)
    payload["jti"] = jti
    if jti is None:
        del payload["jti"]
    assert refused(prod, bearer(mint(keys.es, payload))) == "jti missing or malformed"


def test_a_refused_token_does_not_consume_its_jti(prod: JwtVerifier, keys: Keys) -> None:
    refused(prod, bearer(mint(keys.es, claims(NOW, jti="j-2", aud="https://elsewhere"))))
    assert prod.verify(bearer(mint(keys.es, claims(NOW, jti="j-2"))), AUDIENCE) is not None


def test_replay_cache_keeps_a_jti_until_its_token_would_be_refused_anyway(prod: JwtVerifier, keys: Keys) -> None:
    prod.verify(bearer(mint(keys.es, claims(NOW, jti="j-3", exp=NOW + 300))), AUDIENCE)
    assert prod.replay.first_use(ISSUER, "j-3", keep_until=0, now=NOW + 300 + 60) is False
    assert prod.replay.first_use(ISSUER, "j-3", keep_until=0, now=NOW + 300 + 61) is True


def test_replay_check_can_run_apart(prod: JwtVerifier, keys: Keys) -> None:
    """`replay_check=False` (on the event loop) checks presence only; `check_replay` (in a worker thread, the store
    is a database) records the jti with the same lifetime as `verify` would."""
    token = bearer(mint(keys.es, claims(NOW, jti="j-4", exp=NOW + 300)))
    got = prod.verify(token, AUDIENCE, replay_check=False)
    assert got is not None and prod.verify(token, AUDIENCE, replay_check=False) is not None  # nothing recorded
    prod.check_replay(got)
    with pytest.raises(AuthError, match="jti replayed"):
        prod.check_replay(got)
    assert prod.replay.first_use(ISSUER, "j-4", keep_until=0, now=NOW + 300 + 60) is False
    assert prod.replay.first_use(ISSUER, "j-4", keep_until=0, now=NOW + 300 + 61) is True
    with pytest.raises(AuthError, match="jti missing"):
        prod.verify(bearer(mint(keys.es, claims(NOW, jti=None))), AUDIENCE, replay_check=False)


def test_replay_cache_is_thread_safe() -> None:
    cache, results, barrier = ReplayCache(), [], threading.Barrier(32)

    def attempt() -> None:
        barrier.wait()
        results.append(cache.first_use("iss", "jti", keep_until=NOW + 60, now=NOW))

    threads = [threading.Thread(target=attempt) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 31 + [True]
    assert len(cache) == 1


# --- production and development -----------------------------------------------------------------------------------


def test_missing_authorization_is_refused_in_production(prod: JwtVerifier) -> None:
    assert refused(prod, None) == "Authorization missing"


def test_missing_authorization_is_accepted_in_development(jwks_file: Path, clock: Clock, cache: JwksCache) -> None:
    assert verifier({ISSUER: str(jwks_file)}, clock, cache, development=True).verify(None, AUDIENCE) is None
    assert verifier({}, clock, cache, development=True).verify(None, AUDIENCE) is None


def test_development_still_checks_a_token_that_is_sent(jwks_file: Path, keys: Keys, clock: Clock) -> None:
    v = verifier({ISSUER: str(jwks_file)}, clock, JwksCache(), development=True)
    assert refused(v, bearer(mint(keys.es, claims(NOW, aud="https://elsewhere")))) == "aud does not match"
    assert refused(v, bearer(mint(keys.es, claims(NOW, iss="https://evil.example")))) == "iss not trusted"


def test_development_with_empty_allowlist_takes_keys_from_the_tokens_jku(
    keys: Keys, clock: Clock, cache: JwksCache
) -> None:
    with jwks_server(keys.es) as server:
        v = verifier({}, clock, cache, development=True)
        payload = claims(NOW, iss="https://any-sandbox.example")
        assert v.verify(bearer(mint(keys.es, payload, jku=server.url)), AUDIENCE) == payload
        assert server.requests == 1
        assert refused(v, bearer(mint(keys.es, claims(NOW)))) == "jku missing (development, no allow-list)"
        assert refused(v, bearer(mint(keys.es, claims(NOW), jku="/etc/jwks.json"))) == (
            "jku missing (development, no allow-list)"
        )
        forged = mint(keys.other_es, claims(NOW), kid=keys.es.kid, jku=server.url)
        assert refused(v, bearer(forged)).startswith("signature not verified")
        expired = mint(keys.es, claims(NOW - 400, exp=NOW - 100), jku=server.url)
        assert refused(v, bearer(expired)) == "token expired"


def test_empty_allowlist_in_production_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="TRUSTED_ISSUERS"):
        AuthSettings(development=False, trusted_issuers={}, public_base_url="https://cds")


# --- the CDS Hooks sandbox's published key ----------------------------------------------------------------------


def test_sandbox_jwks_loads_and_its_key_is_usable_for_es384(tmp_path: Path, clock: Clock, cache: JwksCache) -> None:
    path = shared_dir() / "conformance" / "cds-hooks" / "sandbox" / "sandbox-jwks.public.json"
    jwk = cache.key(str(path), SANDBOX_KID)
    assert jwk is not None and jwk["kty"] == "EC" and jwk["crv"] == "P-384"
    key = jwt.PyJWK(jwk, algorithm="ES384")
    assert key.algorithm_name == "ES384" and key.key_type == "EC"

    # Without the sandbox's private key, a token shaped exactly like the sandbox's (ES384, its kid, its jku) but
    # signed with another P-384 key must get as far as the signature check with the sandbox key, and fail there.
    v = verifier({SANDBOX_ISS: str(path)}, clock, cache)
    impostor = es384_key(SANDBOX_KID)
    token = mint(impostor, claims(NOW, iss=SANDBOX_ISS), jku=SANDBOX_JKU)
    assert refused(v, bearer(token)) == "signature not verified (InvalidSignatureError)"

    # The same token passes once the issuer's JWKS file holds the signer's public key under that kid.
    ok = verifier({SANDBOX_ISS: str(write_jwks(tmp_path, impostor))}, clock, JwksCache())
    assert ok.verify(bearer(token), AUDIENCE) is not None


# --- settings -----------------------------------------------------------------------------------------------------


def test_from_settings_reads_env_issuers_and_base_url(jwks_file: Path) -> None:
    issuers = json.dumps({ISSUER: str(jwks_file), SANDBOX_ISS: SANDBOX_JKU})
    s = AuthSettings.from_settings(
        Settings(env="production", cds_trusted_issuers=issuers, public_base_url="https://cds.example.org")
    )
    assert not s.development and dict(s.trusted_issuers) == {ISSUER: str(jwks_file), SANDBOX_ISS: SANDBOX_JKU}
    assert s.public_base_url == "https://cds.example.org" and s.allowed_algs == {"ES384", "RS384"}
    dev = AuthSettings.from_settings(Settings(env="development"))
    assert dev.development and dict(dev.trusted_issuers) == {} and dev.public_base_url is None


@pytest.mark.parametrize(
    "text", ["[]", "{not json", '{"https://a": 1}', '{"https://a": "ftp://x/jwks"}', '{"https://a": ""}']
)
def test_malformed_trusted_issuers_are_a_configuration_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_trusted_issuers(text)


def test_production_requires_a_public_base_url(jwks_file: Path) -> None:
    with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
        AuthSettings(development=False, trusted_issuers={ISSUER: str(jwks_file)}, public_base_url=None)


@pytest.mark.parametrize(
    "kw",
    [
        {"allowed_algs": frozenset({"ES384", "HS256"})},
        {"allowed_algs": frozenset({"none"})},
        {"allowed_algs": frozenset()},
        {"clock_skew_s": 61},
        {"max_token_age_s": 3601},
        {"max_token_age_s": 0},
    ],
)
def test_settings_outside_the_spec_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AuthSettings(development=True, trusted_issuers={}, public_base_url=None, **kw)


def test_auth_settings_are_immutable(jwks_file: Path) -> None:
    source = {ISSUER: str(jwks_file)}
    s = AuthSettings(development=False, trusted_issuers=source, public_base_url="https://cds")
    source["https://evil.example"] = "/tmp/evil.json"
    assert "https://evil.example" not in s.trusted_issuers
    with pytest.raises(TypeError):
        s.trusted_issuers["x"] = "y"  # type: ignore[index]


# --- no token in errors or logs -----------------------------------------------------------------------------------


def test_the_token_never_appears_in_errors_or_logs(
    prod: JwtVerifier, keys: Keys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [
        mint(keys.es, claims(NOW, aud="https://elsewhere")),
        tampered(mint(keys.es, claims(NOW)), sub="x"),
        mint(keys.other_es, claims(NOW)),
        hs256(keys.es.public_pem, claims(NOW), kid=keys.es.kid),
    ]
    unreachable = verifier({ISSUER: "http://127.0.0.1:9/jwks.json"}, clock, JwksCache(timeout_s=0.5))
    for v in (prod, unreachable):
        for token in tokens:
            with pytest.raises(AuthError) as info:
                v.verify(bearer(token), AUDIENCE)
            signature = token.rsplit(".", 1)[1]
            assert signature not in str(info.value) and signature not in repr(info.value.args)
            assert info.value.__cause__ is None
            assert signature not in caplog.text and token.split(".")[1] not in caplog.text


# --- FastAPI helpers ----------------------------------------------------------------------------------------------


def test_audience_for_joins_base_and_path_exactly() -> None:
    assert audience_for("https://cds.example.org/", "/cds-services") == "https://cds.example.org/cds-services"
    assert audience_for("https://h/base", "/cds-services/x/feedback") == "https://h/base/cds-services/x/feedback"
    with pytest.raises(ValueError):
        audience_for("https://h", "cds-services")


def test_unauthorized_is_a_bare_401_operation_outcome() -> None:
    response = unauthorized()
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.media_type == "application/fhir+json"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert json.loads(bytes(response.body)) == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "security"}],
    }
