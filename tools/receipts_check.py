#!/usr/bin/env python3
"""The check behind tools/receipts-check.sh: receipts verified by an implementation of RFC 8785
that is not ours (PyPI's `rfc8785`), as anyone holding an export would verify them.

`receipts_check.py SERVICE` grants a tenant and sends it inputs whose recorded form is hard to
canonicalise: doubles at the ends of their range and ones a careless reader rounds one unit
off, integers past 2**53, keys that sort differently by UTF-16 code units than by code points,
control characters, escapes and astral characters, and 306 doubles drawn from every exponent
and the notation bounds. Then it reads the tenant's export and, for every receipt, recomputes
`receipt_hash` as SHA-256 of the RFC 8785 text of the receipt without it, and checks `seq`
continuity and `prev_hash` linkage from the 64-zero genesis; `GET …/receipts` must hand out
the same receipts. Each receipt the service answered with must be in the export exactly as
answered, and each number sent must be recorded as the double it names.

RFC 8785 reads every number as an IEEE 754 double (I-JSON). Python reads integers exactly, and
`rfc8785` refuses those past 2**53 rather than round them, so they are made doubles first, as
a JavaScript verifier's JSON.parse would make them.
"""

import hashlib
import json
import math
import random
import struct
import sys
import urllib.error
import urllib.request

import rfc8785

TENANT = "independent-check"
SAFE = 2**53 - 1


