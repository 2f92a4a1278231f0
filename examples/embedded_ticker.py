"""Run fastpush inside your own asyncio program and push prices without HTTP.

    python examples/embedded_ticker.py            # runs for 5 seconds
    python examples/embedded_ticker.py 60         # or for 60

Connect a client meanwhile, e.g. with the URL it prints:
    python -m websockets '<url>'
"""
import asyncio
import random
import sys

import uvloop

import fastpush


async def main(seconds: float) -> None:
    async with fastpush.Server(port=0) as server:
        print("connection string:", server.connection_string)
        print("subscriber URL:   ", server.client_access_url("ticker", groups=("prices",)))
        prices = server.hub("ticker")
        price = 100.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            price = round(price * (1 + random.uniform(-0.001, 0.001)), 2)
            await prices.send_to_group("prices", {"symbol": "ACME", "price": price})
            print(f"ACME {price:.2f}", end="\r")
            await asyncio.sleep(0.5)
    print("\nstopped cleanly")


if __name__ == "__main__":
    uvloop.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))
