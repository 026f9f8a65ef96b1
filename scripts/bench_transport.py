#!/usr/bin/env python3
"""CPU per request of `ledger`'s Webex client alone: no ledger, no rows, no decisions.

Serves the simulator in this process, then runs the client in a child process (so that the
simulator's CPU is not counted) with 1, 4 and 32 threads sending `GET /licenses`, and, for
scale, the standard library's `http.client` on one thread. Prints the child's CPU (user +
system) per request for each. What is left of `work`'s CPU per request beyond this figure is
the ledger, the rows' steps and the batches, not the transport.

    .venv/bin/python scripts/bench_transport.py [--requests 6000] [--threads 1,4,32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

from ledger.simulator import Simulator
from ledger.simulator.server import running_server

TOKEN = "bench-transport-token"
WARM_UP = 50


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client_line(base_url: str, threads: int, requests: int) -> str:
    from ledger.config import load_settings
    from ledger.connection_client import WebexClient

    settings = load_settings(WEBEX_BASE_URL=base_url, WEBEX_ACCESS_TOKEN=TOKEN)
    client = WebexClient(settings)
    each = max(1, requests // threads)
    for _ in range(WARM_UP):
        client.request("GET", "/licenses")

    def send() -> None:
        for _ in range(each):
            client.request("GET", "/licenses")

    workers = [threading.Thread(target=send) for _ in range(threads)]
    cpu, wall = _cpu_s(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
    client.close()
    sent = each * threads
    return (
        f"WebexClient, {threads:>2} thread(s): {1000 * cpu / sent:.3f} ms CPU per request "
        f"({sent:,} requests, {sent / wall:,.0f} req/s)"
    )


def _stdlib_line(base_url: str, requests: int) -> str:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    path = f"{parts.path}/licenses"

    def one() -> None:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        json.loads(answer.read())

    for _ in range(WARM_UP):
        one()
    cpu, wall = _cpu_s(), time.perf_counter()
    for _ in range(requests):
        one()
    cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
    connection.close()
    return (
        f"http.client,  1 thread(s): {1000 * cpu / requests:.3f} ms CPU per request "
        f"({requests:,} requests, {requests / wall:,.0f} req/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--threads", default="1,4,32")
    parser.add_argument("--child", nargs=2, metavar=("BASE_URL", "THREADS"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        base_url, threads = options.child
        if threads == "stdlib":
            print(_stdlib_line(base_url, options.requests))
        else:
            print(_client_line(base_url, int(threads), options.requests))
        return
    with running_server(Simulator(token=TOKEN)) as base_url:
        for threads in [*options.threads.split(","), "stdlib"]:
            command = [sys.executable, __file__, "--requests", str(options.requests)]
            child = subprocess.run(
                [*command, "--child", base_url, threads.strip()],
                capture_output=True,
                text=True,
                check=False,
            )
            print(child.stdout.strip() or f"child failed: {child.stderr.strip()[-300:]}")


if __name__ == "__main__":
    main()
