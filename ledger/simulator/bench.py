"""Measure the socket server's throughput: `python -m ledger.simulator.bench`.

Starts `ledger sim`'s server in a child process (or targets `--url`), then drives it from
several client processes over keep-alive connections with the request mix of a provisioning
run: lookups by email, creates, location lookups, license reads. Clients use `http.client`,
which costs far less CPU per request than httpx, so that on a small machine the number
measured is the server's, not the load generator's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import threading
import time
import uuid
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from urllib.parse import urlsplit

import httpx

from ledger.simulator.core import Simulator
from ledger.simulator.server import SimServer

AUTH = {"Authorization": "Bearer bench", "Content-Type": "application/json"}


def _serve(port: int, ready: EventType) -> None:
    server = SimServer(Simulator(), "127.0.0.1", port)
    ready.set()
    server.serve_forever()


def _paths(base_path: str, email: str, step: int) -> tuple[str, str, str | None]:
    """The request mix of a provisioning run: method, path, body."""
    if step == 0:
        return "GET", f"{base_path}/people?email={email}&callingData=true", None
    if step == 1:
        body = json.dumps({"emails": [email], "displayName": "Bench User"})
        return "POST", f"{base_path}/people?callingData=true", body
    if step == 2:
        return "GET", f"{base_path}/locations?name=austin", None
    return "GET", f"{base_path}/licenses", None


def _client(
    base: str, seconds: float, threads: int, tag: str, use_httpx: bool, out: Queue[int]
) -> None:
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    counts = [0] * threads

    def run(index: int) -> None:
        deadline = time.perf_counter() + seconds
        done = 0
        with httpx.Client(base_url=origin, headers=AUTH, timeout=30) as client:
            connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
            while time.perf_counter() < deadline:
                method, path, body = _paths(
                    parts.path, f"{tag}-{index}-{done}@example.com", done % 4
                )
                if use_httpx:
                    status = client.request(method, path, content=body).status_code
                else:
                    connection.request(method, path, body, AUTH)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                if status >= 300:
                    raise RuntimeError(f"{method} {path}: unexpected status {status}")
                done += 1
            connection.close()
        counts[index] = done

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(sum(counts))


def main() -> None:
    """Run the benchmark and print requests per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="base URL of a running simulator (default: start one)")
    parser.add_argument("--port", type=int, default=8931, help="port of the server started")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="connections per client process")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the run")
    parser.add_argument("--httpx", action="store_true", help="load with httpx, as ledger does")
    args = parser.parse_args()
    server: multiprocessing.Process | None = None
    base = args.url
    if base is None:
        ready = multiprocessing.Event()
        server = multiprocessing.Process(target=_serve, args=(args.port, ready), daemon=True)
        server.start()
        ready.wait(10)
        base = f"http://127.0.0.1:{args.port}/v1"
    results: Queue[int] = multiprocessing.Queue()
    tag = uuid.uuid4().hex[:8]
    clients = [
        multiprocessing.Process(
            target=_client,
            args=(base, args.seconds, args.threads, f"{tag}{n}", args.httpx, results),
        )
        for n in range(args.procs)
    ]
    for client in clients:
        client.start()
    total = sum(results.get(timeout=args.seconds + 60) for _ in clients)
    for client in clients:
        client.join()
    if server is not None:
        server.terminate()
    print(
        f"{total} requests in {args.seconds:.0f} s = {total / args.seconds:.0f} requests/s "
        f"({args.procs} client processes x {args.threads} keep-alive connections, "
        f"{'httpx' if args.httpx else 'http.client'})"
    )


if __name__ == "__main__":
    main()
