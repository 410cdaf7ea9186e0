"""The service's speed, and FaceBN per camera through it.

    python benchmarks/serve.py [--model M] [--requests 64] [--concurrency 1 8 32] [--probes-per-person 9]

1. Latency and throughput of ``represent`` (one 16 px ORL crop) and ``identify`` (one 16 px crop against
   ORL's 40 people, top 5), in-process (the Python verbs called from N threads sharing one recognizer) and
   over HTTP on loopback (``aird serve`` in a subprocess on 127.0.0.1, N client threads with keep-alive
   connections, on the same cores as the server), at 1, 8 and 32 concurrent clients. Each setting runs ``--requests`` requests (at least
   one per client) or ``--max-s`` seconds, whichever ends first; p50 / p99 are per request, as the
   client saw them; ``requests_per_s`` is requests over the setting's wall time; ``errors`` is the fraction
   of requests that failed (any non-2xx answer or exception; 0 = none). The server runs ``--workers``
   inference threads with a queue deep enough for every client (a 503 would count as an error).
2. FaceBN per stream: ORL's 40 people enrolled through the service from one HR photo each (image 1), then
   a stream of 16 px probes (aligned crops of images 2.., area down-sampled, interleaved across people in
   a seeded order) sent one face per request, as a camera sends them: once without a stream (the plain
   student, adapt ``off``) and once per adaptation mode with the stream named (that camera's FaceBN state
   adapts online). Metric: rank-1.

Model: the shipped student when it exists, else ``--model`` (a student file, or ``dlib_resnet_bn``: the
teacher with its batch norm restored, the start of every distillation; a model without a card needs
``--threshold`` for identify's open-set decision, which rank-1 does not use). Records (the RESULTS.md
shape) are merged into docs/results/serve.json: benchmark ``serve-represent`` / ``serve-identify`` with
``split`` ``<transport>-<concurrency>`` and ``settings.concurrency``; benchmark ``orl-stream`` with
``split`` ``stream`` or ``no-stream``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "serve.json"
RES = 16
TOP_K = 5
GALLERY = "orl"
CAMERA = "orl-camera"


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def orl_probes(root: Path, per_person: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(person, 16 px crop) for images 2..per_person+1 of each ORL person, in a seeded interleaved order."""
    from aird.data.align import FaceAligner
    from aird.data.degrade import Degradation
    from aird.data.inputs import read_image

    aligner, small = FaceAligner(), Degradation(res=RES, up=None)
    out = []
    for k in range(1, 41):
        for n in range(2, 2 + per_person):
            path = root / "orl" / f"s{k}" / f"{n}.pgm"
            out.append((f"s{k}", small(aligner.align(read_image(path), path).chip, str(path))))
    random.Random(seed).shuffle(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``aird serve`` in a subprocess on 127.0.0.1, up once /healthz answers; stopped with SIGTERM."""

    def __init__(self, model: str | None, data_dir: Path, workers: int, queue: int, adapt: str | None, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "aird.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        cmd += ["--workers", str(workers), "--queue", str(queue)]
        cmd += ["--model", model] if model else []
        cmd += ["--adapt", adapt] if adapt else []
        self.cmd = cmd
        self.log = log

    def __enter__(self) -> "Server":
        import httpx

        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"aird serve exited with {self.proc.returncode}; see {self.log}")
            try:
                self.health = httpx.get(self.url + "/healthz", timeout=2).json()
                return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.proc.kill()
        raise SystemExit(f"aird serve did not answer within 300 s; see {self.log}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def load_run(call, concurrency: int, requests: int, max_s: float) -> dict:
    """``call()`` from ``concurrency`` threads until ``requests`` were made or ``max_s`` passed."""
    requests = max(requests, concurrency)
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    deadline = time.monotonic() + max_s

    def client() -> None:
        nonlocal issued, errors
        while True:
            with lock:
                if issued >= requests or time.monotonic() > deadline:
                    return
                issued += 1
            t0 = time.perf_counter()
            try:
                call()
                ok = True
            except Exception as exc:  # any failure is an error of the run, counted and reported
                ok = False
                with lock:
                    first_error.append(repr(exc)[:300])
            ms = (time.perf_counter() - t0) * 1e3
            with lock:
                if ok:
                    latencies.append(ms)
                else:
                    errors += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - t0
    done = len(latencies) + errors
    ms = np.array(latencies) if latencies else np.array([0.0])
    return {
        "requests": done,
        "metrics": {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "requests_per_s": len(latencies) / wall,
            "errors": errors / max(done, 1),
        },
        "error_count": errors,
        "first_error": first_error[0] if first_error else None,
        "wall_s": wall,
    }


def http_caller(url: str, path: str, fields: dict, crops: list[bytes]):
    """A call() posting one crop (cycling through ``crops``) with a keep-alive client per thread."""
    import httpx

    local = threading.local()
    counter = iter(range(10**12))
    lock = threading.Lock()
    field = "probes" if path.endswith("identify") else "images"

    def call() -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
        with lock:
            i = next(counter)
        r = local.client.post(path, data=fields, files=[(field, ("probe.png", crops[i % len(crops)], "image/png"))])
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:200]}")

    return call


def enrol_http(url: str, root: Path) -> list[str]:
    """Enrol s1..s40 from image 1 through the service (a second detector pass if the first finds no face)."""
    import httpx

    enrolled = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for k in range(1, 41):
            photo = (root / "orl" / f"s{k}" / "1.pgm").read_bytes()
            for upsample in ("1", "2"):
                r = client.post(
                    f"/v1/galleries/{GALLERY}/people",
                    data={"name": f"s{k}", "upsample": upsample},
                    files=[("images", ("1.pgm", photo, "image/x-portable-graymap"))],
                )
                if r.status_code == 201:
                    enrolled.append(f"s{k}")
                    break
    return enrolled


def stream_run(url: str, probes: list[tuple[str, bytes]], stream: str | None, threshold: float | None) -> dict:
    """The probes one per request, in order; rank-1 and per-request speed."""
    import httpx

    fields = {"cropped": "true", "top_k": "1"}
    if stream:
        fields["stream"] = stream
    if threshold is not None:
        fields["threshold"] = str(threshold)
    hits = []
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        if stream:
            client.delete(f"/v1/streams/{stream}")
        for name, crop in probes:
            r = client.post(
                f"/v1/galleries/{GALLERY}/identify", data=fields, files=[("probes", ("p.png", crop, "image/png"))]
            )
            r.raise_for_status()
            [result] = r.json()["results"]
            hits.append(bool(result["candidates"]) and result["candidates"][0]["name"] == name)
        state = client.get(f"/v1/streams/{stream}").json() if stream else None
    wall = time.perf_counter() - t0
    return {"rank1": float(np.mean(hits)), "faces_per_s": len(probes) / wall, "state": state}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="student file or dlib_resnet_bn (default: the shipped student)")
    ap.add_argument("--threshold", type=float, default=None, help="open-set threshold for a model without a card")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=64, help="requests per setting (at least one per client)")
    ap.add_argument("--max-s", type=float, default=30.0, help="seconds per setting at most")
    ap.add_argument("--probes-per-person", type=int, default=9, help="ORL images 2.. of each person (at most 9)")
    ap.add_argument("--adapt", nargs="+", default=None, help="stream modes (default: the service's and facebn-ema)")
    ap.add_argument("--workers", type=int, default=2, help="the server's inference threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    command = "python benchmarks/serve.py " + shlex.join(sys.argv[1:])
    if not 1 <= args.probes_per_person <= 9:
        ap.error("--probes-per-person must be 1..9 (ORL has 10 images per person, image 1 is enrolled)")

    import torch

    import aird
    from aird.adapt.streams import DEFAULT_STREAM_ADAPT
    from aird.eval.records import environment, write_records
    from aird.models.shipped import SHIPPED_PATH
    from aird.paths import default_data_root

    model = args.model
    if model is None:
        if not SHIPPED_PATH.is_file():
            raise SystemExit(f"no shipped student at {SHIPPED_PATH}: pass --model (a student file, or dlib_resnet_bn)")
        model = str(SHIPPED_PATH)
    root = default_data_root()
    if not (root / "orl" / "s1" / "1.pgm").is_file():
        raise SystemExit(f"ORL not found under {root / 'orl'}: set AIRD_DATA to a data root holding orl/s<k>/<n>.pgm")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))  # as aird serve splits the cores
    queue = max(args.concurrency) * 2
    env = environment()
    started = time.perf_counter()

    print(f"aligning ORL probes ({40 * args.probes_per_person}) ...", flush=True)
    probes = orl_probes(root, args.probes_per_person, args.seed)
    crops = [png(c) for _, c in probes]
    rec = aird.load(model)
    name, method = rec.name, rec.card.get("method", "none")
    threshold = args.threshold
    if threshold is None and not rec.card.get("thresholds"):
        raise SystemExit(f"model {name!r} has no calibrated thresholds (no card): pass --threshold, e.g. 0.93")
    common = {
        "model_path": model,
        "fingerprint": rec.fingerprint,
        "probe": f"ORL aligned chip, area down-sampled to {RES} px, sent as a ready crop (cropped=true)",
        "gallery": "ORL s1-s40, one HR photo each (image 1), detected and aligned",
        "threshold": threshold,
        "server_workers": args.workers,
        "server_queue": queue,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "seed": args.seed,
        **env,
    }
    records = []

    def latency_record(endpoint: str, transport: str, c: int, run: dict) -> None:
        m = run["metrics"]
        print(
            f"{endpoint:<9} {transport:<10} x{c:<3} p50 {m['p50_ms']:8.1f} ms  p99 {m['p99_ms']:8.1f} ms  "
            f"{m['requests_per_s']:6.2f} req/s  errors {run['error_count']}"
            + (f"  (first: {run['first_error']})" if run["first_error"] else ""),
            flush=True,
        )
        records.append(
            dict(
                benchmark=f"serve-{endpoint}",
                task="identification",
                model=name,
                method=method,
                adapt="off",
                res=RES,
                pairs=None,
                split=f"{transport}-{c}",
                n=run["requests"],
                metrics=m,
                settings={
                    "concurrency": c,
                    "transport": transport,
                    "endpoint": endpoint,
                    "requests_planned": max(args.requests, c),
                    "max_s": args.max_s,
                    "wall_s": run["wall_s"],
                    "error_count": run["error_count"],
                    "top_k": TOP_K if endpoint == "identify" else None,
                    "clients": "threads of the benchmark process (in-process: calling the verbs; http: one "
                    "keep-alive httpx client each), on the same cores as the server",
                    "load_average": os.getloadavg()[0],
                    **common,
                },
            )
        )

    with tempfile.TemporaryDirectory(prefix="aird-serve-bench-") as tmp:
        tmp = Path(tmp)
        if not args.skip_inprocess:
            gallery = rec.gallery(tmp / "inprocess.db")
            for k in range(1, 41):
                for upsample in (1, 2):
                    try:
                        gallery.enrol(f"s{k}", root / "orl" / f"s{k}" / "1.pgm", upsample=upsample)
                        break
                    except aird.NoFaceError:
                        continue
            arrays = [c for _, c in probes]
            count = iter(range(10**12))
            lock = threading.Lock()

            def nxt() -> np.ndarray:
                with lock:
                    return arrays[next(count) % len(arrays)]

            calls = {
                "represent": lambda: rec.represent(nxt(), cropped=True),
                "identify": lambda: gallery.identify(nxt(), top_k=TOP_K, cropped=True, threshold=threshold),
            }
            for endpoint, call in calls.items():
                call()  # warm-up
                for c in args.concurrency:
                    latency_record(endpoint, "in-process", c, load_run(call, c, args.requests, args.max_s))
            gallery.close()

        data = tmp / "data"
        log = tmp / "server.log"
        with Server(args.model, data, args.workers, queue, None, log) as server:
            default_mode = server.health["adapt"]
            people = enrol_http(server.url, root)
            print(
                f"server {server.url}: model {server.health['model']}, streams {default_mode}, {len(people)} enrolled"
            )
            fields = {"cropped": "true"}
            id_fields = {"cropped": "true", "top_k": str(TOP_K)}
            if threshold is not None:
                id_fields["threshold"] = str(threshold)
            for endpoint, path, f in (
                ("represent", "/v1/represent", fields),
                ("identify", f"/v1/galleries/{GALLERY}/identify", id_fields),
            ):
                call = http_caller(server.url, path, f, crops)
                call()  # warm-up
                for c in args.concurrency:
                    latency_record(endpoint, "http", c, load_run(call, c, args.requests, args.max_s))
            stream_probes = list(zip([n for n, _ in probes], crops))
            runs = {("off", "no-stream"): stream_run(server.url, stream_probes, None, threshold)}
            runs[(default_mode, "stream")] = stream_run(server.url, stream_probes, CAMERA, threshold)
        modes = args.adapt or [DEFAULT_STREAM_ADAPT, "facebn-ema"]
        for mode in dict.fromkeys(m for m in modes if (m, "stream") not in runs):
            with Server(args.model, data, args.workers, queue, mode, log) as server:
                runs[(mode, "stream")] = stream_run(server.url, stream_probes, CAMERA, threshold)
        for (mode, split), run in runs.items():
            state = run["state"] or {}
            print(
                f"orl-stream {split:<9} adapt {mode:<12} rank-1 {run['rank1']:.3f}  ({run['faces_per_s']:.1f} faces/s)"
                + (f"  stream shift {state.get('shift', 0):.3f}" if state else ""),
                flush=True,
            )
            records.append(
                dict(
                    benchmark="orl-stream",
                    task="identification",
                    model=name,
                    method=method,
                    adapt=mode,
                    res=RES,
                    pairs=None,
                    split=split,
                    n=len(stream_probes),
                    metrics={"rank1": run["rank1"], "faces_per_s": run["faces_per_s"]},
                    settings={
                        "stream": CAMERA if split == "stream" else None,
                        "faces_per_request": 1,
                        "order": f"shuffled across people (seed {args.seed})",
                        "probes_per_person": args.probes_per_person,
                        "people_enrolled": len(people),
                        "stream_state_after": state or None,
                        "transport": "http",
                        **common,
                    },
                )
            )
    write_records(args.out, records, command=command)
    print(f"{len(records)} records merged into {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
