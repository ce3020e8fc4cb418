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
- a minimal fake Heroku Platform API in this process: one pipeline whose
  production stage holds the three apps, answering
  `GET /pipelines/{id}/pipeline-couplings` (200, one page, ETag and 304),
  `POST /filters/apps`, `GET /apps/{id}` and `GET /apps/{id}/formation/web`
  with Heroku's JSON shapes and `RateLimit-Remaining`;
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
import hashlib
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
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
API_KEY = "soak-api-key-not-a-secret"
RATE_LIMIT_BUCKET = 4500
RATE_LIMIT_REFILL_PER_SECOND = 75 / 60
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


def now_iso8601() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------
# Backend apps (each in its own process)


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
    """One pipeline, its production apps, Heroku's JSON shapes and headers."""

    def __init__(self, backends: list[Backend]):
        self.lock = threading.Lock()
        self.pipeline_id = str(uuid.uuid4())
        self.apps = {}
        self.couplings = {}
        for backend in backends:
            app_id = str(uuid.uuid4())
            self.apps[app_id] = {"name": backend.name, "web_url": backend.web_url}
            self.couplings[app_id] = str(uuid.uuid4())
        self.app_ids = list(self.apps)
        self.remaining = float(RATE_LIMIT_BUCKET)
        self.refilled_at = time.monotonic()
        self.requests = 0
        self.not_modified = 0
        self.server: http.server.ThreadingHTTPServer | None = None

    def set_coupled(self, app_id: str, coupled: bool) -> None:
        with self.lock:
            if coupled:
                self.couplings.setdefault(app_id, str(uuid.uuid4()))
            else:
                self.couplings.pop(app_id, None)

    def app_json(self, app_id: str) -> dict:
        app = self.apps[app_id]
        return {
            "id": app_id, "name": app["name"], "web_url": app["web_url"],
            "maintenance": False, "released_at": now_iso8601(),
            "region": {"id": "59accabd-516d-4f0e-83e6-6e3757701145", "name": "us"},
            "stack": {"id": "74cfe988-7527-4ca4-9667-77bfa2e4bd88", "name": "heroku-24"},
            "created_at": now_iso8601(), "updated_at": now_iso8601(),
        }

    def couplings_json(self) -> list:
        return [
            {
                "id": coupling_id, "app": {"id": app_id},
                "pipeline": {"id": self.pipeline_id}, "stage": "production",
                "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            }
            for app_id, coupling_id in sorted(self.couplings.items(), key=lambda kv: kv[1])
        ]

    def spend(self) -> int:
        now = time.monotonic()
        self.remaining = min(
            RATE_LIMIT_BUCKET,
            self.remaining + (now - self.refilled_at) * RATE_LIMIT_REFILL_PER_SECOND,
        )
        self.refilled_at = now
        self.remaining = max(0.0, self.remaining - 1)
        self.requests += 1
        return int(self.remaining)

    def answer(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        def error(status: int, ident: str, message: str):
            return status, {}, json.dumps({"id": ident, "message": message, "url": None}).encode()

        if "application/vnd.heroku+json" not in headers.get("Accept", ""):
            return error(406, "not_acceptable", "Please specify a version.")
        if headers.get("Authorization", "") != f"Bearer {API_KEY}":
            return error(401, "unauthorized", "Invalid credentials provided.")
        parts = [p for p in path.split("?")[0].split("/") if p]
        with self.lock:
            if method == "GET" and len(parts) == 3 and parts[0] == "pipelines" \
                    and parts[2] == "pipeline-couplings":
                if parts[1] != self.pipeline_id:
                    return error(404, "not_found", "Couldn't find that pipeline.")
                payload = json.dumps(self.couplings_json()).encode()
                etag = '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'
                if headers.get("If-None-Match") == etag:
                    self.not_modified += 1
                    return 304, {"ETag": etag}, b""
                return 200, {"ETag": etag, "Accept-Ranges": "id"}, payload
            if method == "GET" and len(parts) == 2 and parts[0] == "pipelines":
                if parts[1] not in (self.pipeline_id, "soak"):
                    return error(404, "not_found", "Couldn't find that pipeline.")
                return 200, {}, json.dumps({"id": self.pipeline_id, "name": "soak"}).encode()
            if method == "POST" and parts == ["filters", "apps"]:
                try:
                    ids = json.loads(body or b"{}")["in"]["id"]
                except (ValueError, KeyError, TypeError):
                    return error(422, "invalid_params", "Expected {\"in\": {\"id\": [...]}}.")
                found = [self.app_json(i) for i in ids if i in self.apps]
                return 200, {}, json.dumps(found).encode()
            if method == "GET" and len(parts) == 2 and parts[0] == "apps":
                if parts[1] not in self.apps:
                    return error(404, "not_found", "Couldn't find that app.")
                return 200, {}, json.dumps(self.app_json(parts[1])).encode()
            if method == "GET" and len(parts) == 4 and parts[0] == "apps" \
                    and parts[2] == "formation" and parts[3] == "web":
                if parts[1] not in self.apps:
                    return error(404, "not_found", "Couldn't find that app.")
                formation = {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, parts[1])), "type": "web",
                    "quantity": 1, "size": "Basic", "command": "npm start",
                    "app": {"id": parts[1], "name": self.apps[parts[1]]["name"]},
                    "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
                }
                return 200, {}, json.dumps(formation).encode()
        return error(404, "not_found", "The requested API endpoint was not found.")

    def start(self) -> str:
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, extra, payload = api.answer(self.command, self.path, self.headers, body)
                with api.lock:
                    remaining = api.spend()
                self.send_response(status)
                self.send_header("RateLimit-Remaining", str(remaining))
                self.send_header("Request-Id", str(uuid.uuid4()))
                for name, value in extra.items():
                    self.send_header(name, value)
                if status != 304:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if status != 304:
                    self.wfile.write(payload)

            do_GET = do_POST = handle_any

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


# --------------------------------------------------------------------------
# heroku-lb


def build(skip: bool) -> str:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.path.join(target, "release", "heroku-lb")
    if not skip:
        argv = ["cargo", "build", "--release", "--bin", "heroku-lb"]
        log("$ " + " ".join(argv))
        if subprocess.run(argv, cwd=REPO).returncode != 0:
            die(f"`{' '.join(argv)}` failed")
    if not os.access(binary, os.X_OK):
        die(f"{binary} is missing; build it (or drop --no-build)")
    return binary


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
    def __init__(self, binary: str, work: str, port: int, api_url: str, pipeline_id: str):
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
            "HEROKU_API_KEY": API_KEY,
            "PIPELINE_IDENTIFIER": pipeline_id,
            "HEROKU_API_URL": api_url,
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
    binary = build(args.no_build)
    work = tempfile.mkdtemp(prefix="heroku-lb-soak-")
    copy = os.path.join(work, "heroku-lb")
    shutil.copy2(binary, copy)
    log(f"work directory {work}")

    backends = [Backend(f"soak-app-{i}", free_port(), work) for i in (1, 2, 3)]
    api = FakeApi(backends)
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
        lb = Balancer(copy, work, free_port(), api_url, api.pipeline_id)
        lb.wait_serving()
        log(f"heroku-lb pid {lb.proc.pid} on port {lb.port}, API {api_url}, "
            f"{len(backends)} apps; {args.rate:.0f} GETs/s for {args.minutes:g} min, "
            f"warm-up {warmup:.0f} s")

        toggled = backends[1]
        toggled_id = api.app_ids[1]
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
                    api.set_coupled(toggled_id, coupled)
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
          f"{api.requests} Platform API requests ({api.not_modified} answered 304)")
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
