"""The dose calculator's web app through HTTP: `pkmix serve` in its own process.

    python benchmarks/bench_serve.py [--repeats 20]

Prints one table:

* first answer, empty compilation cache: from starting ``pkmix serve`` (a new process,
  ``PKMIX_CACHE_DIR`` an empty folder) to the answer of its first ``POST /api/dose``
  for the vancomycin example (Goti 2018, 2 levels), sent as soon as ``GET /health``
  answers: imports, tracing and compiling included. Target < 15 s. Also the time until
  ``/health`` answers (the process's imports and start).
* first answer, filled cache: the same with a second server process on the cache the
  first one filled (JAX's compilation cache and pkmix's exported programs). Target < 4 s.
* warm recommendation: ``POST /api/dose`` on the running server (MAP + 2,000 SIR draws
  + the regimen search, JSON both ways); minimum and median of the repeats. Target
  < 300 ms. Also the page's ``POST /api/dose/report`` (the same with the curves, the
  60-draw band and the SVG).
* 20 concurrent requests from 4 clients (threads, one HTTP connection each) on five
  different patients and targets: wall time, and how many answers equal the answer the
  server gave to the same request alone (timing and audit id aside).

Every answer is stored in a temporary audit database. The load average is printed
beside each number: on a shared machine it explains much of the spread.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PATIENT = ROOT / "examples" / "vancomycin_tdm" / "patient.json"
MODEL = "vancomycin_goti2018"
TARGET = "auc24=400:600"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cache: str, audit: str):
    """``pkmix serve`` in a new process; ``(process, base URL, start time)``."""
    port = free_port()
    env = dict(os.environ, PKMIX_CACHE_DIR=cache)
    script = Path(sys.executable).with_name("pkmix")
    launcher = [str(script)] if script.exists() else [sys.executable, "-c",
                                                       "import sys; from pkmix.cli import main; sys.exit(main())"]
    start = time.perf_counter()
    proc = subprocess.Popen(launcher + ["serve", "--port", str(port), "--audit-db", audit], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}", start


def first_answer(cache: str, audit: str, body: dict, timeout: float = 120.0):
    """Seconds from starting a server to its first dose answer (and, within it, to the
    port answering ``GET /health``), and the running server."""
    proc, base, start = start_server(cache, audit)
    deadline = start + timeout
    with httpx.Client(base_url=base, timeout=timeout) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pkmix serve exited ({proc.returncode}): {proc.stderr.read()}")
            try:
                http.get("/health").raise_for_status()
                break
            except httpx.TransportError:
                if time.perf_counter() > deadline:
                    proc.kill()
                    raise RuntimeError("the server did not answer in time") from None
                time.sleep(0.02)
        up = time.perf_counter() - start
        r = http.post("/api/dose", json=body)
    elapsed = time.perf_counter() - start
    if r.status_code != 200:
        proc.kill()
        raise RuntimeError(f"first answer {r.status_code}: {r.text}")
    return elapsed, up, proc, base


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def comparable(answer: dict) -> str:
    return json.dumps({k: v for k, v in answer.items() if k not in ("timing", "audit_id")}, sort_keys=True)


def timed_post(http, path, body, repeats):
    http.post(path, json=body).raise_for_status()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        r = http.post(path, json=body)
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    return min(times), statistics.median(times)


def concurrent(base: str, bodies: list, expected: list, clients: int = 4, per_client: int = 5):
    results, errors = {}, []

    def worker(k):
        with httpx.Client(base_url=base, timeout=300) as http:
            for j in range(per_client):
                n = per_client * k + j
                try:
                    results[n] = http.post("/api/dose", json=bodies[n % len(bodies)]).json()
                except Exception as e:  # noqa: BLE001 - counted as a wrong answer
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    right = sum(1 for n, a in results.items() if "error" not in a and comparable(a) == expected[n % len(bodies)])
    return wall, right, clients * per_client, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    patient = json.loads(PATIENT.read_text())
    body = {"model": MODEL, "patient": patient, "target": TARGET}
    bodies = []
    for i, (wt, target) in enumerate([(60, TARGET), (82, "trough=10:20"), (95, "auc24=450:550"), (70, TARGET),
                                      (120, "trough=15:20")]):
        p = copy.deepcopy(patient)
        p["id"] = f"P{i}"
        p["covariates"]["WT"]["value"] = wt
        p["levels"][0]["value"] = 15.0 + 2 * i
        bodies.append({"model": MODEL, "patient": p, "target": target})

    rows = []
    with tempfile.TemporaryDirectory(prefix="pkmix-bench-serve-") as tmp:
        cache, audit = str(Path(tmp) / "cache"), str(Path(tmp) / "audit.sqlite3")
        load = os.getloadavg()[0]
        cold, up, proc, _ = first_answer(cache, audit, body)
        stop(proc)
        rows.append(("first answer after start, empty compilation cache", cold, cold, 15.0, load))
        rows.append(("  of which: start until /health answers", up, up, None, load))
        load = os.getloadavg()[0]
        warm_start, up, proc, base = first_answer(cache, audit, body)
        rows.append(("first answer after start, filled cache", warm_start, warm_start, 4.0, load))
        rows.append(("  of which: start until /health answers", up, up, None, load))
        try:
            with httpx.Client(base_url=base, timeout=120) as http:
                load = os.getloadavg()[0]
                best, med = timed_post(http, "/api/dose", body, args.repeats)
                rows.append(("warm recommendation, POST /api/dose (2,000 SIR draws)", best, med, 0.300, load))
                n = max(args.repeats // 4, 3)
                best, med = timed_post(http, "/api/dose/report", {**body, "curve": True}, n)
                rows.append(("the page's POST /api/dose/report (+ curves, band, SVG)", best, med, None,
                             os.getloadavg()[0]))
                server_side = http.post("/api/dose", json=body).json()["timing"]["total_s"]
                # Each request alone first: the answers the concurrent ones must equal.
                expected = [comparable(http.post("/api/dose", json=b).json()) for b in bodies]
            load = os.getloadavg()[0]
            wall, right, total, errors = concurrent(base, bodies, expected)
        finally:
            stop(proc)
        rows.append((f"{total} concurrent requests, 4 clients ({right}/{total} correct)", wall, wall, None, load))

    import jax

    print(f"pkmix serve benchmark: {MODEL}, {PATIENT.relative_to(ROOT)}; {os.cpu_count()} CPUs, "
          f"JAX {jax.__version__}; server-side time of one warm answer {server_side * 1000:.1f} ms")
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'min':>9}  {'median':>9}  {'target':>8}  {'ok':>3}  load")
    for name, best, med, target, load in rows:
        ok = "" if target is None else ("yes" if best < target else "NO")
        tgt = "" if target is None else _fmt(target)
        print(f"{name:<{width}}  {_fmt(best):>9}  {_fmt(med):>9}  {tgt:>8}  {ok:>3}  {load:.1f}")
    if errors or right != total:
        print(f"CONCURRENCY: {total - right} of {total} answers wrong or missing: {errors[:3]}")
        sys.exit(1)


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    main()
