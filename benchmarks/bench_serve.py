"""Ray Serve load benchmark on loopback: batching on vs off at concurrency 1, 8, 32.

    python benchmarks/bench_serve.py --model runs/tiny_cpu/stage2/model [--dtype bfloat16]

Prints throughput (requests/s), p50/p99 latency and errors for each setting. Bounded: at
most ``--requests`` requests per setting and ``--timeout`` seconds per request.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

PORT = 8124
ROOT = Path(__file__).resolve().parent.parent  # serve/ lives in the checkout
sys.path.insert(0, str(ROOT))


def body(n_events: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0, n_events))
    return {
        "events": [
            {
                "time": float(t),
                "type": int(rng.integers(0, 4)),
                "text": "Power outage across 12 buildings in the north district.",
            }
            for t in times
        ],
        "tasks": ["time", "type"],
    }


def load(concurrency: int, requests: int, timeout: float) -> dict:
    url = f"http://127.0.0.1:{PORT}/v1/predict"
    latencies, errors = [], 0

    # One client for all threads: kept-alive connections, so the load generator spends its
    # share of the 2 CPUs on requests rather than on TLS contexts and TCP handshakes.
    client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=concurrency))

    def one(i: int) -> float | None:
        t0 = time.perf_counter()
        try:
            r = client.post(url, json=body(20, i))
            return time.perf_counter() - t0 if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    t0 = time.perf_counter()
    with client, cf.ThreadPoolExecutor(concurrency) as pool:
        for lat in pool.map(one, range(requests)):
            if lat is None:
                errors += 1
            else:
                latencies.append(lat)
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "rps": len(latencies) / wall,
        "p50": np.percentile(lat, 50),
        "p99": np.percentile(lat, 99),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="trained model directory")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument(
        "--replica-cpus",
        type=float,
        default=os.cpu_count() or 1,
        help="CPUs (torch threads) of the one replica; default: all",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="inference dtype of the replica (default: as trained)",
    )
    args = parser.parse_args()
    import ray
    from ray import serve

    from serve.app import MMTPPServer, ServerConfig, wait_until_healthy

    ray.init(
        num_cpus=max(2, math.ceil(args.replica_cpus)),
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    results = {}
    for batching, size in (("off", 1), ("on", 32)):
        config = ServerConfig(
            model_dir=args.model, max_batch_size=size, batch_wait_timeout_s=0.05, dtype=args.dtype
        )
        # Both settings run one replica on --replica-cpus CPUs (its torch threads) and admit
        # the same 64 requests (serve/config.yaml): with fewer, the unbatched replica would
        # also pay the router's back-off at concurrency 32.
        deployment = MMTPPServer.options(
            max_ongoing_requests=64, ray_actor_options={"num_cpus": args.replica_cpus}
        )
        app = deployment.bind(config.model_dump())
        serve.run(app, name="bench", route_prefix="/")
        wait_until_healthy(f"http://127.0.0.1:{PORT}")
        load(4, 8, args.timeout)  # warm-up
        for concurrency in (1, 8, 32):
            requests = min(args.requests, 64) if concurrency == 1 else args.requests
            results[(batching, concurrency)] = load(concurrency, requests, args.timeout)
        serve.delete("bench")
    serve.shutdown()
    print(f"{'batching':<9}{'conc.':>6}{'req/s':>9}{'p50 s':>8}{'p99 s':>8}{'errors':>8}")
    for (batching, conc), r in results.items():
        print(
            f"{batching:<9}{conc:>6}{r['rps']:>9.2f}{r['p50']:>8.2f}{r['p99']:>8.2f}"
            f"{r['errors']:>8}"
        )
    for conc in (8, 32):
        gain = results[("on", conc)]["rps"] / results[("off", conc)]["rps"]
        print(f"throughput with batching at concurrency {conc}: {gain:.1f}x")


if __name__ == "__main__":
    main()
