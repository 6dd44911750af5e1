// Drives the running service's /mcp with the official TypeScript SDK client (v1, the
// handshake era): initialize, list tools, call tools (one error case), ping, end the session.
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
console.log(`typescript sdk v1 client: ${tools.length} tools, calls ok`);
