"""A WebSocket upstream for the egress proxy's tests: the real `websockets` server.
Prints its port, then serves until stdin closes. Each message is echoed as
`echo:<message>`; the first message answered is preceded by one telling the
`authorization` header the handshake carried. A handshake to a path ending in `/refuse`
is refused with 403."""

import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.http11 import Response
from websockets.datastructures import Headers


async def echo(ws):
    await ws.send("auth=" + ws.request.headers.get("authorization", ""))
    async for message in ws:
        await ws.send("echo:" + message)


def refuse(connection, request):
    if request.path.endswith("/refuse"):
        return Response(403, "Forbidden", Headers([("content-type", "text/plain")]), b"the upstream refuses\n")
    return None


async def main():
    async with serve(echo, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
