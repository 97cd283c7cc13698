"""The README's three-step analysis through the official Python MCP SDK's HTTP client.

Usage: python python_sdk_http.py URL  (run by .ci/python-sdk against `kernel-mcp serve --listen`).
Works whichever protocol era the SDK picks: with 2026-07-28 the first call starts a session and
names its handle, which the later calls pass as `session`.
"""
import asyncio
import re
import sys

from mcp import Client


def texts(result):
    return "".join(getattr(block, "text", "") or "" for block in result.content)


async def main(url):
    async with Client(url) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "execute_python" in tools, tools
        csv = "month,region,revenue\n1,north,120\n1,south,95\n2,north,135\n2,south,101\n"
        r = await client.call_tool("write_file", {"path": "sales.csv", "content": csv})
        assert not r.is_error, texts(r)
        handle = re.search(r'session handle "([0-9a-f]+)"', texts(r))
        extra = {"session": handle.group(1)} if handle else {}
        print("era:", "2026-07-28 (session handle)" if handle else "2025-11-25 (MCP session)")
        load = "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)"
        r = await client.call_tool("execute_python", {"code": load, **extra})
        assert texts(r) == "(4, 3)\n", texts(r)
        summary = "print(df.groupby('region')['revenue'].sum().to_dict())"
        r = await client.call_tool("execute_python", {"code": summary, **extra})
        assert texts(r) == "{'north': 255, 'south': 196}\n", texts(r)
        plot = "import matplotlib.pyplot as plt\nplt.plot(df['revenue'])\nplt.show()"
        r = await client.call_tool("execute_python", {"code": plot, **extra})
        kinds = [getattr(b, "mime_type", None) or getattr(b, "mimeType", None) for b in r.content]
        assert not r.is_error and "image/png" in kinds, (texts(r), kinds)
        print("three steps: load, summarise, plot: ok")


asyncio.run(main(sys.argv[1]))
