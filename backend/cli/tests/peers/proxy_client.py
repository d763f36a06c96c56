"""A real MCP client (the official Python SDK) driven by Gatehouse's proxy tests
(backend/cli/tests/proxy_peers.rs). Usage: proxy_client.py URL TOKEN [MODE]

MODE is the client's `mode`: "legacy" (the default) pins the 2025 era (initialize handshake, session),
"auto" probes server/discover and, against the gateway, speaks MCP 2026-07-28.

Walks: tools (list, call, a long-running call with progress), a server-initiated sampling request,
resources (list + read), prompts (list + get), ping. Prints one JSON object with what it saw. In the
2026-07-28 era there is no sampling request (the gateway does not relay server requests to such
clients, docs/decisions/0018) and no ping (removed from the protocol): those steps are skipped.
"""

import asyncio
import json
import sys

from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url: str, token: str, mode: str) -> dict:
    out: dict = {}
    sampled = []

    async def sampling(context, params):
        sampled.append(params.max_tokens)
        return types.CreateMessageResult(
            role="assistant", model="test-model", content=types.TextContent(type="text", text="sampled by Python")
        )

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport, mode=mode, cache=None, read_timeout_seconds=30, sampling_callback=sampling
        ) as client:
            out["protocolVersion"] = client.protocol_version
            modern = client.protocol_version == "2026-07-28"
            out["tools"] = [t.name for t in (await client.list_tools()).tools]
            echo = await client.call_tool("echo", {"message": "hi from Python"})
            out["echo"] = [c.model_dump(mode="json") for c in echo.content]
            progress = []

            async def on_progress(value, total, message):
                progress.append(value)

            long = await client.call_tool(
                "trigger-long-running-operation", {"duration": 2, "steps": 4}, progress_callback=on_progress
            )
            out["long"] = {"content": [c.model_dump(mode="json") for c in long.content], "progress": progress}
            if not modern:
                asked = await client.call_tool("trigger-sampling-request", {"prompt": "hello", "maxTokens": 10})
                out["sampling"] = {
                    "content": [c.model_dump(mode="json") for c in asked.content],
                    "handled": len(sampled),
                }
            resources = (await client.list_resources()).resources
            out["resources"] = len(resources)
            read = await client.read_resource(str(resources[0].uri))
            out["read"] = read.contents[0].model_dump(mode="json")
            out["prompts"] = [p.name for p in (await client.list_prompts()).prompts]
            got = await client.get_prompt("simple-prompt", {})
            out["prompt"] = [m.model_dump(mode="json") for m in got.messages]
            if not modern:
                await client.send_ping()
                out["ping"] = True
    return out


if __name__ == "__main__":
    # Legacy by default: the sampling step needs the 2025 era's server-to-client requests.
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "legacy"))))
