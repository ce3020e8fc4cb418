#!/usr/bin/env python3
"""heroku-lb soak test: does it hold steady for minutes of traffic while the
pipeline changes and an app flaps? Not run in CI.

    python3 bench/soak.py                  # 10 minutes
    python3 bench/soak.py --minutes 2      # a quick proof that it works
    python3 bench/soak.py --no-build --rate 500

What runs (all on 127.0.0.1, standard library only, Python 3.11):

- `cargo build --release`, then a copy of the binary in a tempdir (a build
  elsewhere during the run cannot swap it);
- three backend apps, each a small Python HTTP/1.1 keep-alive server in its own
  process (`soak.py --serve-backend PORT NAME`);
- the tests' own fake Heroku Platform API (`tests/common/heroku_api/`, run
  as `examples/fake_platform_api.rs`): one pipeline whose production stage
  holds the three apps, with Heroku's paths, headers and JSON shapes, ETags,
  `RateLimit-Remaining`, and every list cut into pages of two;
- heroku-lb in pipeline mode against it, `DISCOVERY_INTERVAL=2`,
  `HEALTH_CHECK_INTERVAL=1`;
- churn: app 2 leaves the pipeline and comes back every 30 s; app 3's process
  is stopped for 5 s every 20 s;
- load: worker threads sending GETs over keep-alive connections at a fixed
  total rate (default 300 requests/s).

At the end it prints three figures, with their targets:

1. VmRSS of heroku-lb after warm-up vs at the end, and the change (within 10 %);
2. panics in heroku-lb's output (count of "panicked": 0);
3. failed idempotent requests: non-2xx answers and transport errors (0).

Exit status 0 when all three meet their targets, 1 otherwise, 2 on a setup
error. Every process started here is stopped before it exits (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# Every list of the fake is cut into pages this long, so paging never rests.
PAGE_SIZE = 2
TOGGLE_EVERY = 30.0
FLAP_EVERY = 20.0
FLAP_DOWN_FOR = 5.0
RSS_TARGET_PERCENT = 10.0
REQUEST_TIMEOUT = 10.0


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def die(message: str) -> None:
    log(f"error: {message}")
    sys.exit(2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_backend(port: int, name: str) -> None:
    """`soak.py --serve-backend PORT NAME`: answer every path 200 with NAME."""
    body = name.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Test-Backend", name)
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


class Backend:
    """One backend app process, which can be stopped and started again on its port."""

    def __init__(self, name: str, port: int, logs: str):
        self.name = name
        self.port = port
        self.log_path = os.path.join(logs, f"{name}.log")
        self.proc: subprocess.Popen | None = None

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-backend", str(self.port), self.name],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        out.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    die(f"backend {self.name} exited at start; see {self.log_path}")
                time.sleep(0.05)
        die(f"backend {self.name} never listened on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


# --------------------------------------------------------------------------
# Fake Platform API (in this process; a few requests a second)


class FakeApi:
    """The tests' own fake Platform API (`tests/common/heroku_api/`), run as
    `examples/fake_platform_api.rs`: Heroku's real paths, headers and JSON
    shapes, `RateLimit-Remaining`, ETags, and every list cut into pages of
    `PAGE_SIZE` so that paging is exercised all the time. App n is `app-n`
    at `http://app-n.bench.test:PORT/` (pinned to 127.0.0.1 for heroku-lb)."""

    def __init__(self, binary: str, backends: list[Backend]):
        self.binary = binary
        self.backends = backends
        self.proc: subprocess.Popen | None = None
        self.api_url = self.api_key = self.pipeline_id = self.stats_url = ""

    def hosts(self) -> list[str]:
        return [f"app-{n}.bench.test" for n in range(len(self.backends))]

    def start(self) -> str:
        ports = ",".join(str(b.port) for b in self.backends)
        self.proc = subprocess.Popen(
            [self.binary, "--apps", str(len(self.backends)), "--backend-ports", ports,
             "--page-size", str(PAGE_SIZE)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        try:
            info = json.loads(line)
        except ValueError:
            die(f"the fake Platform API did not start: {line!r}")
        self.api_url, self.api_key = info["api_url"], info["api_key"]
        self.pipeline_id, self.stats_url = info["pipeline"], info["stats_url"]
        return self.api_url

    def control(self, path: str) -> dict:
        url = self.stats_url.removeprefix("http://").rstrip("/")
        host, port = url.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path)
        body = conn.getresponse().read()
        conn.close()
        return json.loads(body)

    def set_coupled(self, app: int, coupled: bool) -> None:
        """App `app` joins or leaves the production stage."""
        self.control(f"/{'join' if coupled else 'leave'}/app-{app}")

    def stats(self) -> dict:
        try:
            return self.control("/")
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def build(skip: bool) -> tuple[str, str]:
    """The release heroku-lb and the fake Platform API example."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.path.join(target, "release", "heroku-lb")
    fake = os.path.join(target, "release", "examples", "fake_platform_api")
    if not skip:
        argv = ["cargo", "build", "--release", "--bin", "heroku-lb",
                "--example", "fake_platform_api"]
        log("$ " + " ".join(argv))
        if subprocess.run(argv, cwd=REPO).returncode != 0:
            die(f"`{' '.join(argv)}` failed")
    for path in (binary, fake):
        if not os.access(path, os.X_OK):
            die(f"{path} is missing; build it (or drop --no-build)")
    return binary, fake


