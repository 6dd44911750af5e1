#!/usr/bin/env python3
"""The two halves of tools/signatures-check.sh: JWTs from an independent signer (PyPI's PyJWT
and `cryptography`) against the binary's marketplace signature check and push verification.

`keys DIR` makes an RSA 2048 and an EC P-256 key pair, and a third RSA key the service never
trusts, and writes what the service is configured with: `jwks.json` (the two trusted public
keys, kids `r1` and `e1`), `rsa_spki.pem`, `rsa_pkcs1.pem` and `ec.pem`, and the private keys
for the other half.

`run SERVICE DIR KEYS` sends `POST /marketplace` grants signed every way that matters, each
for a tenant of its own, and checks each answer against what `KEYS` (jwks, rsa_spki,
rsa_pkcs1 or ec) should accept: RS256 and ES256 with and without `kid`; `none`, PS256, and
HS256 keyed with the RSA public key; a signer the service does not trust, an expired token,
and claims that differ from the body. With `KEYS` jwks it also sends push deliveries (the
service is told the audience and service account of `push_*` below): a Google-shaped OIDC
token is taken, and ES256, another audience and an unverified email are 401.
"""

import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PUSH_AUDIENCE = "https://tai.example/pubsub"
PUSH_EMAIL = "push@signatures-check.iam.gserviceaccount.com"


def keys(d):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    pem = ser.Encoding.PEM
    private = ser.PrivateFormat.PKCS8
    for name, key in [
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("other", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ec", ec.generate_private_key(ec.SECP256R1())),
    ]:
        (d / f"{name}_private.pem").write_bytes(
            key.private_bytes(pem, private, ser.NoEncryption())
        )
    rsa_pub = load(d, "rsa").public_key()
    ec_pub = load(d, "ec").public_key()
    spki = ser.PublicFormat.SubjectPublicKeyInfo
    (d / "rsa_spki.pem").write_bytes(rsa_pub.public_bytes(pem, spki))
    (d / "rsa_pkcs1.pem").write_bytes(rsa_pub.public_bytes(pem, ser.PublicFormat.PKCS1))
    (d / "ec.pem").write_bytes(ec_pub.public_bytes(pem, spki))
    r = json.loads(RSAAlgorithm.to_jwk(rsa_pub)) | {"kid": "r1", "alg": "RS256", "use": "sig"}
    e = json.loads(ECAlgorithm.to_jwk(ec_pub)) | {"kid": "e1", "alg": "ES256", "use": "sig"}
    (d / "jwks.json").write_text(json.dumps({"keys": [r, e]}))


def load(d, name):
    return ser.load_pem_private_key((Path(d) / f"{name}_private.pem").read_bytes(), None)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def post(url, body, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def run(service, d, mode):
    now = int(time.time())
    rsa_key, ec_key, other = load(d, "rsa"), load(d, "ec"), load(d, "other")

    def claims(tenant, **extra):
        return {"tenant_id": tenant, "entitlement_id": "e", "action": "grant",
                "iat": now, "exp": now + 600} | extra

    def sign(key, alg, kid, tenant, **extra):
        headers = {"kid": kid} if kid else None
        return jwt.encode(claims(tenant, **extra), key, algorithm=alg, headers=headers)

    def hs256_with_public_key(tenant):
        public = rsa_key.public_key().public_bytes(
            ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo
        )
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode())
        body = b64(json.dumps(claims(tenant)).encode())
        mac = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(mac)}"

    rsa_ok = mode in ("jwks", "rsa_spki", "rsa_pkcs1")
    ec_ok = mode in ("jwks", "ec")
    cases = [
        ("rs256-kid", lambda t: sign(rsa_key, "RS256", "r1", t), rsa_ok),
        ("rs256-no-kid", lambda t: sign(rsa_key, "RS256", None, t), rsa_ok),
        ("es256-kid", lambda t: sign(ec_key, "ES256", "e1", t), ec_ok),
        ("es256-no-kid", lambda t: sign(ec_key, "ES256", None, t), ec_ok),
        ("none", lambda t: jwt.encode(claims(t), None, algorithm="none"), False),
        ("ps256", lambda t: sign(rsa_key, "PS256", "r1", t), False),
        ("hs256-public-key", hs256_with_public_key, False),
        ("untrusted-signer", lambda t: sign(other, "RS256", None, t), False),
        ("expired", lambda t: sign(rsa_key if rsa_ok else ec_key, "RS256" if rsa_ok else "ES256",
                                   None, t, exp=now - 3600), False),
        ("another-tenant", lambda t: sign(rsa_key if rsa_ok else ec_key,
                                          "RS256" if rsa_ok else "ES256", None, "someone-else"),
         False),
    ]
    failures = []
    for name, token, accepted in cases:
        tenant = f"sig-{mode}-{name}".replace("_", "-")
        status, answer = post(f"{service}/marketplace", {
            "tenant_id": tenant, "entitlement_id": "e", "action": "grant",
            "signature": token(tenant)})
        want = 200 if accepted else 401
        if status != want or (not accepted and answer.get("code") != "invalid_signature"):
            failures.append(f"{mode} {name}: {status} {answer}, expected {want}")

    if mode == "jwks":
        granted = f"sig-{mode}-rs256-kid"
        data = base64.b64encode(json.dumps(
            {"tenant_id": granted, "metric": "cpu", "value": 1.5}).encode()).decode()
        google = {"iss": "https://accounts.google.com", "aud": PUSH_AUDIENCE,
                  "email": PUSH_EMAIL, "email_verified": True, "sub": "1",
                  "iat": now, "exp": now + 600}
        pushes = [
            ("google-shaped", jwt.encode(google, rsa_key, "RS256", {"kid": "r1"}), 200),
            ("es256", jwt.encode(google, ec_key, "ES256", {"kid": "e1"}), 401),
            ("another-audience", jwt.encode(google | {"aud": "https://elsewhere"}, rsa_key,
                                            "RS256", {"kid": "r1"}), 401),
            ("unverified-email", jwt.encode(google | {"email_verified": False}, rsa_key,
                                            "RS256", {"kid": "r1"}), 401),
        ]
        for i, (name, token, want) in enumerate(pushes):
            envelope = {"message": {"data": data, "messageId": str(1000 + i)},
                        "subscription": "projects/p/subscriptions/s"}
            status, answer = post(f"{service}/pubsub", envelope, token)
            if status != want or (want == 200 and answer.get("outcome") != "accepted"):
                failures.append(f"push {name}: {status} {answer}, expected {want}")
    if failures:
        sys.exit("\n".join(failures))
    extra = " and 4 push tokens" if mode == "jwks" else ""
    print(f"{mode}: {len(cases)} marketplace signatures{extra} answered as they should")


if __name__ == "__main__":
    if sys.argv[1] == "keys":
        keys(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3], sys.argv[4])
