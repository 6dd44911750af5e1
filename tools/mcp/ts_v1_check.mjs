// Drives the running service's /mcp with the official TypeScript SDK client (v1, the
// handshake era): initialize, list tools, call tools (one error case), ping, end the session;
// then a JSON-RPC batch (MCP 2025-03-26) sent through the SDK's own transport.
// Usage: node ts_v1_check.mjs URL
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const fail = (what) => { console.error(`FAIL: ${what}`); process.exit(1); };
const client = new Client({ name: "tai-ts-v1", version: "0.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(process.argv[2]));
await client.connect(transport);
const { tools } = await client.listTools();
if (tools.length !== 9) fail(`expected 9 tools, got ${tools.length}`);
const health = await client.callTool({ name: "taiea.health.check", arguments: {} });
if (health.isError || health.structuredContent?.status !== "ok") fail(`health: ${JSON.stringify(health)}`);
const p = await client.callTool({ name: "taiea.entitlement.apply_event", arguments: { tenant_id: "ts-v1", event_type: "provision" } });
if (p.isError || p.structuredContent?.status !== "active") fail(`provision: ${JSON.stringify(p)}`);
const s = await client.callTool({ name: "taiea.governor.signal", arguments: { tenant_id: "ts-v1", metric: "cpu", value: 10 } });
if (s.isError || s.structuredContent?.state !== "stable") fail(`signal: ${JSON.stringify(s)}`);
const bad = await client.callTool({ name: "taiea.governor.state", arguments: {} });
if (!bad.isError || !bad.content[0].text.includes("tenant_id")) fail(`missing argument: ${JSON.stringify(bad)}`);
await client.ping();
try { await transport.terminateSession(); } catch (e) { /* stateless: no session to end */ }
await client.close();

// A bare transport sends no MCP-Protocol-Version, so the server reads the request as
// 2025-03-26's, the revision with batches; the SDK reads an array answer message by message.
const raw = new StreamableHTTPClientTransport(new URL(process.argv[2]));
const got = [];
raw.onmessage = (m) => got.push(m);
await raw.start();
const signal = (id, value) => ({ jsonrpc: "2.0", id, method: "tools/call",
  params: { name: "taiea.governor.signal", arguments: { tenant_id: "ts-v1", metric: "cpu", value } } });
await raw.send([
  { jsonrpc: "2.0", id: "p", method: "ping" },
  { jsonrpc: "2.0", method: "notifications/initialized" },
  signal(2, 70),
  signal(3, 10),
  { jsonrpc: "2.0", id: 4, method: "no/such" },
]);
const ids = got.map((m) => m.id);
if (JSON.stringify(ids) !== JSON.stringify(["p", 2, 3, 4])) fail(`batch answers: ${JSON.stringify(got)}`);
const states = got.slice(1, 3).map((m) => m.result?.structuredContent?.state);
if (JSON.stringify(states) !== JSON.stringify(["warning", "stable"])) fail(`batch signals: ${JSON.stringify(got)}`);
if (got[3].error?.code !== -32601) fail(`batch unknown method: ${JSON.stringify(got[3])}`);
await raw.close();
console.log(`typescript sdk v1 client: ${tools.length} tools, calls ok, a batch of 5 answered in order`);