def vm_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Balancer:
    def __init__(self, binary: str, work: str, port: int, api: "FakeApi"):
        self.port = port
        self.log_path = os.path.join(work, "heroku-lb.log")
        config = os.path.join(work, "heroku-lb.yaml")
        with open(config, "w") as f:
            f.write(
                "---\nversion: 1\nthreads: 1\n"
                f"pid_file: {work}/heroku-lb.pid\nupgrade_sock: {work}/heroku-lb.sock\n"
                "grace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n"
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PORT": str(port),
            "LB_LISTEN_HOST": "127.0.0.1",
            "HEROKU_API_KEY": api.api_key,
            "PIPELINE_IDENTIFIER": api.pipeline_id,
            "HEROKU_API_URL": api.api_url,
            "LB_RESOLVE": ",".join(f"{host}=127.0.0.1" for host in api.hosts()),
            "DISCOVERY_INTERVAL": "2",
            "HEALTH_CHECK_INTERVAL": "1",
            "RUST_LOG": "info",
        }
        out = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "-c", config], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                die(f"heroku-lb exited ({self.proc.returncode}); see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/warmup")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        die(f"heroku-lb never answered 200 within {timeout} s; see {self.log_path}")

    def status(self) -> dict | None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/_lb/status")
            body = conn.getresponse().read()
            conn.close()
            return json.loads(body)
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------
# Load


class Load:
    """`workers` threads, each with one keep-alive connection, together sending
    `rate` GETs a second until `stop` is set."""

    def __init__(self, port: int, rate: float, workers: int):
        self.port = port
        self.interval = workers / rate
        self.workers = workers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.non_2xx = 0
        self.transport = 0
        self.examples: list[str] = []
        self.started = time.monotonic()
        self.threads = [
            threading.Thread(target=self.run, args=(w,), daemon=True) for w in range(workers)
        ]

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def record_failure(self, kind: str, what: str) -> None:
        with self.lock:
            if kind == "status":
                self.non_2xx += 1
            else:
                self.transport += 1
            if len(self.examples) < 20:
                self.examples.append(f"t={time.monotonic() - self.started:.1f}s {what}")

    def run(self, worker: int) -> None:
        conn = None
        n = 0
        next_at = time.monotonic() + worker * self.interval / self.workers
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
                if self.stop.is_set():
                    break
            next_at += self.interval
            # Fell far behind (a slow answer): do not burst to catch up.
            next_at = max(next_at, time.monotonic() - self.interval)
            path = f"/soak/{worker}/{n}"
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if 200 <= response.status < 300:
                    with self.lock:
                        self.ok += 1
                else:
                    self.record_failure("status", f"GET {path}: {response.status}")
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.record_failure("transport", f"GET {path}: {type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.sent += 1
        if conn is not None:
            conn.close()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)


# --------------------------------------------------------------------------
# Main


