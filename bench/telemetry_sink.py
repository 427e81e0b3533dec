"""A stand-in control plane that only drains the sidecars' telemetry (``--telemetry sink``).

    python bench/telemetry_sink.py PORT

Accepts the sidecar stream (``/v1/sidecar/stream``) with any token, never sends a
snapshot (each sidecar keeps routing with the one it started from), reads and
discards every message, and on SIGTERM prints one JSON line: the telemetry
records received per sidecar instance. With it, a sidecar's cost includes
serialising its records and sending them every 100 ms, as with a real control
plane; without it, records wait in the sidecar's bounded buffer.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import WSMsgType, web

from proxy.control import STREAM_PATH


async def serve(port: int) -> dict[str, int]:
    received: dict[str, int] = {}

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        instance = "?"
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data.get("type") == "hello":
                instance = str(data.get("node", {}).get("instance", "?"))
            elif data.get("type") == "telemetry":
                received[instance] = received.get(instance, 0) + len(data.get("records", ()))
        return ws

    app = web.Application()
    app.router.add_get(STREAM_PATH, stream)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    return received  # the open streams are cancelled with the loop


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    received = asyncio.run(serve(int(sys.argv[1])))
    print(json.dumps({"records": received}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
