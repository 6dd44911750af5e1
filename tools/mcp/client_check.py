"""Drives the running service's /mcp (or `tai-autonomics mcp-stdio`) with the official Python
MCP client: lists the tools, calls every one of them, including error cases, and checks the
answers. Usage: client_check.py URL ERA   (ERA: legacy | 2026-07-28 | auto)
               client_check.py --stdio BINARY LEDGER_PATH [underscored]
(underscored: the process lists the tools' names with underscores for dots, and the client
calls them so)
Exits non-zero on the first failed check."""
import json
import sys

import anyio
from mcp import Client

TOOLS = {
    "taiea.health.check", "taiea.support.model", "taiea.entitlement.apply_event",
    "taiea.receipts.verify_chain", "taiea.governor.state", "taiea.governor.signal",
    "taiea.governors.list", "taiea.supervision.tree", "taiea.audit.log",
}


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


async def exercise(c, tenant, spell=lambda name: name):
    tools = (await c.list_tools()).tools
    names = {t.name for t in tools}
    check(names == {spell(n) for n in TOOLS}, f"tools/list gave {sorted(names)}")
    for t in tools:
        check(t.annotations is not None and t.annotations.read_only_hint is not None, f"{t.name} annotations")
        check(t.output_schema is not None, f"{t.name} outputSchema")

    async def ok(name, args):
        r = await c.call_tool(spell(name), args)
        check(not r.is_error, f"{name} {args}: {r.content}")
        check(r.structured_content is not None, f"{name}: structuredContent")
        check(json.loads(r.content[0].text) == r.structured_content, f"{name}: text copy")
        return r.structured_content

    async def err(name, args, says):
        r = await c.call_tool(spell(name), args)
        check(r.is_error, f"{name} {args} should be a tool error")
        text = r.content[0].text
        check(says in text, f"{name}: {text!r} should say {says!r}")

    check((await ok("taiea.health.check", {}))["status"] == "ok", "health")
    check(len((await ok("taiea.support.model", {}))["tiers"]) == 3, "support tiers")
    check((await ok("taiea.entitlement.apply_event", {"tenant_id": tenant, "event_type": "provision", "event_data": {"sku": "base"}}))["status"] == "active", "provision")
    check((await ok("taiea.entitlement.apply_event", {"tenant_id": tenant, "event_type": "modify", "event_data": {"sku": "professional"}}))["entitlement"]["sku"] == "professional", "modify")
    check((await ok("taiea.entitlement.apply_event", {"tenant_id": tenant, "event_type": "suspend"}))["status"] == "suspended", "suspend")
    check((await ok("taiea.entitlement.apply_event", {"tenant_id": tenant, "event_type": "resume"}))["status"] == "active", "resume")
    s = await ok("taiea.governor.signal", {"tenant_id": tenant, "metric": "cpu_utilization", "value": 72.5})
    check(s["decision"] == "accept" and s["state"] == "warning", f"signal: {s}")
    check((await ok("taiea.governor.state", {"tenant_id": tenant}))["state"] == "warning", "state")
    check(any(g["tenant_id"] == tenant for g in (await ok("taiea.governors.list", {}))["governors"]), "governors.list")
    check((await ok("taiea.supervision.tree", {"limit": 5}))["name"] == "root", "supervision.tree")
    audit = await ok("taiea.audit.log", {"tenant_id": tenant, "limit": 100})
    check(any(r["type"] == "tool_call" for r in audit["receipts"]), "tool_call receipts in the audit log")
    rid = audit["receipts"][0]["receipt_id"]
    v = await ok("taiea.receipts.verify_chain", {"tenant_id": tenant, "receipt_id": rid})
    check(v["valid"] is True, f"verify_chain: {v}")
    anchored = await ok("taiea.receipts.verify_chain", {"tenant_id": tenant, "anchor_seq": v["head_seq"], "anchor_hash": v["head_hash"]})
    check(anchored["valid"] is True and anchored["anchor"]["seq"] == v["head_seq"], f"verify_chain against its head: {anchored}")
    moved = await ok("taiea.receipts.verify_chain", {"tenant_id": tenant, "anchor_seq": v["head_seq"], "anchor_hash": "0" * 64})
    check(moved["valid"] is False and moved["first_broken"]["seq"] == v["head_seq"], f"verify_chain against another hash: {moved}")
    await err("taiea.governor.signal", {"tenant_id": tenant, "metric": "cpu"}, "missing required argument `value`")
    await err("taiea.governor.signal", {"tenant_id": tenant, "metric": "cpu", "value": "hot"}, "must be number")
    await err("taiea.governor.state", {"tenant_id": "no-such-tenant"}, "tenant_not_found")
    await err("taiea.entitlement.apply_event", {"tenant_id": tenant, "event_type": "explode"}, "one of provision")
    try:
        r = await c.call_tool("taiea.no.such.tool", {})
        check(r.is_error, "an unknown tool is refused")
    except Exception as e:  # the protocol error, as the client raises it
        check("unknown tool" in str(e), f"unknown tool: {e}")


async def over_http(url, era):
    tenant = "py-" + era.replace(".", "-").replace("-", "")[:20]
    async with Client(url, mode=era) as c:
        await exercise(c, tenant)
        print(f"python mcp client ({era}, negotiated {c.protocol_version}): all tools ok")


async def over_stdio(binary, ledger, names="dotted"):
    from mcp.client.stdio import StdioServerParameters
    env = {"TAI_LEDGER__SQLITE_PATH": ledger, "PATH": "/usr/bin:/bin", "TAI_MCP__TOOL_NAMES": names}
    params = StdioServerParameters(command=binary, args=["mcp-stdio"], env=env)
    spell = (lambda n: n.replace(".", "_")) if names == "underscored" else (lambda n: n)
    async with Client(params) as c:
        await exercise(c, "py-stdio-" + names, spell)
        print(f"python mcp client (stdio, {names} names): all tools ok")


if __name__ == "__main__":
    if sys.argv[1] == "--stdio":
        anyio.run(over_stdio, *sys.argv[2:5])
    else:
        anyio.run(over_http, sys.argv[1], sys.argv[2])