def count_in_file(path: str, needles: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(needles, 0)
    with open(path, "r", errors="replace") as f:
        for line in f:
            for needle in needles:
                if needle in line:
                    counts[needle] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (10)")
    parser.add_argument("--rate", type=float, default=300.0, help="GETs per second (300)")
    parser.add_argument("--workers", type=int, default=8, help="load threads (8)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before the baseline RSS (default: 30, or 1/4 of short runs)")
    parser.add_argument("--no-build", action="store_true", help="use the existing release binary")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--serve-backend", nargs=2, metavar=("PORT", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(int(args.serve_backend[0]), args.serve_backend[1])
        return 0

    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(30.0, duration / 4)
    binary, fake = build(args.no_build)
    work = tempfile.mkdtemp(prefix="heroku-lb-soak-")
    copy = os.path.join(work, "heroku-lb")
    shutil.copy2(binary, copy)
    log(f"work directory {work}")

    backends = [Backend(f"soak-app-{i}", free_port(), work) for i in (1, 2, 3)]
    api = FakeApi(fake, backends)
    lb: Balancer | None = None
    load: Load | None = None
    stop = threading.Event()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for backend in backends:
            backend.start()
        api_url = api.start()
        lb = Balancer(copy, work, free_port(), api)
        lb.wait_serving()
        log(f"heroku-lb pid {lb.proc.pid} on port {lb.port}, API {api_url}, "
            f"{len(backends)} apps; {args.rate:.0f} GETs/s for {args.minutes:g} min, "
            f"warm-up {warmup:.0f} s")

        toggled = backends[1]
        toggled_index = 1
        flapping = backends[2]
        events = {"toggles": 0, "flaps": 0}

        def churn() -> None:
            started = time.monotonic()
            next_toggle = started + TOGGLE_EVERY
            next_flap = started + FLAP_EVERY - FLAP_DOWN_FOR
            coupled = True
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_toggle:
                    coupled = not coupled
                    api.set_coupled(toggled_index, coupled)
                    events["toggles"] += 1
                    log(f"{toggled.name} {'joins' if coupled else 'leaves'} the pipeline")
                    next_toggle += TOGGLE_EVERY
                if now >= next_flap:
                    flapping.stop()
                    events["flaps"] += 1
                    if stop.wait(FLAP_DOWN_FOR):
                        break
                    flapping.start()
                    next_flap += FLAP_EVERY
                stop.wait(0.2)

        churner = threading.Thread(target=churn, daemon=True)
        load = Load(lb.port, args.rate, args.workers)
        load.start()
        churner.start()

        started = time.monotonic()
        rss_samples: list[tuple[float, int]] = []
        baseline: int | None = None
        next_report = started + 60
        while time.monotonic() - started < duration:
            time.sleep(1)
            if lb.proc.poll() is not None:
                log(f"heroku-lb exited ({lb.proc.returncode}) during the run")
                break
            elapsed = time.monotonic() - started
            rss = vm_rss_kb(lb.proc.pid)
            if rss is not None:
                rss_samples.append((elapsed, rss))
                if baseline is None and elapsed >= warmup:
                    baseline = rss
                    log(f"warm-up done: VmRSS {rss / 1024:.1f} MB")
            if time.monotonic() >= next_report:
                next_report += 60
                with load.lock:
                    log(f"t={elapsed:.0f}s sent={load.sent} failed={load.non_2xx + load.transport} "
                        f"VmRSS={rss and rss / 1024:.1f} MB")
        end_rss = vm_rss_kb(lb.proc.pid)
        elapsed = time.monotonic() - started
        stop.set()
        load.join()
        churner.join(timeout=FLAP_DOWN_FOR + 5)
        if flapping.proc is None:
            flapping.start()
        status = lb.status()
    except KeyboardInterrupt:
        log("interrupted")
        stop.set()
        if load:
            load.join()
        if lb:
            lb.stop()
        api.stop()
        for backend in backends:
            backend.stop()
        return 130
    finally:
        stop.set()

    alive = lb.proc.poll() is None
    api_stats = api.stats()
    lb.stop()
    api.stop()
    for backend in backends:
        backend.stop()

    counts = count_in_file(lb.log_path, ["panicked", "discovery added", "discovery removed",
                                         "discovery failed", "-> ejected", "level=error"])
    failed = load.non_2xx + load.transport
    peak = max((rss for _, rss in rss_samples), default=0)
    print()
    print(f"soak: {elapsed / 60:.1f} min, {load.sent} GETs ({load.sent / max(elapsed, 1):.0f}/s), "
          f"{events['toggles']} pipeline changes, {events['flaps']} flaps, "
          f"{api_stats.get('total', '?')} Platform API requests "
          f"({api_stats.get('couplings_conditional', '?')} conditional couplings requests, "
          f"pages of {PAGE_SIZE})")
    print(f"heroku-lb log: discovery added {counts['discovery added']}, removed "
          f"{counts['discovery removed']}, failed {counts['discovery failed']}; "
          f"ejections {counts['-> ejected']}; error lines {counts['level=error']}; "
          f"still running at the end: {alive}")
    if status:
        print(f"/_lb/status at the end: {status.get('status')}, "
              f"{status.get('backends_healthy')}/{status.get('backends_total')} healthy, "
              f"discovery rounds {status.get('discovery', {}).get('rounds')}")
    results = []
    if baseline and end_rss:
        change = (end_rss - baseline) * 100.0 / baseline
        ok = abs(change) <= RSS_TARGET_PERCENT
        results.append(ok)
        print(f"1. VmRSS after warm-up {baseline / 1024:.1f} MB, at the end {end_rss / 1024:.1f} MB: "
              f"{change:+.1f} % (target within {RSS_TARGET_PERCENT:.0f} %; peak "
              f"{peak / 1024:.1f} MB) {'OK' if ok else 'OVER TARGET'}")
    else:
        results.append(False)
        print(f"1. VmRSS: no figures (baseline {baseline}, end {end_rss}): the balancer did not last")
    results.append(counts["panicked"] == 0)
    print(f"2. panics in the log: {counts['panicked']} {'OK' if counts['panicked'] == 0 else 'FAIL'}")
    results.append(failed == 0)
    print(f"3. failed idempotent requests: {failed} of {load.sent} "
          f"({load.non_2xx} non-2xx, {load.transport} transport errors) "
          f"{'OK' if failed == 0 else 'FAIL'}")
    for example in load.examples:
        print(f"   {example}")
    if args.keep or not all(results):
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(results) and alive else 1


if __name__ == "__main__":
    sys.exit(main())
