"""Load test of `bitmoji serve` on loopback: a few concurrent clients post batches of base64
faces to MLflow's scoring server for a fixed time; prints requests/s, images/s, p50/p99 latency
and errors per batch size.

    .venv/bin/python benchmarks/serve_load.py [--seconds 30] [--clients 4] [--batches 1,32]
        [--model-uri models:/bitmoji-gender@champion] [--workers 1] [--faces DIR]

It starts its own server on a free port (project store, @champion by default; run
`make export` first) and always stops it. Every request must answer 200 with no row error.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from bitmoji_ml.paths import EXPERIMENT, resolve_data_dir
from bitmoji_ml.report import format_table
from bitmoji_ml.serving import model_server
from bitmoji_ml.serving import processes as serving
from bitmoji_ml.serving.folder_engine import find_images
from bitmoji_ml.tracking.names import champion_uri
from bitmoji_ml.tracking.store import tracking_uri

REQUEST_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((model_server.HOST, 0))
        return probe.getsockname()[1]


def request_body(faces: list[Path], batch: int) -> bytes:
    rows = [[base64.b64encode(faces[index % len(faces)].read_bytes()).decode()] for index in range(batch)]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def one_request(url: str, body: bytes) -> bool:
    """True when the server answered 200 and every row has a prediction."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            rows = json.loads(response.read())["predictions"]
            return response.status == 200 and not any(row["error"] for row in rows)
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError):
        return False


def load(*, url: str, body: bytes, clients: int, seconds: float) -> tuple[list[float], int]:
    """Latencies of the successful requests and the error count, `clients` threads for `seconds`."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            ok = one_request(url, body)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def run(args: argparse.Namespace) -> list[list]:
    faces = find_images(args.faces or resolve_data_dir() / "testimages")[:64]
    port = free_port()
    command = model_server.serve_command(port=port, workers=args.workers)
    process = serving.start_process_group(
        command,
        env=model_server.serve_environment(store_uri=tracking_uri(), model_uri=args.model_uri),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        model_server.wait_until_ready(process, port)
        url = f"http://{model_server.HOST}:{port}/invocations"
        for batch in args.batches:
            body = request_body(faces, batch)
            one_request(url, body)  # warm-up
            latencies, errors = load(url=url, body=body, clients=args.clients, seconds=args.seconds)
            done = len(latencies)
            p50, p99 = (np.percentile(latencies, [50, 99]) * 1000) if done else (float("nan"),) * 2
            rate = done / args.seconds
            rows.append(
                [
                    batch,
                    args.clients,
                    done,
                    round(rate, 1),
                    round(rate * batch),
                    round(p50, 1),
                    round(p99, 1),
                    errors,
                ]
            )
    finally:
        serving.stop_process_group(process)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batches", type=lambda text: [int(v) for v in text.split(",")], default=[1, 32])
    parser.add_argument("--model-uri", default=champion_uri(EXPERIMENT))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--faces", type=Path, default=None)
    args = parser.parse_args()
    rows = run(args)
    headers = ["batch", "clients", "requests", "requests/s", "images/s", "p50 ms", "p99 ms", "errors"]
    print(
        f"bitmoji serve load test: {args.model_uri}, {args.workers} worker(s), {args.seconds:g} s per batch size"
    )
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