def call(method, url, body=None):
    """`body` is sent as given when it is text (so numbers keep the digits written here)."""
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    data = None if body is None else body.encode()
    headers = {} if body is None else {"content-type": "application/json"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def as_doubles(v):
    """`v` with every integer past the safe range made the double JSON.parse would make."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return float(v) if abs(v) > SAFE else v
    if isinstance(v, list):
        return [as_doubles(x) for x in v]
    if isinstance(v, dict):
        return {k: as_doubles(x) for k, x in v.items()}
    return v


def expect(status, body, want=200):
    if status != want:
        sys.exit(f"expected {want}, got {status}: {body[:500]!r}")
    return json.loads(body)


def main(service):
    answered = []
    grant = {
        "tenant_id": TENANT,
        "entitlement_id": "ent-\u00e9\U0001F600",
        "action": "grant",
        "sku": "enterprise",
        "customer_id": "Zo\u00eb \u20ac \U0001F600 \ue000",
        "reason": "line\nbreak\ttab \u0001 \u007f \u2028 quote\" backslash\\ \ufeff",
    }
    answered.append(expect(*call("POST", service + "/marketplace", grant))["receipt"])

    # Signal values as written, each the double it names: below, at and past the thresholds,
    # so the chain holds warnings, an action and its completion too.
    values = [
        "-6.604630556388117e-41",
        "1.976563237333621e-264",
        "5e-324",
        "-0.0",
        "0.1",
        "59.99999999999999",
        "60",
        "1E2",
        "9.999999999999999e20",
        "1.7976931348623157e308",
    ]
    for text in values:
        body = '{"metric": "p\\u00e9_\U0001F600", "value": %s}' % text
        status, raw = call("POST", f"{service}/v1/tenants/{TENANT}/signals", body)
        answer = json.loads(raw)
        if status == 409:  # an action in flight: the refusal is recorded all the same
            answer = {"receipts": answer["receipts"]}
        elif status != 200:
            sys.exit(f"signal {text}: {status} {raw[:300]!r}")
        for r in answer["receipts"]:
            answered.append(r)
            recorded = r["metadata"].get("input", {}).get("value")
            if recorded is not None and r["metadata"]["input"].get("metric", "").startswith("p"):
                if recorded != float(text) or (recorded == 0 and str(recorded) != str(float(text))):
                    sys.exit(f"signal {text} recorded as {recorded!r}")

    args = (
        '{"\\ue000": 1, "\U0001F600": 2, "\\ud83d\\ude00x": 3, "a": [1e-7, 1e21, 1e+21, 123456789012345680000],'
        ' "big": 18446744073709551615, "neg": -9223372036854775808, "safe": 9007199254740991,'
        ' "ctl": "\\u0000\\u001f\\u007f\\u2028\\u2029 \\/ \\"", "nested": {"\u00e9": {"z": null, "A": true, "": []}},'
        ' "tiny": 2.2250738585072014e-308, "third": 0.3333333333333333}'
    )
    body = '{"tool": "health", "args": %s}' % args
    answer = expect(*call("POST", f"{service}/v1/governors/{TENANT}/tool-calls", body))
    answered.extend(answer["receipts"])
    recorded = answer["receipt"]["metadata"]["args"]
    sent = json.loads(args)
    if as_doubles(recorded) != as_doubles(sent):
        sys.exit(f"tool args recorded as {recorded!r}, sent {sent!r}")

    # Doubles drawn from every exponent (a fixed seed), and around the bounds where RFC 8785
    # switches between plain and exponent notation (1e-7, 1e21).
    draw = random.Random(20261207)
    doubles = []
    while len(doubles) < 300:
        x = struct.unpack("<d", struct.pack("<Q", draw.getrandbits(64)))[0]
        if math.isfinite(x):
            doubles.append(x)
    for edge in (1e-7, 1e21):
        doubles += [math.nextafter(edge, 0), edge, math.nextafter(edge, math.inf)]
    chunks = [doubles[i : i + 100] for i in range(0, len(doubles), 100)]
    for chunk in chunks:
        body = json.dumps({"tool": "health", "args": {"doubles": chunk}})
        answer = expect(*call("POST", f"{service}/v1/governors/{TENANT}/tool-calls", body))
        answered.extend(answer["receipts"])
        recorded = answer["receipt"]["metadata"]["args"]["doubles"]
        for x, y in zip(chunk, recorded):
            if x != y or math.copysign(1, x) != math.copysign(1, y):
                sys.exit(f"tool argument {x!r} recorded as {y!r}")

    event = {"event": "sku_changed", "value": "professional"}
    answered.append(
        expect(*call("POST", f"{service}/v1/tenants/{TENANT}/entitlement/events", event))["receipt"]
    )

    status, raw = call("GET", f"{service}/v1/tenants/{TENANT}/receipts/export")
    if status != 200:
        sys.exit(f"export: {status} {raw[:300]!r}")
    chain = [json.loads(line) for line in raw.splitlines() if line.strip()]
    prev, kinds = "0" * 64, set()
    for i, r in enumerate(chain, start=1):
        if r["seq"] != i:
            sys.exit(f"receipt {r['receipt_id']}: seq {r['seq']}, expected {i}")
        if r["prev_hash"] != prev:
            sys.exit(f"seq {i}: prev_hash {r['prev_hash']} is not the hash before it, {prev}")
        unsealed = as_doubles({k: v for k, v in r.items() if k != "receipt_hash"})
        digest = hashlib.sha256(rfc8785.dumps(unsealed)).hexdigest()
        if digest != r["receipt_hash"]:
            text = rfc8785.dumps(unsealed).decode()
            sys.exit(f"seq {i}: receipt_hash {r['receipt_hash']}, but RFC 8785 gives {digest} for\n{text}")
        prev = r["receipt_hash"]
        kinds.add(r["event_type"])
    status, raw = call("GET", f"{service}/v1/tenants/{TENANT}/receipts?limit=1000")
    paged = expect(status, raw)["receipts"]
    if paged != chain:
        sys.exit("GET …/receipts and the export disagree")
    by_id = {r["receipt_id"]: r for r in chain}
    for r in answered:
        if by_id.get(r["receipt_id"]) != r:
            sys.exit(f"receipt {r['receipt_id']} was answered as\n{r}\nand exported as\n{by_id.get(r['receipt_id'])}")
    status, raw = call("GET", f"{service}/v1/tenants/{TENANT}/receipts/verify")
    report = expect(status, raw)
    if not report["valid"] or report["receipts_checked"] != len(chain):
        sys.exit(f"the service's own verification disagrees: {report}")
    print(
        f"{len(chain)} receipts ({len(kinds)} event types) verified with rfc8785 "
        f"{rfc8785.__version__}; all {len(answered)} answered receipts exported as answered"
    )


if __name__ == "__main__":
    main(sys.argv[1])
