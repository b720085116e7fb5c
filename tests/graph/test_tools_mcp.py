"""``Tool.from_mcp``: the tools of a real MCP server (the official ``mcp`` package),
started over stdio by the test, called from a tool loop."""

from __future__ import annotations

import json
import pathlib
import sys
import textwrap
from typing import Any

import anyio
import pytest

from spangraph import Instruction, Tool, arun, generate, options
from spangraph.engines import ScriptedEngine

mcp = pytest.importorskip("mcp")
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

SERVER = textwrap.dedent(
    '''
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("licence")


    @server.tool()
    def count_words(text: str) -> int:
        """Count the words of a text."""
        return len(text.split())


    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise ValueError(reason)


    server.run("stdio")
    '''
)


@pytest.fixture
def server(tmp_path: pathlib.Path) -> StdioServerParameters:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return StdioServerParameters(command=sys.executable, args=[str(script)])


def model(request: Any) -> str:
    text = request.prompt.text
    if "Tool result (fail" in text:
        return json.dumps({"answer": "done"})
    if "Tool result (count_words" in text:
        return ScriptedEngine.tool_call("fail", reason="on purpose")
    if "Tool result" not in text:
        return ScriptedEngine.tool_call("count_words", text="one two three")
    return json.dumps({"answer": "?"})


def test_an_mcp_servers_tools_are_called_as_tool_nodes(server: StdioServerParameters) -> None:
    anyio.run(called_as_tool_nodes, server)


async def called_as_tool_nodes(server: StdioServerParameters) -> None:
    async with stdio_client(server) as (read, write), mcp.ClientSession(read, write) as session:
        await session.initialize()
        tools = await Tool.from_mcp(session)
        by_name = {t.name: t for t in tools}
        assert set(by_name) == {"count_words", "fail"}
        assert by_name["count_words"].description == "Count the words of a text."
        assert by_name["count_words"].schema["properties"]["text"]["type"] == "string"
        assert not by_name["count_words"].cache  # a server's tool may have side effects
        with options(temperature=0):
            answer = generate(Instruction(description="Count."), tools=tools)
        result = await arun(answer, engine=ScriptedEngine(model), progress=False)
    assert result.status == "done" and answer.parsed == "done"
    counted, failed = (r.calls[0] for r in answer.tool_calls)
    assert counted.ok and counted.value in (3, {"result": 3}, "3")
    assert not failed.ok and failed.error_type == "MCPToolError"  # the server said isError
    assert "fail" in (failed.error or "")
    assert result.log is not None and len(result.log.filter(kind="tool")) == 2


def test_mcp_arguments_are_checked_against_the_servers_schema(
    server: StdioServerParameters,
) -> None:
    anyio.run(arguments_checked, server)


async def arguments_checked(server: StdioServerParameters) -> None:
    def bad(request: Any) -> str:
        if "Tool result" in request.prompt.text:
            return json.dumps({"answer": "gave up"})
        return ScriptedEngine.tool_call("count_words", text=42)

    async with stdio_client(server) as (read, write), mcp.ClientSession(read, write) as session:
        await session.initialize()
        tools = await Tool.from_mcp(session)
        with options(temperature=0):
            answer = generate(Instruction(description="Count."), tools=tools)
        await arun(answer, engine=ScriptedEngine(bad), progress=False)
    (outcome,) = answer.tool_calls[0].calls
    assert outcome.error_type == "arguments" and "not of type 'string'" in (outcome.error or "")
