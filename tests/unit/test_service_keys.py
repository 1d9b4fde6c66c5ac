"""The service's key lists and the shopper signature: parsing, tenants, tampering, expiry."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from fashionai_pipeline.producers.service.config import Keys, ServiceConfigError, ServiceSettings
from fashionai_pipeline.producers.service.signing import sign_shopper, verify_shopper
from fashionai_pipeline.producers.settings import Settings

K1, K2, K3 = "k1-0123456789abcdef", "k2-0123456789abcdef", "k3-0123456789abcdef"
SECRET = "s-0123456789abcdef"


def keys(settings: Settings, ingest: str, read: str = "", signing: str = "") -> Keys:
    service = ServiceSettings(
        ingest_keys=SecretStr(ingest), read_keys=SecretStr(read), shopper_signing_key=SecretStr(signing)
    )
    return Keys.from_settings(service, settings)


def test_single_tenant_keys_belong_to_the_configured_tenant():
    got = keys(Settings(tenant="shop"), f"{K1}, {K2}@shop", K3, SECRET)
    assert got.ingest == ((K1.encode(), "shop"), (K2.encode(), "shop"))
    assert got.read == ((K3.encode(), "shop"),)
    assert got.signing == {"shop": (SECRET.encode(),)}


def test_multi_tenant_keys_name_their_tenant():
    settings = Settings(tenants={"a": {"app_token": "x"}, "b": {"app_token": "y"}})
    got = keys(settings, f"{K1}@a,{K2}@b", f"{K3}@b", f"{SECRET}@b")
    assert dict((t, k) for k, t in got.ingest) == {"a": K1.encode(), "b": K2.encode()}
    with pytest.raises(ServiceConfigError, match="entry 2 needs @TENANT") as bare:
        keys(settings, f"{K1}@a,{K2}")
    with pytest.raises(ServiceConfigError, match="entry 1 names a tenant that is not configured") as unknown:
        keys(settings, f"{K1}@zz")
    for exc in (bare, unknown):
        assert K1 not in str(exc.value) and K2 not in str(exc.value)


@pytest.mark.parametrize(
    ("ingest", "read", "signing", "message"),
    [
        ("", "", "", "FASHIONAI_INGEST_KEYS: set at least one key"),
        ("short", "", "", "at least 16 characters"),
        (K1, K1, SECRET, "must not also be an ingest key"),
        (K1, K2, "", "read keys need a signing secret"),
        (f"{K1}@other", "", "", "not configured"),
        ("has space 0123456789", "", "", "entry 1 must be"),
    ],
)
def test_bad_key_settings_name_the_setting_never_the_key(ingest, read, signing, message):
    with pytest.raises(ServiceConfigError, match=message) as info:
        keys(Settings(tenant="shop"), ingest, read, signing)
    assert K1 not in str(info.value) and "0123456789" not in str(info.value)


def test_cors_origins_must_be_exact_origins():
    assert ServiceSettings(cors_origins="https://a.example, http://b.example:8080").origins() == {
        "https://a.example",
        "http://b.example:8080",
    }
    for bad in ("*", "https://a.example/path", "a.example"):
        with pytest.raises(ValueError, match="cors_origins"):
            ServiceSettings(cors_origins=bad)


def test_the_signature_is_the_documented_hmac():
    token = sign_shopper(SECRET, "shop", "sess", "u1", ttl=60, now=1_000_000)
    expires, mac = token.split(".")
    message = b"fashionai-shopper:v1\nshop\nsess\nu1\n" + expires.encode()
    assert expires == "1000060"
    assert mac == hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


def test_verify_accepts_only_the_signed_unexpired_shopper():
    secrets = (SECRET.encode(),)
    token = sign_shopper(SECRET, "shop", "sess", None, ttl=60, now=1000)
    assert verify_shopper(secrets, token, "shop", "sess", None, now=1030) == "ok"
    assert verify_shopper(secrets, token, "shop", "sess", None, now=1061) == "expired"
    assert verify_shopper(secrets, token, "shop", "other", None, now=1030) == "invalid"
    assert verify_shopper(secrets, token, "shop", "sess", "u1", now=1030) == "invalid"
    assert verify_shopper(secrets, token, "other", "sess", None, now=1030) == "invalid"
    assert verify_shopper(secrets, None, "shop", "sess", None, now=1030) == "missing"
    assert verify_shopper(secrets, "abc", "shop", "sess", None, now=1030) == "malformed"
    too_long = sign_shopper(SECRET, "shop", "sess", None, ttl=30 * 24 * 3600, now=1000)
    assert verify_shopper(secrets, too_long, "shop", "sess", None, now=1000) == "malformed"
    # Rotation: a token signed with the old secret still verifies while it is listed.
    rotated = (b"new-secret-0123456789", SECRET.encode())
    assert verify_shopper(rotated, token, "shop", "sess", None, now=1030) == "ok"
