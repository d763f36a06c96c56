"""A real MCP 2026-07-28 server (the official Python SDK's MCPServer, mcp 2.3.0, Streamable HTTP,
stateless) for Gatehouse's protocol tests (backend/cli/tests/protocol_2026.rs).

Usage: modern_server.py PORT. Serves http://127.0.0.1:PORT/mcp until killed. It answers
`server/discover` (so the gateway speaks 2026-07-28 to it) and the 2025-era handshake too (the
control plane's tool discovery uses it). Tools: `echo`, `where` (its `region` argument is mirrored in
the `Mcp-Param-Region` header, and the tool reports what the header said), `slow` (progress),
`confirm` (asks the client to confirm by elicitation: an `input_required` result, MRTR); one
resource and one prompt.
"""

import sys
from typing import Annotated

from pydantic import BaseModel, Field

from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve

server = MCPServer("modern-peer")


@server.tool()
def echo(message: str) -> str:
    """Echoes the message back."""
    return f"modern echo: {message}"


@server.tool(name="where")
def where(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], ctx: Context) -> str:
    """Reports the region argument and the Mcp-Param-Region header the server received."""
    request = getattr(ctx.request_context, "request", None)
    header = request.headers.get("mcp-param-region") if request is not None else None
    return f"region={region} header={header}"


@server.tool()
async def slow(steps: int, ctx: Context) -> str:
    """Reports progress `steps` times, then answers."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps)
    return f"done after {steps} steps"


class Confirmation(BaseModel):
    ok: bool


def ask_confirmation(what: str) -> Elicit[Confirmation]:
    return Elicit(f"Really {what}?", Confirmation)


@server.tool()
def confirm(what: str, answer: Annotated[Confirmation, Resolve(ask_confirmation)]) -> str:
    """Asks the client to confirm (elicitation, as an input_required result), then reports the answer."""
    return f"{what}: confirmed={answer.ok}"


@server.resource("modern://note")
def note() -> str:
    """A note."""
    return "a note from the 2026-07-28 server"


@server.prompt()
def greet(name: str) -> str:
    """Greets someone."""
    return f"Hello, {name}!"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), stateless_http=True)
