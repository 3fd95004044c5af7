"""Load on clients/serve.py over loopback: throughput, latency, errors and
the server's memory, with and without hostile bodies mixed in.

    python bench/serve_load.py MODEL.onnx IMAGE_FOLDER [--clients 1,8,64]
                               [--requests 2000] [--hostile 0.1] [--unbatched]

Starts `python clients/serve.py MODEL.onnx --port P --max_mb 4` (a free port
of 127.0.0.1), then for each number of clients, first with good requests
only and then with --hostile of them hostile: that many aiohttp clients,
each sending its share of --requests one after another (POST /predict, the
images of IMAGE_FOLDER in turn, raw body). Hostile bodies, in turn: empty,
random bytes, a cut JPEG, a text/plain body, 5 MB (over --max_mb) and a PNG
whose header claims 20000x20000 pixels. An error is a good request not
answered 200 with results, or a hostile one not answered 4xx with one
line, or a failed connection. The server's RSS (VmRSS of its process) is
read every 0.2 s: printed per run as at its start and its peak, and at the
end as a curve over the whole benchmark (flat after warm-up: no growth).
--unbatched runs the same against a server started with --max_batch 1
(one image per run of the model), for the gain of batching.

The load generator runs on the same cores as the server: the figures are a
floor for a server on its own machine.
"""
import argparse
import asyncio
import glob
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_name():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return f"{name}, {os.cpu_count()} cores"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_claiming(width, height):
    """A PNG whose header claims width x height, with almost no data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def hostile_bodies(jpeg):
    """(body, content type) of each kind of hostile request."""
    return [(b"", "image/jpeg"), (os.urandom(2000), "image/jpeg"),
            (jpeg[:len(jpeg) // 2], "image/jpeg"), (jpeg, "text/plain"),
            (b"\xff" * (5 << 20), "image/jpeg"), (png_claiming(20000, 20000), "image/png")]


class Server:
    """clients/serve.py running, and its RSS sampled."""

    def __init__(self, model, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "clients", "serve.py"), model, "--port",
             str(self.port), "--max_mb", "4", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
                break
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"the server did not start: {self.process.stderr.read()}")
                time.sleep(0.2)
        self.samples = []  # (seconds since start, RSS MB)
        self._started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def rss_mb(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))

    def _sample(self):
        while not self._stop.wait(0.2):
            self.samples.append((time.time() - self._started, self.rss_mb()))

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.process.terminate()
        self.process.wait(30)


async def load(url, bodies, clients, requests):
    """Sends requests (each (body, content type, good?)) from `clients`
    concurrent clients: (latencies of the good ones in s, errors, seconds)."""
    import aiohttp
    latencies, errors = [], []
    queue = list(reversed(range(requests)))

    async def client(session):
        while queue:
            body, content_type, good = bodies[queue.pop() % len(bodies)]
            started = time.perf_counter()
            try:
                async with session.post(url + "/predict", data=body,
                                        headers={"Content-Type": content_type}) as answer:
                    document = await answer.json(content_type=None)
                    status = answer.status
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")
                continue
            if good and status == 200 and "results" in document:
                latencies.append(time.perf_counter() - started)
            elif not good and 400 <= status < 500 and "\n" not in document.get("error", "\n"):
                pass
            else:
                errors.append(f"{'good' if good else 'hostile'} request answered {status}: "
                              f"{str(document)[:200]}")

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return latencies, errors, seconds


def request_mix(images, hostile_share):
    """The bodies in the order they are sent: every 1/hostile_share-th hostile."""
    good = [(data, "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png", True)
            for data in images]
    if not hostile_share:
        return good
    bad = [(body, content_type, False) for body, content_type in hostile_bodies(images[0])]
    every = round(1 / hostile_share)
    mix, bad_index = [], 0
    for index, item in enumerate(good * every):
        if index % every == every - 1:
            mix.append(bad[bad_index % len(bad)])
            bad_index += 1
        else:
            mix.append(item)
    return mix


def run_levels(server, images, args, label):
    rows = []
    for clients in args.clients:
        for share in (0, args.hostile):
            bodies = request_mix(images, share)
            asyncio.run(load(server.url, bodies, clients, min(args.requests, 4 * clients)))
            rss_before = server.rss_mb()
            latencies, errors, seconds = asyncio.run(
                load(server.url, bodies, clients, args.requests))
            peak = max(mb for t, mb in server.samples[-int(seconds / 0.2) - 1:]) \
                if server.samples else server.rss_mb()
            answered = len(latencies)
            rows.append((label, clients, share, args.requests, answered / seconds,
                         1000 * np.percentile(latencies, 50), 1000 * np.percentile(latencies, 99),
                         len(errors), rss_before, peak))
            print(f"  {label}: {clients} clients, {share:.0%} hostile: {answered / seconds:.0f} "
                  f"good req/s, {len(errors)} errors {errors[:2]}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images", help="a folder of images, searched recursively")
    parser.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")],
                        default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=2000, help="per run")
    parser.add_argument("--images", dest="count", type=int, default=200,
                        help="distinct images sent")
    parser.add_argument("--hostile", type=float, default=0.1)
    parser.add_argument("--unbatched", action="store_true")
    args = parser.parse_args()
    paths = sorted(p for p in glob.glob(os.path.join(args.images, "**", "*"), recursive=True)
                   if os.path.isfile(p))
    rng = np.random.default_rng(0)
    paths = [paths[i] for i in rng.choice(len(paths), min(args.count, len(paths)), False)]
    images = [open(p, "rb").read() for p in paths]
    print(f"CPU: {cpu_name()}; {os.path.basename(args.model)}; {len(images)} images of "
          f"{np.mean([len(i) for i in images]) / 1e3:.1f} KB on average")
    rows = []
    for label, flags in [("batched", ())] + ([("unbatched", ("--max_batch", "1"))]
                                             if args.unbatched else []):
        server = Server(args.model, *flags)
        try:
            rows += run_levels(server, images, args, label)
        finally:
            server.stop()
        curve = server.samples
        marks = [curve[min(len(curve) - 1, int(len(curve) * q))] for q in
                 (0, 0.1, 0.25, 0.5, 0.75, 1)] if curve else []
        print(f"  {label} server RSS over the run (s: MB): "
              + ", ".join(f"{t:.0f}: {mb:.0f}" for t, mb in marks))
    print("\n| server | clients | hostile | requests | good req/s | p50 ms | p99 ms | errors "
          "| RSS MB at start, peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, clients, share, count, rate, p50, p99, errors, before, peak in rows:
        print(f"| {label} | {clients} | {share:.0%} | {count} | {rate:,.0f} | {p50:.1f} | "
              f"{p99:.1f} | {errors} | {before:.0f}, {peak:.0f} |")


if __name__ == "__main__":
    main()
