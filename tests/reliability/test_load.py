"""A bounded load test of the app's HTTP API on loopback: the real Gradio app (``create_app``)
over the fake generator of the app tests, 200 generate requests, 8 at a time. No request fails,
each response is its own request's adapter, and memory stays flat. Latency percentiles and
memory are printed (run with -s), not asserted."""

from __future__ import annotations

import gc
import json
import os
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from app import create_app
from hypergen.adapter_io import LoraAdapter
from tests.app.helpers import TASKS

REQUESTS, AT_ONCE, SESSIONS = 200, 8, 32
"""Every API call is a session; the app keeps the last ``MAX_SESSIONS`` (here fewer, so the
warm-up fills them and the measured requests evict old ones, as a long-running server does)."""
WARM_UP = SESSIONS + 16
MAX_GROWTH_MB = 100
"""Bound on resident memory growth over the 200 requests. With gradio's default of 10,000 kept
sessions this app grew ~0.2 MB a request (the fake generator's tiny adapters; real ones hold
MBs); what remains is malloc arena fragmentation across threads (flat with MALLOC_ARENA_MAX=2)."""

pytestmark = pytest.mark.slow


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base: str, api: str, data: list) -> list:
    """One request through Gradio's HTTP API: POST, then read the event stream to the end."""
    post = urllib.request.Request(
        f"{base}/gradio_api/call/{api}",
        data=json.dumps({"data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=120) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{base}/gradio_api/call/{api}/{event_id}", timeout=120) as stream:
        event = None
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line.split(":", 1)[1])
                if event == "error":
                    raise RuntimeError(f"{api} failed: {payload}")
                return payload
    raise RuntimeError(f"{api}: the stream ended without a result")


def _request(i: int) -> tuple[str, int]:
    """The i-th request's description and seed (8 tasks, phrased differently)."""
    return f"{TASKS[i % len(TASKS)]} (variant {i})", i


@pytest.fixture(scope="module")
def server(fake_generator):
    demo = create_app(fake_generator, concurrency=AT_ONCE)
    port = _free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        state_session_capacity=SESSIONS,  # what `python -m app` passes as MAX_SESSIONS
    )
    yield demo, f"http://127.0.0.1:{port}"
    demo.close()


def test_200_generate_requests_8_at_a_time(server, fake_generator):
    demo, url = server

    def one(i: int) -> tuple[int, float, list | Exception]:
        description, seed = _request(i)
        start = time.perf_counter()
        try:
            out = _call(url, "on_generate", [description, 1, 0.0, seed])
        except Exception as exc:  # counted, then reported by the assertion below
            out = exc
        return i, time.perf_counter() - start, out

    with ThreadPoolExecutor(AT_ONCE) as pool:
        warm = list(pool.map(one, range(REQUESTS, REQUESTS + WARM_UP)))
        gc.collect()
        before = _rss_mb()
        results = list(pool.map(one, range(REQUESTS)))
        gc.collect()
        after = _rss_mb()
    errors = [(i, out) for i, _, out in warm + results if isinstance(out, Exception)]
    latency = np.array([s for _, s, _ in results]) * 1000
    print(
        f"\nload: {len(results)} generate requests over HTTP, {AT_ONCE} at a time: "
        f"{len(errors)} errors; latency p50 {np.percentile(latency, 50):.0f} ms, "
        f"p95 {np.percentile(latency, 95):.0f} ms, max {latency.max():.0f} ms; "
        f"RSS {before:.0f} MB before, {after:.0f} MB after ({after - before:+.0f} MB)"
    )
    assert errors == []
    for i, _, out in results:
        _check_own_result(fake_generator, i, out)
    assert len(demo.state_holder.session_data) <= SESSIONS
    assert after - before < MAX_GROWTH_MB


def _check_own_result(fake_generator, i: int, out: list) -> None:
    """The response carries request i's neighbours and, in its zip, request i's adapter."""
    description, seed = _request(i)
    want = fake_generator.generate(description, seed=seed)
    status, table, download = out[1], out[4], out[7]  # out[2] is the confidence gauge
    assert status.startswith("Made an adapter"), status
    assert [row[1] for row in table["data"]] == [e for e, _, _ in want.neighbors]
    adapter = LoraAdapter.from_pretrained(Path(download["path"]))
    assert adapter.metadata["description"] == description
    for key, value in want.adapter.weights.items():
        assert torch.equal(adapter.weights[key], value), (i, key)
