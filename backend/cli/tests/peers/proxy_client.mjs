// A real MCP client (the official TypeScript SDK) driven by Gatehouse's proxy tests
// (backend/cli/tests/proxy_peers.rs). Usage: node proxy_client.mjs URL TOKEN
// Walks: tools (list, call, a long-running call with progress), a server-initiated sampling request,
// resources (list + read), prompts (list + get), ping. Prints one JSON object with what it saw.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const [url, token] = process.argv.slice(2);
const out = {};
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: 'ts-proxy-test', version: '1.0.0' }, { capabilities: { sampling: {} } });
let sampled = 0;
client.setRequestHandler(CreateMessageRequestSchema, async () => {
  sampled += 1;
  return { role: 'assistant', model: 'test-model', content: { type: 'text', text: 'sampled by the TS client' } };
});
const timeout = { timeout: 30000 };
await client.connect(transport);
out.protocolVersion = transport.protocolVersion;
out.capabilities = client.getServerCapabilities();
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.echo = (await client.callTool({ name: 'echo', arguments: { message: 'hi from TS' } })).content;
const progress = [];
const long = await client.callTool(
  { name: 'trigger-long-running-operation', arguments: { duration: 2, steps: 4 } },
  undefined,
  { ...timeout, onprogress: (p) => progress.push(p.progress) },
);
out.long = { content: long.content, progress };
const sampling = await client.callTool(
  { name: 'trigger-sampling-request', arguments: { prompt: 'hello', maxTokens: 10 } },
  undefined,
  timeout,
);
out.sampling = { content: sampling.content, handled: sampled };
const resources = (await client.listResources()).resources;
out.resources = resources.length;
out.read = (await client.readResource({ uri: resources[0].uri })).contents[0];
out.readUri = resources[0].uri;
out.prompts = (await client.listPrompts()).prompts.map((p) => p.name);
out.prompt = (await client.getPrompt({ name: 'simple-prompt', arguments: {} })).messages;
out.ping = await client.ping();
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
