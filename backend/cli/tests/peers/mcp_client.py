"""A real MCP client (the official Python SDK) driven by Gatehouse's end-to-end tests.

Usage: mcp_client.py URL TOKEN STEPS_JSON [MODE]
MODE is the client's `mode` ("auto" by default: it probes server/discover and speaks MCP 2026-07-28
through the gateway; "legacy" pins the 2025 era's initialize handshake and session).
STEPS_JSON is a list of steps: ["list"], ["list_full"] (whole tool definitions), ["call", NAME, ARGS], ["mark"] (prints the results so far as
one JSON line and flushes, so a test can act while this session stays open), or
["list_until", NAME, SECONDS] (lists tools in the same session until NAME appears). Prints one JSON object:
{"protocolVersion": ..., "serverInfo": ..., "results": [...]}, one result per step:
{"tools": [names]} | {"content": [...], "isError": bool} | {"error": {"code", "message", "data"}}.
Exit code 0 when the session worked (a refused call is a result, not a failure).
"""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


async def main(url: str, token: str, steps: list, mode: str = "auto") -> dict:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    out: dict = {"results": []}
    async with http:
        transport = streamable_http_client(url, http_client=http)
        # No response cache: the tests check that policy changes show up at once.
        async with Client(transport, mode=mode, cache=None, read_timeout_seconds=20) as client:
            out["protocolVersion"] = client.protocol_version
            info = client.server_info
            out["serverInfo"] = info.model_dump(mode="json") if info is not None else None
            for step in steps:
                try:
                    if step[0] == "list":
                        res = await client.list_tools()
                        out["results"].append({"tools": [t.name for t in res.tools]})
                    elif step[0] == "list_full":
                        res = await client.list_tools()
                        out["results"].append(
                            {"tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in res.tools]}
                        )
                    elif step[0] == "mark":
                        print(json.dumps(out), flush=True)
                        out["results"].append({"marked": True})
                    elif step[0] == "list_until":
                        loop = asyncio.get_running_loop()
                        start = loop.time()
                        while True:
                            res = await client.list_tools()
                            names = [t.name for t in res.tools]
                            if step[1] in names or loop.time() - start > step[2]:
                                break
                            await asyncio.sleep(0.05)
                        out["results"].append({"tools": names, "seconds": loop.time() - start})
                    elif step[0] == "call":
                        res = await client.call_tool(step[1], step[2])
                        out["results"].append(
                            {"content": [c.model_dump(mode="json") for c in res.content], "isError": bool(res.is_error)}
                        )
                    else:
                        raise SystemExit(f"unknown step {step!r}")
                except MCPError as e:
                    out["results"].append({"error": {"code": e.code, "message": e.message, "data": e.data}})
    return out


if __name__ == "__main__":
    url, token, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "auto"
    print(json.dumps(asyncio.run(main(url, token, steps, mode))))
