#!/usr/bin/env node
// The MCP conformance suite's server fixtures, served over Streamable HTTP on 127.0.0.1 with
// the official TypeScript SDK (@modelcontextprotocol/sdk, pinned in package.json here).
//
//   node fixture-server.mjs [PORT]      (PORT 0 or absent: any free port)
//
// Prints `fixture listening on http://127.0.0.1:PORT/mcp` once it accepts connections.
//
// It implements what the suite's server scenarios call (`conformance list`; the scenario sources
// in node_modules/@modelcontextprotocol/conformance): the test_* tools, prompts and resources,
// logging/setLevel, completion/complete, resources/subscribe, SSE resumability (an event store),
// stateful sessions with Mcp-Session-Id (404 for an ended one), DELETE, and the SDK's DNS
// rebinding protection. It speaks the stateful (2025-11-25 and earlier) era only: the 2026-07-28
// stateless era (server/discover, per-request _meta, input_required results) is not implemented,
// so the suite's 2026-07-28 run against it is informational (see docs/conformance.md).
//
// Written from the conformance repository's reference everything-server's fixture list.

import { randomUUID } from 'node:crypto';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { ElicitResultSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { toJsonSchemaCompat } from '@modelcontextprotocol/sdk/server/zod-json-schema-compat.js';
import { z } from 'zod';

// A 1x1 red PNG and a minimal WAV file.
const TEST_IMAGE_BASE64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const TEST_AUDIO_BASE64 = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=';

// SEP-1613 / SEP-2106: a raw JSON Schema 2020-12 input schema that tools/list must carry intact.
const JSON_SCHEMA_2020_12_INPUT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  $defs: {
    address: {
      $anchor: 'addressDef',
      type: 'object',
      properties: { street: { type: 'string' }, city: { type: 'string' } },
    },
  },
  properties: {
    name: { type: 'string' },
    address: { $ref: '#/$defs/address' },
    contactMethod: { type: 'string', enum: ['phone', 'email'] },
    phone: { type: 'string' },
    email: { type: 'string' },
  },
  allOf: [{ anyOf: [{ required: ['phone'] }, { required: ['email'] }] }],
  if: { properties: { contactMethod: { const: 'phone' } }, required: ['contactMethod'] },
  then: { required: ['phone'] },
  else: { required: ['email'] },
  additionalProperties: false,
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- SSE resumability (SEP-1699)
const events = new Map(); // eventId -> { streamId, message }
let eventSeq = 0;
const eventStore = {
  async storeEvent(streamId, message) {
    eventSeq += 1;
    const eventId = `${streamId}::${String(eventSeq).padStart(12, '0')}`;
    events.set(eventId, { streamId, message });
    return eventId;
  },
  async replayEventsAfter(lastEventId, { send }) {
    const streamId = lastEventId.split('::')[0];
    const later = [...events.entries()]
      .filter(([id, e]) => e.streamId === streamId && id > lastEventId)
      .sort(([a], [b]) => a.localeCompare(b));
    for (const [id, { message }] of later) {
      if (Object.keys(message).length > 0) await send(id, message);
    }
    return streamId;
  },
};

// ---------------------------------------------------------------- the MCP server (one per session)
const transports = {}; // sessionId -> transport
const subscriptions = new Set();

function elicitText(kind, result) {
  return `${kind}: action=${result.action}, content=${JSON.stringify(result.content || {})}`;
}

function createServer() {
  const mcp = new McpServer(
    { name: 'gatehouse-conformance-fixture', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const log = (level, data) =>
    mcp.server
      .notification({ method: 'notifications/message', params: { level, logger: 'fixture', data } })
      .catch(() => {});

  // ---- tools
  const text = (t) => ({ content: [{ type: 'text', text: t }] });
  mcp.registerTool('test_simple_text', { description: 'Tests simple text content response' }, async () =>
    text('This is a simple text response for testing.'),
  );
  mcp.registerTool('test_image_content', { description: 'Tests image content response' }, async () => ({
    content: [{ type: 'image', data: TEST_IMAGE_BASE64, mimeType: 'image/png' }],
  }));
  mcp.registerTool('test_audio_content', { description: 'Tests audio content response' }, async () => ({
    content: [{ type: 'audio', data: TEST_AUDIO_BASE64, mimeType: 'audio/wav' }],
  }));
  mcp.registerTool(
    'test_embedded_resource',
    { description: 'Tests embedded resource content response' },
    async () => ({
      content: [
        {
          type: 'resource',
          resource: {
            uri: 'test://embedded-resource',
            mimeType: 'text/plain',
            text: 'This is an embedded resource content.',
          },
        },
      ],
    }),
  );
  mcp.registerTool(
    'test_multiple_content_types',
    { description: 'Tests response with multiple content types (text, image, resource)' },
    async () => ({
      content: [
        { type: 'text', text: 'Multiple content types test:' },
        { type: 'image', data: TEST_IMAGE_BASE64, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 }),
          },
        },
      ],
    }),
  );
  // An empty inputSchema gives the callback (args, extra).
  mcp.registerTool(
    'test_tool_with_logging',
    { description: 'Tests tool that emits log messages during execution', inputSchema: {} },
    async (_args, { sendNotification }) => {
      for (const [i, data] of ['Tool execution started', 'Tool processing data', 'Tool execution completed'].entries()) {
        if (i) await sleep(50);
        await sendNotification({ method: 'notifications/message', params: { level: 'info', data } });
      }
      return text('Tool with logging executed successfully');
    },
  );
  mcp.registerTool(
    'test_tool_with_progress',
    { description: 'Tests tool that reports progress notifications', inputSchema: {} },
    async (_args, { sendNotification, _meta }) => {
      const progressToken = _meta?.progressToken ?? 0;
      for (const progress of [0, 50, 100]) {
        if (progress) await sleep(50);
        await sendNotification({
          method: 'notifications/progress',
          params: { progressToken, progress, total: 100, message: `Completed step ${progress} of 100` },
        });
      }
      return text(String(progressToken));
    },
  );
  mcp.registerTool('test_error_handling', { description: 'Tests error response handling' }, async () => {
    throw new Error('This tool intentionally returns an error for testing');
  });
  mcp.registerTool(
    'test_reconnection',
    {
      description: 'Closes the SSE stream mid-call; the result arrives after the client reconnects (SEP-1699)',
      inputSchema: {},
    },
    async (_args, { sessionId, requestId }) => {
      const transport = sessionId ? transports[sessionId] : undefined;
      if (transport && requestId !== undefined) transport.closeSSEStream(requestId);
      await sleep(100);
      return text(
        'Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.',
      );
    },
  );
  mcp.registerTool(
    'test_sampling',
    {
      description: 'Tests server-initiated sampling (LLM completion request)',
      inputSchema: { prompt: z.string().describe('The prompt to send to the LLM') },
    },
    async ({ prompt }, { sendRequest }) => {
      try {
        const result = await sendRequest(
          {
            method: 'sampling/createMessage',
            params: { messages: [{ role: 'user', content: { type: 'text', text: prompt } }], maxTokens: 100 },
          },
          z.object({}).passthrough(),
        );
        return text(`LLM response: ${result.content?.text || result.message?.content?.text || 'No response'}`);
      } catch (error) {
        return text(`Sampling not supported or error: ${error.message}`);
      }
    },
  );
  mcp.registerTool(
    'test_elicitation',
    {
      description: 'Tests server-initiated elicitation (user input request)',
      inputSchema: { message: z.string().describe('The message to show the user') },
    },
    async ({ message }, { sendRequest }) => {
      try {
        const result = await sendRequest(
          {
            method: 'elicitation/create',
            params: {
              message,
              requestedSchema: {
                type: 'object',
                properties: { response: { type: 'string', description: "User's response" } },
                required: ['response'],
              },
            },
          },
          ElicitResultSchema,
        );
        return text(elicitText('User response', result));
      } catch (error) {
        return text(`Elicitation not supported or error: ${error.message}`);
      }
    },
  );
  mcp.registerTool(
    'test_elicitation_sep1034_defaults',
    { description: 'Tests elicitation with default values per SEP-1034', inputSchema: {} },
    async (_args, { sendRequest }) => {
      try {
        const result = await sendRequest(
          {
            method: 'elicitation/create',
            params: {
              message: 'Please review and update the form fields with defaults',
              requestedSchema: {
                type: 'object',
                properties: {
                  name: { type: 'string', description: 'User name', default: 'John Doe' },
                  age: { type: 'integer', description: 'User age', default: 30 },
                  score: { type: 'number', description: 'User score', default: 95.5 },
                  status: {
                    type: 'string',
                    description: 'User status',
                    enum: ['active', 'inactive', 'pending'],
                    default: 'active',
                  },
                  verified: { type: 'boolean', description: 'Verification status', default: true },
                },
                required: [],
              },
            },
          },
          ElicitResultSchema,
        );
        return text(elicitText('Elicitation completed', result));
      } catch (error) {
        return text(`Elicitation not supported or error: ${error.message}`);
      }
    },
  );
  mcp.registerTool(
    'test_elicitation_sep1330_enums',
    { description: 'Tests elicitation with enum schema improvements per SEP-1330', inputSchema: {} },
    async (_args, { sendRequest }) => {
      const choices = (titles) => titles.map((title, i) => ({ const: `value${i + 1}`, title }));
      try {
        const result = await sendRequest(
          {
            method: 'elicitation/create',
            params: {
              message: 'Please select options from the enum fields',
              requestedSchema: {
                type: 'object',
                properties: {
                  untitledSingle: {
                    type: 'string',
                    description: 'Select one option',
                    enum: ['option1', 'option2', 'option3'],
                  },
                  titledSingle: {
                    type: 'string',
                    description: 'Select one option with titles',
                    oneOf: choices(['First Option', 'Second Option', 'Third Option']),
                  },
                  legacyEnum: {
                    type: 'string',
                    description: 'Select one option (legacy)',
                    enum: ['opt1', 'opt2', 'opt3'],
                    enumNames: ['Option One', 'Option Two', 'Option Three'],
                  },
                  untitledMulti: {
                    type: 'array',
                    description: 'Select multiple options',
                    minItems: 1,
                    maxItems: 3,
                    items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
                  },
                  titledMulti: {
                    type: 'array',
                    description: 'Select multiple options with titles',
                    minItems: 1,
                    maxItems: 3,
                    items: { anyOf: choices(['First Choice', 'Second Choice', 'Third Choice']) },
                  },
                },
                required: [],
              },
            },
          },
          ElicitResultSchema,
        );
        return text(elicitText('Elicitation completed', result));
      } catch (error) {
        return text(`Elicitation not supported or error: ${error.message}`);
      }
    },
  );
  mcp.registerTool(
    'json_schema_2020_12_tool',
    {
      description: 'Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)',
      inputSchema: {
        name: z.string().optional(),
        address: z.object({ street: z.string().optional(), city: z.string().optional() }).optional(),
      },
    },
    async (args) => text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`),
  );

  // ---- resources
  mcp.registerResource(
    'static-text',
    'test://static-text',
    { title: 'Static Text Resource', description: 'A static text resource for testing', mimeType: 'text/plain' },
    async () => ({
      contents: [
        { uri: 'test://static-text', mimeType: 'text/plain', text: 'This is the content of the static text resource.' },
      ],
    }),
  );
  mcp.registerResource(
    'static-binary',
    'test://static-binary',
    { title: 'Static Binary Resource', description: 'A static binary resource (image) for testing', mimeType: 'image/png' },
    async () => ({ contents: [{ uri: 'test://static-binary', mimeType: 'image/png', blob: TEST_IMAGE_BASE64 }] }),
  );
  mcp.registerResource(
    'template',
    new ResourceTemplate('test://template/{id}/data', { list: undefined }),
    {
      title: 'Resource Template',
      description: 'A resource template with parameter substitution',
      mimeType: 'application/json',
    },
    async (uri, { id }) => ({
      contents: [
        {
          uri: uri.toString(),
          mimeType: 'application/json',
          text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
        },
      ],
    }),
  );
  mcp.registerResource(
    'watched-resource',
    'test://watched-resource',
    { title: 'Watched Resource', description: 'A resource clients can subscribe to', mimeType: 'text/plain' },
    async () => ({
      contents: [{ uri: 'test://watched-resource', mimeType: 'text/plain', text: 'Watched resource content' }],
    }),
  );
  mcp.server.setRequestHandler(
    z.object({ method: z.literal('resources/subscribe') }).passthrough(),
    async ({ params }) => {
      subscriptions.add(params.uri);
      log('info', `Subscribed to resource: ${params.uri}`);
      return {};
    },
  );
  mcp.server.setRequestHandler(
    z.object({ method: z.literal('resources/unsubscribe') }).passthrough(),
    async ({ params }) => {
      subscriptions.delete(params.uri);
      log('info', `Unsubscribed from resource: ${params.uri}`);
      return {};
    },
  );

  // ---- prompts
  const user = (content) => ({ role: 'user', content });
  mcp.registerPrompt(
    'test_simple_prompt',
    { title: 'Simple Test Prompt', description: 'A simple prompt without arguments' },
    async () => ({ messages: [user({ type: 'text', text: 'This is a simple prompt for testing.' })] }),
  );
  mcp.registerPrompt(
    'test_prompt_with_arguments',
    {
      title: 'Prompt With Arguments',
      description: 'A prompt with required arguments',
      argsSchema: {
        arg1: z.string().describe('First test argument'),
        arg2: z.string().describe('Second test argument'),
      },
    },
    async ({ arg1, arg2 }) => ({
      messages: [user({ type: 'text', text: `Prompt with arguments: arg1='${arg1}', arg2='${arg2}'` })],
    }),
  );
  mcp.registerPrompt(
    'test_prompt_with_embedded_resource',
    {
      title: 'Prompt With Embedded Resource',
      description: 'A prompt that includes an embedded resource',
      argsSchema: { resourceUri: z.string().describe('URI of the resource to embed') },
    },
    async ({ resourceUri }) => ({
      messages: [
        user({
          type: 'resource',
          resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
        }),
        user({ type: 'text', text: 'Please process the embedded resource above.' }),
      ],
    }),
  );
  mcp.registerPrompt(
    'test_prompt_with_image',
    { title: 'Prompt With Image', description: 'A prompt that includes image content' },
    async () => ({
      messages: [
        user({ type: 'image', data: TEST_IMAGE_BASE64, mimeType: 'image/png' }),
        user({ type: 'text', text: 'Please analyze the image above.' }),
      ],
    }),
  );

  // ---- logging, completion
  mcp.server.setRequestHandler(
    z.object({ method: z.literal('logging/setLevel') }).passthrough(),
    async ({ params }) => {
      log('info', `Log level set to: ${params.level}`);
      return {};
    },
  );
  mcp.server.setRequestHandler(z.object({ method: z.literal('completion/complete') }).passthrough(), async () => ({
    completion: { values: [], total: 0, hasMore: false },
  }));

  // ---- tools/list: the SDK's own listing, except the raw 2020-12 schema for its test tool
  mcp.server.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: Object.entries(mcp._registeredTools)
      .filter(([, tool]) => tool.enabled)
      .map(([name, tool]) =>
        name === 'json_schema_2020_12_tool'
          ? { name, description: tool.description, inputSchema: JSON_SCHEMA_2020_12_INPUT_SCHEMA }
          : {
              name,
              title: tool.title,
              description: tool.description,
              inputSchema: tool.inputSchema
                ? toJsonSchemaCompat(tool.inputSchema, { strictUnions: true, pipeStrategy: 'input' })
                : { type: 'object', properties: {} },
              annotations: tool.annotations,
              _meta: tool._meta,
            },
      ),
  }));

  return mcp;
}

// ---------------------------------------------------------------- HTTP
const app = createMcpExpressApp({ host: '127.0.0.1' }); // Host/Origin validation (DNS rebinding)
const jsonRpcError = (res, status, code, message) =>
  res.status(status).json({ jsonrpc: '2.0', error: { code, message }, id: null });

app.post('/mcp', async (req, res) => {
  const sessionId = req.headers['mcp-session-id'];
  try {
    if (sessionId) {
      const transport = transports[sessionId];
      if (!transport) return jsonRpcError(res, 404, -32001, 'Session not found');
      return await transport.handleRequest(req, res, req.body);
    }
    if (req.body?.method !== 'initialize') {
      return jsonRpcError(res, 400, -32000, 'Bad Request: no valid session ID provided');
    }
    const server = createServer();
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore,
      retryInterval: 5000,
      onsessioninitialized: (sid) => {
        transports[sid] = transport;
      },
    });
    transport.onclose = () => {
      const sid = transport.sessionId;
      if (sid && transports[sid]) {
        delete transports[sid];
        server.close().catch(() => {});
      }
    };
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (error) {
    console.error('fixture: error handling POST:', error);
    if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal server error');
  }
});

const sessionRoute = (method) => async (req, res) => {
  const sessionId = req.headers['mcp-session-id'];
  if (!sessionId) return res.status(400).send('Missing session ID');
  const transport = transports[sessionId];
  if (!transport) return res.status(404).send('Session not found');
  try {
    await transport.handleRequest(req, res);
  } catch (error) {
    console.error(`fixture: error handling ${method}:`, error);
    if (!res.headersSent) res.status(500).send('Internal server error');
  }
};
app.get('/mcp', sessionRoute('GET'));
app.delete('/mcp', sessionRoute('DELETE'));

const port = Number(process.argv[2] || process.env.PORT || 0);
const listener = app.listen(port, '127.0.0.1', () => {
  console.log(`fixture listening on http://127.0.0.1:${listener.address().port}/mcp`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
