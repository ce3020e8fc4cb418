#!/usr/bin/env python3
"""heroku-lb benchmark: what heroku-lb costs per proxied request, next to a bare
Pingora proxy (the floor our code adds to), nginx and HAProxy.

    python3 bench/run.py                 # everything, ~19 minutes on 2 cores
    python3 bench/run.py --quick         # short runs, 1 round: a smoke test
    python3 bench/run.py --scenario many --duration 5
    python3 bench/run.py --scenario deploy,mixed   # bench/deploy.py, bench/mixed.py

Standard library only (Python 3.11). See bench/README.md for the method and
bench/results/ for the last results. Everything listens on 127.0.0.1; every
process started here is stopped before it exits (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # no __pycache__ in bench/
sys.path.insert(0, HERE)
import configs  # noqa: E402  (bench/configs.py, beside this file)

# bench/deploy.py and bench/mixed.py (a scenario each) use this module's
# helpers as `run.X`: let their `import run` find this module, not a second
# copy of it, when it runs as __main__ (one Proc.running, one die()).
sys.modules.setdefault("run", sys.modules[__name__])
import deploy  # noqa: E402
import mixed  # noqa: E402

SCENARIOS = ["throughput", "latency", "rss", "many", "heroku", "instructions", "discovery", "cores",
             "deploy", "mixed"]
# The scenarios that use the backend nginx.
BACKEND_SCENARIOS = ["throughput", "latency", "rss", "many", "discovery", "cores"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# Variables heroku-lb reads: removed from its environment so the generated
# file alone configures it (src/config/env.rs).
HEROKU_LB_VARS = [
    "PORT", "LB_LISTEN_HOST", "LB_BACKENDS", "LB_RESOLVE", "HEALTH_CHECK_INTERVAL",
    "HEALTH_CHECK_PATH", "LB_STATUS_TOKEN", "SSL_CERT_FILE", "HEROKU_API_KEY",
    "PIPELINE_IDENTIFIER", "PIPELINE_STAGE", "HEROKU_API_URL", "DISCOVERY_INTERVAL",
    "DYNO", "RUST_LOG", "LB_THREADS", "LB_POLICY", "LB_STICKY_COOKIE", "LB_STICKY_SECRET",
    "LB_STICKY_TTL",
]
# A run where other processes used more than this share of one core is flagged.
NOISE_LIMIT = 0.10
# The fixed-rate latency run: each connection waits this long after each answer.
FIXED_RATE_DELAY_MS = 10


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def die(message: str) -> "NoReturn":  # noqa: F821
    print(f"bench: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


# --------------------------------------------------------------------------
# Processes


class LineCounter:
    """Drains a process's stdout pipe in a thread of this script (pinned
    with it on the load CPU), as logplex drains a dyno's: counts the access
    lines (heroku-lb's request lines carry ` method=`) and copies every other
    line, and the request lines at error level, to the process's log file,
    where log_problems() finds them."""

    def __init__(self, pipe, log_file):
        self.pipe = pipe
        self.log_file = log_file
        self.access_lines = 0
        self.other_lines = 0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        fd = self.pipe.fileno()
        carry = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            end = chunk.rfind(b"\n")
            if end < 0:
                carry += chunk
                continue
            block, carry = carry + chunk[:end + 1], chunk[end + 1:]
            lines = block.count(b"\n")
            access = block.count(b" method=")
            if access != lines or b"at=error" in block:
                other = [l for l in block.splitlines(keepends=True)
                         if b" method=" not in l or b"at=error" in l]
                self.log_file.write(b"".join(other))
                self.log_file.flush()
                self.other_lines += len(other)
            self.access_lines += access

    def join(self) -> None:
        self.thread.join(5)


class Proc:
    """A server started by the benchmark, in its own session so that its whole
    process group (nginx's workers too) can be stopped. `cpu` is one CPU or a
    set of CPUs it may run on. `count_lines`: stdout is a pipe drained by a
    LineCounter (heroku-lb's shipped default: request lines on stdout).
    `stdin_pipe`: stdin is a pipe (`popen.stdin`) instead of /dev/null."""

    running: list["Proc"] = []

    def __init__(self, name, argv, *, cpu=None, env=None, log_path, cwd=None, stdout_pipe=False,
                 count_lines=False, stdin_pipe=False):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        cpus = None if cpu is None else set(cpu) if isinstance(cpu, (set, list, tuple)) else {cpu}

        def pin():
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe or count_lines else self.log_file,
            stderr=self.log_file,
            preexec_fn=pin,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.lines = LineCounter(self.popen.stdout, self.log_file) if count_lines else None
        Proc.running.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> list[int]:
        """This process and every descendant (nginx's master and workers)."""
        return [self.pid] + descendants(self.pid)

    def stop(self, timeout: float = 8.0) -> None:
        if self.popen.stdin:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        if self.popen.poll() is None:
            try:
                # SIGINT: Pingora's fast shutdown, nginx's and HAProxy's too.
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop on SIGINT within {timeout:g} s; SIGKILL")
        # Anything left in its process group (it was started in a new session).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.lines:
            self.lines.join()
        if self.popen.stdout:
            self.popen.stdout.close()
        self.log_file.close()
        if self in Proc.running:
            Proc.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls.running):
            proc.stop(timeout=3)


class JsonLines:
    """The JSON lines a helper program (examples/deploy_day.rs,
    examples/mixed_load.rs) prints on its stdout pipe, read by a thread of
    this script; `next()` waits for the next one. Other lines are kept for
    the error message."""

    def __init__(self, proc: Proc):
        self.proc = proc
        self.lines: queue.Queue = queue.Queue()
        self.other: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.proc.popen.stdout:
                text = raw.decode(errors="replace").strip()
                try:
                    self.lines.put(json.loads(text))
                except ValueError:
                    self.other = (self.other + [text])[-5:]
        except (OSError, ValueError):  # the pipe closed under us by stop()
            pass
        self.lines.put(None)

    def next(self, what: str, timeout: float) -> dict:
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            die(f"timed out after {timeout:g} s waiting for {what} from {self.proc.name}; "
                f"see {self.proc.log_path}")
        if item is None:
            self.proc.popen.poll()
            die(f"{self.proc.name} exited ({self.proc.popen.returncode}) before printing {what}; "
                f"see {self.proc.log_path} {' '.join(self.other)}")
        return item


def cpu_window(proxy_pids: list[int], load_pids: list[int]):
    """Start measuring CPU time; returns a function that ends the window and
    returns the proxy's CPU seconds, the load side's (`load_pids` plus this
    script), and the rest of the machine's as a share of one core (other
    load, as in the wrk scenarios)."""
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    proxy0, load0, (busy0, _) = cpu_ticks(proxy_pids), cpu_ticks(load_pids), machine_ticks()
    wall0 = time.monotonic()

    def end() -> dict:
        proxy1, load1, (busy1, _) = cpu_ticks(proxy_pids), cpu_ticks(load_pids), machine_ticks()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - wall0
        harness = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
        proxy = (proxy1 - proxy0) / CLK_TCK
        load = (load1 - load0) / CLK_TCK + harness
        other = max(0.0, (busy1 - busy0) / CLK_TCK - proxy - load)
        return {"wall_s": wall, "proxy_cpu_s": proxy, "load_cpu_s": load,
                "other_cpu_share": other / wall if wall else 0.0}

    return end


def log_tail(path: str, lines: int = 3, width: int = 300) -> str:
    """The last `lines` non-empty lines of a log, joined, cut to `width`."""
    try:
        with open(path, errors="replace") as f:
            kept = [line.strip() for line in f if line.strip()][-lines:]
    except OSError:
        return ""
    text = " | ".join(kept)
    return text if len(text) <= width else text[:width - 1] + "…"


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of each process (all its threads), summed, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def https_get(port: int, host: str, ca_file: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET / over TLS from 127.0.0.1:`port` with SNI and Host `host`, the
    certificate verified against `ca_file` (no DNS: the name is pinned)."""
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def warm_up(url: str, seconds: float) -> tuple[int, int, int]:
    """Sequential requests on one keep-alive connection for `seconds`, closed
    with no request in flight. (wrk always stops with requests in flight, and
    heroku-lb ejects backends when a client hangs up mid-request, so a wrk
    warm-up would skew the run after it; see bench/README.md.)
    Returns (requests, non-200 answers, distinct bodies seen: the apps that
    answered, in the heroku scenario)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    sent = bad = 0
    bodies = set()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            conn.request("GET", "/")
            response = conn.getresponse()
            bodies.add(response.read())
            sent += 1
            bad += response.status != 200
    finally:
        conn.close()
    return sent, bad, len(bodies)


def other_load(seconds: float = 0.5) -> float:
    """Share of one core the whole machine was busy over `seconds` (this
    script and idle servers use next to nothing)."""
    busy0, _ = machine_ticks()
    time.sleep(seconds)
    busy1, _ = machine_ticks()
    return (busy1 - busy0) / CLK_TCK / seconds


def wait_for_quiet(limit_s: float) -> float:
    """Wait (up to `limit_s`) until nothing else keeps a CPU busy; returns the
    last load seen."""
    deadline = time.monotonic() + limit_s
    load = other_load()
    if load > NOISE_LIMIT:
        log(f"  machine busy ({100 * load:.0f}% of a core from other processes); waiting up to "
            f"{limit_s:g} s for quiet")
    while load > NOISE_LIMIT and time.monotonic() < deadline:
        time.sleep(1)
        load = other_load()
    return load


def wait_until(what: str, check, timeout: float, proc: Proc | None = None, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            die(f"{what}: {proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError):
            pass
        time.sleep(interval)
    die(f"timed out after {timeout:g} s waiting for {what}")


# --------------------------------------------------------------------------
# Tools and builds


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx", "haproxy") if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0:
        die(
            f"missing {', '.join(missing)}; install them first, e.g. "
            f"`sudo apt-get install -y {' '.join(missing)}`"
        )
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    still = [tool for tool in missing if not shutil.which(tool)]
    if still:
        die(f"apt-get did not provide {', '.join(still)}")


def build(skip: bool, scenarios: list[str]) -> dict[str, str]:
    """The binaries, built with cargo unless `skip` (in `$CARGO_TARGET_DIR`,
    else `target/`). The fake Platform API only for the discovery scenario,
    the bare Pingora proxies only for the scenarios that run them."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    if not os.path.isabs(target):
        target = os.path.join(REPO, target)
    examples = []
    if any(s not in ("deploy", "mixed") for s in scenarios):
        examples += ["bare_pingora", "bare_pingora_mimalloc"]
    if "discovery" in scenarios:
        examples.append("fake_platform_api")
    if "deploy" in scenarios:
        examples.append("deploy_day")
    if "mixed" in scenarios:
        examples.append("mixed_load")
    bins = {"heroku-lb": os.path.join(target, "release", "heroku-lb")}
    bins.update({name: os.path.join(target, "release", "examples", name) for name in examples})
    if not skip:
        # `cargo build --release` and `cargo build --release --example ...` in one go.
        argv = ["cargo", "build", "--release", "--bin", "heroku-lb"]
        for name in examples:
            argv += ["--example", name]
        log("$ " + " ".join(argv))
        if subprocess.run(argv, cwd=REPO).returncode != 0:
            die(f"`{' '.join(argv)}` failed")
    for name, path in bins.items():
        if not os.access(path, os.X_OK):
            die(f"{path} is missing; build it (or drop --no-build)")
    return bins


# --------------------------------------------------------------------------
# wrk


REPORT_LUA = r"""
-- Written by bench/run.py: one machine-readable line at the end of a run.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
    "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"p999_us\":%d,\"max_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


class Wrk:
    def __init__(self, work_dir: str, cpu: int | None):
        self.cpu = cpu
        self.report = os.path.join(work_dir, "report.lua")
        with open(self.report, "w") as f:
            f.write(REPORT_LUA)
        self.fixed = os.path.join(work_dir, "fixed_rate.lua")
        with open(self.fixed, "w") as f:
            f.write(REPORT_LUA)
            f.write(
                "-- Each connection waits this many ms after each answer: "
                "about connections / delay requests per second.\n"
                f"delay = function() return {FIXED_RATE_DELAY_MS} end\n"
            )

    def run(self, url: str, connections: int, duration: float, fixed_rate: bool = False,
            threads: int = 1) -> dict:
        argv = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
            "--timeout", "5s", "-s", self.fixed if fixed_rate else self.report, url,
        ]
        cpus = {self.cpu} if self.cpu is not None else None
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 60,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
        if out.returncode != 0 or line is None:
            die(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
        result = json.loads(line[len("BENCH_JSON "):])
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
        result["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result["connections"] = connections
        result["wrk_threads"] = threads
        result["fixed_rate"] = fixed_rate
        return result


# --------------------------------------------------------------------------
# The servers


class Bench:
    def __init__(self, args, bins):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="heroku-lb-bench-")
        pinning = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
        # Proxy alone on CPU 1; wrk, backends, the fake API and this script on CPU 0.
        self.proxy_cpu = 1 if pinning else None
        self.load_cpu = 0 if pinning else None
        if pinning:
            os.sched_setaffinity(0, {0})
        self.wrk = Wrk(self.work, self.load_cpu)
        # Run copies: a `cargo build` elsewhere during the run cannot swap a
        # binary between two rows of the same table.
        self.bins = {}
        for name, path in bins.items():
            copy = os.path.join(self.work, name)
            shutil.copy2(path, copy)
            self.bins[name] = copy
        self.backends: Proc | None = None
        self.router: Proc | None = None
        self.ports_main: list[int] = []
        self.ports_many: list[int] = []
        self.counter = 0
        self.results: dict = {"runs": []}

    def path(self, name: str) -> str:
        self.counter += 1
        path = os.path.join(self.work, f"{self.counter:03d}-{name}")
        os.makedirs(path, exist_ok=True)
        return path

    # ---- backends

    def start_backends(self, many: int) -> None:
        """One nginx on 3 ports (+ `many` more for the many scenario)."""
        ports = free_ports(3 + many)
        self.ports_main, self.ports_many = ports[:3], ports[3:]
        prefix = self.path("backends")
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(configs.nginx_backends_conf(prefix, ports))
        self.backends = Proc(
            "backend nginx", ["nginx", "-e", "stderr", "-c", conf, "-p", prefix],
            cpu=self.load_cpu, log_path=os.path.join(prefix, "log"),
        )
        for port in (ports[0], ports[-1]):
            wait_until(
                f"backend nginx on port {port}",
                lambda: http_get(f"http://127.0.0.1:{port}/") == (200, b"ok\n"),
                15, self.backends,
            )
        log(f"backends: nginx on 127.0.0.1 ports {ports[0]}.. ({len(ports)} ports)")

    # ---- proxies under test

    def clean_env(self, **extra) -> dict:
        # Every other variable heroku-lb may read goes too (`LB_*`, `HEALTH_CHECK_*`).
        env = {k: v for k, v in os.environ.items() if k not in HEROKU_LB_VARS
               and not k.startswith(("LB_", "HEALTH_CHECK_"))}
        env.update(extra)
        return env

    def start_proxy(self, kind: str, backend_ports: list[int], *, apps: dict | None = None,
                    threads: int = 1, cpu=None) -> tuple[Proc, str]:
        """Start one proxy of `kind` over `backend_ports` (plain HTTP) or, with
        `apps` ({"hosts", "router_port", "ca"}), over the apps of the TLS
        router; returns it and its URL once it answers 200 through to a
        backend. `threads`: worker threads (heroku-lb, bare Pingora). `cpu`:
        where it may run (default: the proxy CPU)."""
        port = free_ports(1)[0]
        cpu = self.proxy_cpu if cpu is None else cpu
        # Idle upstream connections kept: heroku-lb's and bare Pingora's 256
        # and nginx's 64 are plenty for 3 backends; with many backends every
        # proxy keeps twice the backend count, so that no pool is too small
        # for round robin to find an idle connection to each backend.
        upstreams = len(apps["hosts"]) if apps else len(backend_ports)
        many = upstreams > 16
        pool = 2 * upstreams if many else 256
        d = self.path(kind.replace(" ", "_").replace("=", "_"))
        log_path = os.path.join(d, "log")
        if apps:
            hosts, router_port = apps["hosts"], apps["router_port"]
        if kind.startswith("heroku-lb"):
            # The shipped default: RUST_LOG unset (`info`, one request line per
            # request on stdout, a pipe drained on the load CPU as logplex
            # drains a dyno's stdout). The `RUST_LOG=warn` row logs no requests.
            extra = {}
            if kind.endswith("RUST_LOG=warn"):
                extra["RUST_LOG"] = "warn"
            # The policy rows: least connections, and round robin with sticky
            # sessions on (wrk sends no cookie, so every answer sets one).
            if kind.endswith("least_connections"):
                extra["LB_POLICY"] = "least_connections"
            if kind.endswith("sticky"):
                extra["LB_STICKY_COOKIE"] = "heroku_lb"
                extra["LB_STICKY_SECRET"] = "bench-secret"
            if kind.endswith("mimalloc defaults"):
                extra.update(MIMALLOC_DEFAULTS)
            conf = os.path.join(d, "heroku-lb.yaml")
            with open(conf, "w") as f:
                if apps:
                    f.write(configs.heroku_lb_conf(
                        d, port, [f"https://{h}:{router_port}" for h in hosts],
                        threads=threads, upstream_keepalive_pool_size=pool,
                        resolve={h: "127.0.0.1" for h in hosts}, ca_file=apps["ca"]))
                else:
                    f.write(configs.heroku_lb_conf(
                        d, port, [f"http://127.0.0.1:{p}" for p in backend_ports],
                        threads=threads, upstream_keepalive_pool_size=pool))
            proc = Proc(kind, [self.bins["heroku-lb"], "-c", conf], cpu=cpu,
                        env=self.clean_env(**extra), log_path=log_path,
                        count_lines="RUST_LOG" not in extra)
        elif kind.startswith("bare Pingora"):
            binary = self.bins["bare_pingora" if kind.endswith("glibc") else "bare_pingora_mimalloc"]
            env = dict(PORT=str(port), BARE_POOL_SIZE=str(pool), BARE_THREADS=str(threads))
            if apps:
                env.update(BARE_APPS=",".join(hosts), BARE_ROUTER=f"127.0.0.1:{router_port}",
                           BARE_CA_FILE=apps["ca"])
            else:
                env["BARE_BACKENDS"] = ",".join(f"127.0.0.1:{p}" for p in backend_ports)
            proc = Proc(kind, [binary], cpu=cpu, env=self.clean_env(**env), log_path=log_path)
        elif kind == "nginx":
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                if apps:
                    # One upstream per app: each keeps up to 64 idle connections.
                    f.write(configs.nginx_apps_proxy_conf(d, port, router_port, hosts, apps["ca"]))
                else:
                    keepalive = pool if many else 64
                    f.write(configs.nginx_proxy_conf(d, port, backend_ports, keepalive))
            proc = Proc(kind, ["nginx", "-e", "stderr", "-c", conf, "-p", d],
                        cpu=cpu, log_path=log_path)
        elif kind == "HAProxy":
            conf = os.path.join(d, "haproxy.cfg")
            with open(conf, "w") as f:
                if apps:
                    f.write(configs.haproxy_apps_conf(port, router_port, hosts, apps["ca"]))
                else:
                    f.write(configs.haproxy_conf(port, backend_ports))
            proc = Proc(kind, ["haproxy", "-db", "-f", conf], cpu=cpu, log_path=log_path)
        else:
            raise ValueError(kind)
        url = f"http://127.0.0.1:{port}/"
        wait_until(f"{kind} to proxy a request", lambda: http_get(url)[0] == 200, 30, proc)
        return proc, url

    def start_over_apps(self, label: str, proxy: str, d: str, apps: int, health_path: str,
                        conf_for, timeout: float = 30.0):
        """Start a proxy of the deploy or mixed scenario, `proxy` ("heroku-lb",
        "HAProxy" or "nginx", the row `label`) on the proxy CPU over that
        scenario's `apps` apps, its configuration the text `conf_for(port)`
        returns for the port it is to listen on. Returns (proc, url, None) once
        it answers `health_path` through to an app (heroku-lb: once every app
        passed its checks), or (None, None, why) if it exited first or was not
        ready in time: those scenarios skip such a row and record why (a
        setting this heroku-lb build lacks is a config error at start) instead
        of stopping the whole benchmark."""
        port = free_ports(1)[0]
        url = f"http://127.0.0.1:{port}"
        log_path = os.path.join(d, "log")

        def answers() -> bool:
            return http_get(url + health_path)[0] == 200

        def every_app_healthy() -> bool:
            if not answers():
                return False
            status = json.loads(http_get(url + "/_lb/status")[1])
            return status.get("backends_healthy") == apps

        ready, env, count_lines = answers, None, False
        if proxy == "heroku-lb":
            conf = os.path.join(d, "heroku-lb.yaml")
            argv = [self.bins["heroku-lb"], "-c", conf]
            # Default logging: request lines on a stdout pipe drained by this
            # script, as in the other scenarios.
            ready, env, count_lines = every_app_healthy, self.clean_env(), True
        elif proxy == "HAProxy":
            conf = os.path.join(d, "haproxy.cfg")
            argv = ["haproxy", "-db", "-f", conf]
        elif proxy == "nginx":
            conf = os.path.join(d, "nginx.conf")
            argv = ["nginx", "-e", "stderr", "-c", conf, "-p", d]
        else:
            raise ValueError(proxy)
        with open(conf, "w") as f:
            f.write(conf_for(port))
        proc = Proc(label, argv, cpu=self.proxy_cpu, env=env, log_path=log_path,
                    count_lines=count_lines)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.alive():
            try:
                if ready():
                    return proc, url, None
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        code = proc.popen.poll()
        proc.stop()
        why = f"exited with {code}" if code is not None else f"not ready within {timeout:g} s"
        said = log_tail(log_path, lines=1).replace(self.work + os.sep, "")
        return None, None, f"{why}: {said or 'nothing logged'}"

    def measured_pids(self, proc: Proc) -> list[int]:
        return proc.pids()

    def worker_pid(self, proc: Proc) -> int:
        """The process that serves requests: nginx's worker, else the process."""
        for pid in descendants(proc.pid):
            if "worker process" in cmdline(pid):
                return pid
        return proc.pid

    def measure(self, proc: Proc, url: str, connections: int, duration: float,
                fixed_rate: bool = False, backends: Proc | None = None,
                wrk_threads: int = 1) -> dict:
        """One wrk run against `proc`, with the proxy's CPU time around it.
        `backends`: what it proxies to (default: the backend nginx; the
        router in the heroku scenario, whose TLS handshakes are counted)."""
        backends = backends or self.backends
        pids = self.measured_pids(proc)
        backend_pids = backends.pids()
        router = backends is self.router
        accepts0 = self.router_accepts() if router else None
        lines0 = proc.lines.access_lines if proc.lines else None
        epoch0 = time.time()
        # This script's own CPU: the log reader thread drains heroku-lb's stdout.
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0, back0, (busy0, total0) = cpu_ticks(pids), cpu_ticks(backend_pids), machine_ticks()
        wall0 = time.monotonic()
        r = self.wrk.run(url, connections, duration, fixed_rate, wrk_threads)
        wall = time.monotonic() - wall0
        cpu1, back1, (busy1, total1) = cpu_ticks(pids), cpu_ticks(backend_pids), machine_ticks()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        harness_s = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
        epoch1 = time.time()
        accepts1 = self.router_accepts() if router else None
        proxy_s = (cpu1 - cpu0) / CLK_TCK
        backends_s = (back1 - back0) / CLK_TCK
        machine_s = (busy1 - busy0) / CLK_TCK
        other_s = max(0.0, machine_s - proxy_s - backends_s - r["wrk_cpu_s"] - harness_s)
        r.update(
            proxy_cpu_s=proxy_s,
            harness_cpu_s=harness_s,
            cpu_us_per_request=proxy_s * 1e6 / r["requests"] if r["requests"] else None,
            proxy_cpu_share=proxy_s / wall,
            backends_cpu_s=backends_s,
            other_cpu_share=other_s / wall,
            wall_s=wall,
            peak_rss_kb=status_kb(self.worker_pid(proc), "VmHWM"),
            rss_kb=status_kb(self.worker_pid(proc), "VmRSS"),
        )
        if router:
            # Each connection accepted by the router's TLS listener is one TLS
            # handshake; the second stub_status poll is one more accept.
            r["handshakes"] = accepts1 - accepts0 - 1
            r["handshakes_per_1k"] = 1000 * r["handshakes"] / r["requests"] if r["requests"] else None
            r["_session_window"] = (epoch0, epoch1)
        if lines0 is not None:
            r["_lines0"] = lines0
        if not proc.alive():
            die(f"{proc.name} died during the run; see {proc.log_path}")
        return r

    def record(self, scenario: str, kind: str, r: dict, **extra) -> dict:
        r = dict(r, scenario=scenario, proxy=kind, **extra)
        self.results["runs"].append(r)
        return r

    def log_problems(self, proc: Proc) -> list[str]:
        """Warning and error lines a proxy wrote (heroku-lb logs `level=warn`)."""
        problems = []
        try:
            with open(proc.log_path, errors="replace") as f:
                for line in f:
                    low = line.lower()
                    if "level=warn" in low or "level=error" in low or "at=error" in low \
                            or "[alert]" in low or "[emerg]" in low or "panic" in low:
                        problems.append(line.strip())
        except OSError:
            pass
        return problems

    def session(self, kind, backend_ports, connections, scenario, fixed=False, *, apps=None,
                threads=1, cpu=None, wrk_threads=1, **extra) -> dict:
        """Start `kind`, warm it up, do one measured wrk run, stop it. A run
        during which other processes kept a CPU busy is done again on a fresh
        process (up to --noise-retries times); the quietest attempt is kept.
        In the cores scenario (`cpu` = every CPU) everything shares the CPUs,
        so nothing counts as other load but processes of no one here."""
        best = None
        for attempt in range(1 + self.args.noise_retries):
            r = self.one_session(kind, backend_ports, connections, fixed, apps=apps,
                                 threads=threads, cpu=cpu, wrk_threads=wrk_threads)
            r["attempt"] = attempt + 1
            self.report_run(dict(r, scenario=scenario, proxy=kind))
            if best is None or r["other_cpu_share"] < best["other_cpu_share"]:
                best = r
            if r["other_cpu_share"] <= NOISE_LIMIT:
                break
        return self.record(scenario, kind, best, **extra)

    def one_session(self, kind, backend_ports, connections, fixed, *, apps=None, threads=1,
                    cpu=None, wrk_threads=1) -> dict:
        proc, url = self.start_proxy(kind, backend_ports, apps=apps, threads=threads, cpu=cpu)
        try:
            warm = warm_up(url, self.args.warmup)
            quiet = wait_for_quiet(self.args.quiet_wait)
            r = self.measure(proc, url, connections, self.args.duration, fixed,
                             backends=self.router if apps else None, wrk_threads=wrk_threads)
            r.update(warmup_requests=warm[0], warmup_non_200=warm[1], load_before=quiet)
            if apps:
                r["apps_seen_in_warmup"] = warm[2]
            if cpu is not None:
                r["threads"] = threads
            if kind.startswith("heroku-lb"):
                # wrk has just hung up with requests in flight: what did that do?
                time.sleep(0.5)
                lines0 = r.pop("_lines0", None)
                if lines0 is not None:
                    # Request lines written during the run (those wrk had in
                    # flight when it stopped included): at least one per
                    # request wrk completed, else lines were lost.
                    r["access_lines"] = proc.lines.access_lines - lines0
                    r["access_lines_lost"] = max(0, r["requests"] - r["access_lines"])
                code, body = http_get(url + "_lb/status")
                status = json.loads(body)
                r["healthy_after_wrk_stopped"] = status.get("backends_healthy")
                r["backends_total"] = status.get("backends_total")
            window = r.pop("_session_window", None)
            if window:
                r.update(self.router_sessions(*window))
        finally:
            proc.stop()
        problems = self.log_problems(proc)
        r["ejections_in_session"] = sum(1 for p in problems if "-> ejected" in p)
        r["log_problem_lines"] = len(problems)
        if problems:
            self.results.setdefault("log_problems", {}).setdefault(kind, [])
            kept = self.results["log_problems"][kind]
            kept.extend(problems[: max(0, 20 - len(kept))])
        return r

    def report_run(self, r: dict) -> None:
        scenario, kind = r["scenario"], r["proxy"]
        notes = []
        if r["errors"]:
            notes.append(f"ERRORS {r['errors']}")
        if r.get("healthy_after_wrk_stopped") is not None and \
                r["healthy_after_wrk_stopped"] < r["backends_total"]:
            notes.append(f"{r['backends_total'] - r['healthy_after_wrk_stopped']} of "
                         f"{r['backends_total']} backends ejected when wrk hung up")
        if r["other_cpu_share"] > NOISE_LIMIT:
            notes.append(f"noisy: other load {100 * r['other_cpu_share']:.0f}% of a core")
        if r.get("handshakes") is not None:
            notes.append(f"{r['handshakes_per_1k']:.2f} handshakes/1k req "
                         f"({r.get('full_handshakes', '?')} full, "
                         f"{r.get('resumed_handshakes', '?')} resumed)")
        if r.get("apps_seen_in_warmup") is not None:
            notes.append(f"{r['apps_seen_in_warmup']} apps answered the warm-up")
        if r.get("access_lines") is not None:
            notes.append(f"{r['access_lines']} access lines, {r['access_lines_lost']} lost")
        label = kind if not r.get("threads") else f"{kind} threads={r['threads']}"
        log(
            f"  {scenario:<10} {label:<26} {r['rps']:>9.0f} req/s  p50 {r['p50_us'] / 1000:6.3f} ms  "
            f"p99 {r['p99_us'] / 1000:6.3f} ms  {r['cpu_us_per_request']:6.1f} µs CPU/req  "
            f"proxy CPU {100 * r['proxy_cpu_share']:3.0f}%  HWM {(r['peak_rss_kb'] or 0) / 1024:.1f} MiB"
            + "".join(f"  ({n})" for n in notes)
        )

    # ---- scenarios

    PROXIES = ["heroku-lb", "heroku-lb RUST_LOG=warn", "heroku-lb least_connections",
               "heroku-lb sticky", "bare Pingora", "bare Pingora glibc", "nginx", "HAProxy"]
    # The many-backends and heroku scenarios: the default heroku-lb and the peers.
    PEERS = ["heroku-lb", "bare Pingora", "bare Pingora glibc", "nginx", "HAProxy"]
    # The heroku scenario: the peers, heroku-lb without request lines, and
    # heroku-lb with mimalloc's own defaults (what src/allocator.rs changes
    # for idle memory, measured against the request path).
    HEROKU_PROXIES = ["heroku-lb", "heroku-lb RUST_LOG=warn", "heroku-lb mimalloc defaults",
                      "bare Pingora", "bare Pingora glibc", "nginx", "HAProxy"]
    # The cores scenario.
    CORES_PROXIES = ["heroku-lb", "bare Pingora"]

    def throughput(self) -> None:
        a = self.args
        log(f"throughput: 3 backends, {a.connections} connections, {a.duration:g} s, {a.rounds} rounds")
        for round_no in range(a.rounds):
            for kind in rotation(self.PROXIES, round_no):
                self.session(kind, self.ports_main, a.connections, "throughput", round=round_no)

    def saturation(self, kind: str) -> float:
        """Median req/s of `kind` in the throughput scenario (measured now if
        that scenario did not run)."""
        rates = [r["rps"] for r in self.results["runs"]
                 if r["scenario"] in ("throughput", "saturation") and r["proxy"] == kind]
        if not rates:
            log(f"latency: measuring {kind}'s saturation rate first")
            rates = [self.session(kind, self.ports_main, self.args.connections,
                                  "saturation")["rps"]]
        return statistics.median(rates)

    def latency(self) -> None:
        """Latency at two fixed rates: half of nginx's saturation rate, and half
        of the slowest proxy's (a load every proxy can carry)."""
        nginx = self.saturation("nginx")
        slowest_kind = min(self.PROXIES, key=self.saturation)
        slowest = self.saturation(slowest_kind)
        self.results["latency_method"] = {
            "tool": "wrk2 not available: wrk with a Lua delay() per request",
            "delay_ms": FIXED_RATE_DELAY_MS,
            "rates": [],
        }
        for label, base_kind, base in (("half of nginx's saturation", "nginx", nginx),
                                       ("half of the slowest proxy's saturation", slowest_kind,
                                        slowest)):
            target = base / 2
            # Each connection sends, waits for the answer, then DELAY ms; +1 ms
            # for the answer itself and wrk's millisecond timers.
            connections = max(1, min(1000, round(target * (FIXED_RATE_DELAY_MS + 1) / 1000)))
            self.results["latency_method"]["rates"].append({
                "label": label, "base_proxy": base_kind, "base_rps": base,
                "target_rps": target, "connections": connections})
            log(f"latency: ~{target:.0f} req/s ({label}: {base_kind}, {base:.0f}) as "
                f"{connections} connections x 1 request per {FIXED_RATE_DELAY_MS} ms")
            for kind in self.PROXIES:
                self.session(kind, self.ports_main, connections, "latency", fixed=True,
                             target_rps=target, rate_label=label)

    def rss(self) -> None:
        log(f"rss: 3 backends, 256 connections, {self.args.duration:g} s, fresh process each")
        for kind in self.PROXIES:
            self.session(kind, self.ports_main, 256, "rss")
        self.rss_per_app()

    def rss_per_app(self) -> None:
        """heroku-lb's idle memory per app: VmRSS with 1,000 apps minus with
        3, each app a distinct hostname (pinned to 127.0.0.1, on the 3 backend
        ports in turn), after every app passed its first check and one more
        round of checks; no traffic. As shipped, and with mimalloc's own
        defaults (src/allocator.rs)."""
        self.results["idle_rss"] = {}
        for label, extra in (("shipped", {}), ("mimalloc defaults", MIMALLOC_DEFAULTS)):
            idle = {}
            for n in (3, 1000):
                d = self.path(f"heroku-lb_idle_{n}_{label.replace(' ', '_')}")
                port = free_ports(1)[0]
                hosts = [f"app-{i}.idle.test" for i in range(n)]
                conf = os.path.join(d, "heroku-lb.yaml")
                with open(conf, "w") as f:
                    f.write(configs.heroku_lb_conf(
                        d, port,
                        [f"http://{h}:{self.ports_main[i % 3]}" for i, h in enumerate(hosts)],
                        resolve={h: "127.0.0.1" for h in hosts}))
                proc = Proc(f"heroku-lb idle {n} apps ({label})",
                            [self.bins["heroku-lb"], "-c", conf], cpu=self.proxy_cpu,
                            env=self.clean_env(RUST_LOG="warn", **extra),
                            log_path=os.path.join(d, "log"))
                try:
                    def healthy():
                        code, body = http_get(f"http://127.0.0.1:{port}/_lb/status")
                        return code == 200 and json.loads(body).get("backends_healthy") == n
                    wait_until(f"{n} idle apps to pass their first check", healthy, 60, proc)
                    time.sleep(6)  # one more round of checks (every 5 s)
                    idle[n] = status_kb(proc.pid, "VmRSS")
                finally:
                    proc.stop()
            per_app = (idle[1000] - idle[3]) / 997
            log(f"  rss        heroku-lb idle ({label}): {idle[3]} kB with 3 apps, {idle[1000]} kB "
                f"with 1000: {per_app:.1f} KiB per app")
            self.results["idle_rss"][label] = {"apps_3_kb": idle[3], "apps_1000_kb": idle[1000],
                                               "per_app_kib": per_app}

    def many(self) -> None:
        counts = [3] + self.args.many
        log(f"many: {' vs '.join(map(str, counts))} backends, 64 connections, "
            f"{self.args.duration:g} s")
        # Rounds as in the throughput scenario: on a shared machine one run
        # per proxy and count moves by tens of percent; medians are reported.
        for round_no in range(self.args.rounds):
            for kind in rotation(self.PEERS, round_no):
                for n in counts:
                    ports = self.ports_main if n == 3 else self.ports_many[:n]
                    self.session(kind, ports, 64, "many", backends=n, round=round_no)

    # ---- the heroku scenario: TLS to one router serving many apps

    def start_router(self, max_apps: int) -> dict:
        """The router: one nginx worker on the load CPU with one TLS port
        serving app-1..app-`max_apps`.bench.test by SNI and Host, and
        stub_status on a plain port. Returns {"router_port", "ca", "hosts"}."""
        d = self.path("router")
        certs = configs.test_certificates(os.path.join(d, "certs"))
        tls_port, status_port = free_ports(2)
        hosts = configs.app_hosts(max_apps)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(configs.nginx_router_conf(d, tls_port, status_port, hosts,
                                              certs["cert"], certs["key"]))
        self.router = Proc("router nginx", ["nginx", "-e", "stderr", "-c", conf, "-p", d],
                           cpu=self.load_cpu, log_path=os.path.join(d, "log"))
        self.router_status_url = f"http://127.0.0.1:{status_port}/"
        self.router_sessions_log = os.path.join(d, "sessions.log")
        for host in (hosts[0], hosts[-1]):
            wait_until(f"the router to answer {host}",
                       lambda: https_get(tls_port, host, certs["ca"]) == (
                           200, f"ok {host.split('.', 1)[0]}\n".encode()),
                       15, self.router)
        # A proxy that sends one app's SNI with another's Host is refused.
        context = ssl.create_default_context(cafile=certs["ca"])
        with context.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=2),
                                 server_hostname=hosts[0]) as tls:
            tls.sendall(f"GET / HTTP/1.0\r\nHost: {hosts[-1]}\r\n\r\n".encode())
            answer = tls.recv(100)
        if b" 421 " not in answer:
            die(f"the router did not refuse a mismatched SNI and Host: {answer!r}")
        log(f"router: nginx with TLS on 127.0.0.1:{tls_port} for {max_apps} apps "
            f"(*.{configs.APP_DOMAIN}), stub_status on {status_port}")
        return {"router_port": tls_port, "ca": certs["ca"], "hosts": hosts}

    def router_accepts(self) -> int:
        """Connections the router has accepted (stub_status `accepts`; this
        poll's own connection included)."""
        body = http_get(self.router_status_url)[1].decode()
        return int(body.splitlines()[2].split()[0])

    def router_sessions(self, start: float, end: float) -> dict:
        """Full and resumed TLS handshakes of the connections whose first
        request the router logged between `start` and `end` (epoch seconds);
        the log is buffered with flush=1s, so wait for it first."""
        time.sleep(1.2)
        full = resumed = 0
        try:
            with open(self.router_sessions_log) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) == 4 and start <= float(fields[0]) <= end:
                        if fields[3] == "r":
                            resumed += 1
                        else:
                            full += 1
        except OSError:
            return {}
        return {"full_handshakes": full, "resumed_handshakes": resumed}

    def heroku(self) -> None:
        counts = self.args.heroku_apps
        log(f"heroku: TLS to one router serving {' and '.join(map(str, counts))} apps by SNI and "
            f"Host, 64 connections, {self.args.duration:g} s")
        router = self.start_router(max(counts))
        try:
            for round_no in range(self.args.rounds):
                for n in counts:
                    apps = dict(router, hosts=router["hosts"][:n])
                    for kind in rotation(self.HEROKU_PROXIES, round_no):
                        self.session(kind, [], 64, "heroku", apps=apps, backends=n,
                                     round=round_no)
        finally:
            self.router.stop()
            self.router = None

    # ---- the cores scenario: threads 1 and 2, nothing pinned

    def cores(self) -> None:
        every = set(range(os.cpu_count() or 1))
        log(f"cores: threads 1 vs 2 on CPUs {sorted(every)} (load side unpinned too), 3 backends, "
            f"64 connections, wrk -t2, {self.args.duration:g} s")
        # The backends, wrk and this script may run anywhere for these runs.
        pinned = {pid: os.sched_getaffinity(pid) for pid in [0, *self.backends.pids()]}
        saved_cpu = self.wrk.cpu
        try:
            for pid in pinned:
                os.sched_setaffinity(pid, every)
            self.wrk.cpu = None
            for round_no in range(self.args.rounds):
                for kind in rotation(self.CORES_PROXIES, round_no):
                    for threads in (1, 2):
                        self.session(kind, self.ports_main, 64, "cores", threads=threads,
                                     cpu=every, wrk_threads=2, round=round_no)
        finally:
            self.wrk.cpu = saved_cpu
            for pid, cpus in pinned.items():
                try:
                    os.sched_setaffinity(pid, cpus)
                except OSError:
                    pass

    def instructions(self) -> None:
        """The Heroku shape under callgrind (bench/instructions.py): user-space
        instructions per request at each app count, which the machine's other
        load does not move. Skipped without valgrind."""
        if not shutil.which("valgrind"):
            log("instructions: skipped, valgrind is not installed")
            self.results["instructions"] = {"skipped": "valgrind is not installed"}
            return
        import instructions  # noqa: E402 (it imports this module)
        counts = self.args.heroku_apps
        log(f"instructions: callgrind, TLS to one router, {' and '.join(map(str, counts))} apps")
        binaries = {"heroku-lb": self.bins["heroku-lb"],
                    "heroku-lb RUST_LOG=warn": self.bins["heroku-lb"],
                    "bare Pingora": self.bins["bare_pingora_mimalloc"],
                    "bare Pingora with timeouts": self.bins["bare_pingora_mimalloc"]}
        work = self.path("instructions")
        self.results["instructions"] = {
            "counts": instructions.heroku_shape(counts, binaries, work, 8, 8, 0)}

    def deploy(self) -> None:
        deploy.scenario(self)

    def mixed(self) -> None:
        mixed.scenario(self)

    def discovery(self) -> None:
        apps = self.args.apps
        d = self.path("discovery")
        log(f"discovery: a pipeline of {apps} apps on the fake Platform API, DISCOVERY_INTERVAL=1")
        fake = Proc("fake Platform API",
                    [self.bins["fake_platform_api"], "--apps", str(apps),
                     "--backend-ports", ",".join(map(str, self.ports_main))],
                    cpu=self.load_cpu, log_path=os.path.join(d, "fake.log"), stdout_pipe=True)
        try:
            info = json.loads(fake.popen.stdout.readline() or "null")
            if not info:
                die(f"the fake Platform API printed nothing; see {fake.log_path}")
            # First with the shipped pool of 256 idle upstream connections, then
            # with a pool larger than the number of apps.
            for pool in (256, max(512, 2 * apps)):
                self.discovery_session(info, apps, pool, measure_api=(pool == 256))
        finally:
            fake.stop()

    def discovery_session(self, info: dict, apps: int, pool: int, measure_api: bool) -> None:
        d = self.path(f"discovery-pool-{pool}")
        stats = lambda: json.loads(http_get(info["stats_url"])[1])  # noqa: E731
        port = free_ports(1)[0]
        conf = os.path.join(d, "heroku-lb.yaml")
        with open(conf, "w") as f:
            f.write(configs.heroku_lb_conf(
                d, port, pipeline=info["pipeline"], heroku_api_url=info["api_url"],
                discovery_interval_seconds=1, upstream_keepalive_pool_size=pool,
                resolve={f"app-{n}.bench.test": "127.0.0.1" for n in range(apps)}))
        status_url = f"http://127.0.0.1:{port}/_lb/status"

        def status():
            code, body = http_get(status_url, timeout=5)
            return json.loads(body) if body.startswith(b"{") else None

        api_start = stats()
        started = time.monotonic()
        kind = f"heroku-lb ({apps} apps, pool {pool})"
        lb = Proc(kind, [self.bins["heroku-lb"], "-c", conf],
                  cpu=self.proxy_cpu, log_path=os.path.join(d, "heroku-lb.log"),
                  env=self.clean_env(RUST_LOG="warn", HEROKU_API_KEY=info["api_key"]))
        try:
            first = wait_until("the first status answer", status, 120, lb, interval=0.02)
            t_first_status = time.monotonic() - started
            wait_until(f"{apps} backends in /_lb/status",
                       lambda: (status() or {}).get("backends_total", 0) >= apps, 120, lb, 0.02)
            t_total = time.monotonic() - started
            api_initial = stats()
            final = wait_until(
                f"{apps} healthy backends",
                lambda: (lambda s: s if s and s.get("backends_healthy", 0) >= apps else None)(status()),
                120, lb, 0.1)
            t_healthy = time.monotonic() - started
            log(f"  {apps} apps in /_lb/status {t_total:.2f} s after start (first answer at "
                f"{t_first_status:.2f} s, all healthy at {t_healthy:.2f} s), "
                f"{api_initial['total'] - api_start['total']} API requests")
            if measure_api:
                # Steady state, once the first round's lookups are done.
                time.sleep(2)
                rounds_wanted = 3 if self.args.quick else 10
                before, status0 = stats(), status()
                pids = lb.pids()
                cpu0, t0 = cpu_ticks(pids), time.monotonic()
                wait_until(f"{rounds_wanted} discovery rounds",
                           lambda: stats()["couplings"] - before["couplings"] >= rounds_wanted,
                           rounds_wanted * 5 + 30, lb, 0.2)
                after, status1 = stats(), status()
                idle_cpu_share = (cpu_ticks(pids) - cpu0) / CLK_TCK / (time.monotonic() - t0)
                rounds = after["couplings"] - before["couplings"]
                delta = {k: after[k] - before[k] for k in after if k != "rate_limit_remaining"}
                per_round = delta["total"] / rounds
                log(f"  steady state: {delta['total']} API requests in {rounds} rounds = "
                    f"{per_round:.2f} per round ({delta['couplings_conditional']} conditional "
                    f"couplings GETs); idle CPU {100 * idle_cpu_share:.1f}% of a core "
                    f"(health checks of {apps} apps every 5 s)")
                self.results["discovery"] = {
                    "apps": apps,
                    "seconds_to_first_status": t_first_status,
                    "seconds_to_all_in_status": t_total,
                    "seconds_to_all_healthy": t_healthy,
                    "api_requests_initial": {k: api_initial[k] - api_start[k]
                                             for k in api_initial if k != "rate_limit_remaining"},
                    "steady_rounds": rounds,
                    "steady_api_requests": delta,
                    "steady_api_requests_per_round": per_round,
                    "status_rounds_delta": (status1 or {}).get("discovery", {}).get("rounds", 0)
                    - (status0 or {}).get("discovery", {}).get("rounds", 0),
                    "status_api_requests": (status1 or {}).get("discovery", {}).get("api_requests"),
                    "rate_limit_remaining": after["rate_limit_remaining"],
                    "idle_cpu_share": idle_cpu_share,
                    "first_status": {k: first.get(k) for k in
                                     ("status", "backends_total", "backends_healthy")},
                    "final_status": {k: final.get(k) for k in
                                     ("status", "backends_total", "backends_healthy")},
                }

            # Traffic over every discovered app.
            url = f"http://127.0.0.1:{port}/"
            warm_up(url, self.args.warmup)
            wait_for_quiet(self.args.quiet_wait)
            r = self.measure(lb, url, self.args.connections, self.args.duration)
            time.sleep(0.5)
            after_run = status() or {}
            r["healthy_after_wrk_stopped"] = after_run.get("backends_healthy")
            r["backends_total"] = after_run.get("backends_total")
            self.report_run(dict(r, scenario="discovery", proxy=kind))
            self.record("discovery", kind, r, backends=apps, pool=pool)
        finally:
            lb.stop()
            problems = self.log_problems(lb)
            if problems:
                log(f"  {kind} logged {len(problems)} warning/error lines, e.g. {problems[0][:200]}")
                self.results.setdefault("log_problems", {})[kind] = problems[:20]


# --------------------------------------------------------------------------
# Reports


def machine_info(bins) -> dict:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip() or "?"
    # bench/results/ is tracked and rewritten by every run: a previous run's
    # results do not make the code under test differ from the commit.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)bench/results"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wrk": tool_version(["wrk", "-v"]).split(" Copyright")[0],
        "nginx": tool_version(["nginx", "-v"]).replace("nginx version: ", ""),
        "haproxy": tool_version(["haproxy", "-v"]).split(" - ")[0],
        "rustc": tool_version(["rustc", "--version"]),
        "heroku_lb_commit": commit + (" + uncommitted changes" if dirty else ""),
        "heroku_lb_built": datetime.datetime.fromtimestamp(
            os.path.getmtime(bins["heroku-lb"]), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "pinning": "proxy on CPU 1; wrk, backends, router, fake API, the deploy and mixed "
        "scenarios' apps and load, log reader on CPU 0 (cores scenario: nothing pinned)"
        if (os.cpu_count() or 1) >= 2 else "none (1 CPU)",
    }


def rotation(items: list, round_no: int) -> list:
    """`items` in round `round_no`'s order: rotated by the round, reversed
    every other round, so that no proxy always runs first or last."""
    n = len(items)
    order = items[round_no % n:] + items[:round_no % n]
    if round_no % 2:
        order.reverse()
    return order


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], scenario: str, key=lambda r: r["proxy"]) -> dict:
    groups: dict = {}
    for r in runs:
        if r["scenario"] == scenario:
            groups.setdefault(key(r), []).append(r)
    out = {}
    for name, rs in groups.items():
        out[name] = {
            "n": len(rs),
            "rps": median([r["rps"] for r in rs]),
            "p50_us": median([r["p50_us"] for r in rs]),
            "p99_us": median([r["p99_us"] for r in rs]),
            "p999_us": median([r["p999_us"] for r in rs]),
            "cpu_us": median([r["cpu_us_per_request"] for r in rs]),
            "cpu_us_min": min(r["cpu_us_per_request"] for r in rs),
            "cpu_us_max": max(r["cpu_us_per_request"] for r in rs),
            "proxy_cpu_share": median([r["proxy_cpu_share"] for r in rs]),
            "peak_rss_kb": max((r["peak_rss_kb"] or 0) for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "noisy": sum(1 for r in rs if r["other_cpu_share"] > NOISE_LIMIT),
        }
        if any(r.get("handshakes") is not None for r in rs):
            out[name]["handshakes_per_1k"] = median([r.get("handshakes_per_1k") for r in rs])
        if any(r.get("full_handshakes") is not None for r in rs):
            out[name]["full_handshakes"] = sum(r.get("full_handshakes", 0) for r in rs)
            out[name]["resumed_handshakes"] = sum(r.get("resumed_handshakes", 0) for r in rs)
    return out


def ms(us) -> str:
    return "–" if us is None else f"{us / 1000:.2f} ms"


def ratio(a, b) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def span(values: list[float], fmt: str) -> str:
    """`low–high` of `values` printed with `fmt`, or one value when both
    print the same."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}–{high}"


def mib(kb) -> str:
    return "–" if not kb else f"{kb / 1024:.1f} MiB"


def write_reports(bench: Bench, out_dir: str, command: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    res = bench.results
    runs = res["runs"]
    m = res["machine"]
    lines = [
        "# heroku-lb benchmark: latest results",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, kernel {m['kernel']}, {m['date']}; "
        f"{m['wrk']}, nginx {m['nginx']}, {m['haproxy']}, {m['rustc']}; "
        f"heroku-lb {m['heroku_lb_commit']} (binary built {m['heroku_lb_built']}). "
        f"Pinning: {m['pinning']}.",
        "",
        f"Command: `{command}`",
        "",
        "Every proxy runs ONE worker (thread or process) with upstream keep-alive; backends are one "
        "nginx worker answering `ok\\n`. CPU µs/request is the proxy's own CPU time "
        "(utime+stime of all its processes, /proc/PID/stat) over the run divided by the requests "
        "wrk completed. Medians over rounds. See bench/README.md for the method.",
        "",
    ]
    chart_rows = []

    t = summarize(runs, "throughput")
    if t:
        n = max(v["n"] for v in t.values())
        lines += [
            f"## Throughput: 3 backends, wrk -t1 -c{bench.args.connections}, "
            f"{bench.args.duration:g} s × {n} rounds",
            "",
            "| proxy | req/s | p50 | p99 | CPU µs/request | × nginx | × bare Pingora | proxy CPU | peak RSS | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        nginx = t.get("nginx", {}).get("cpu_us")
        bare = t.get("bare Pingora", {}).get("cpu_us")
        for name in Bench.PROXIES:
            if name not in t:
                continue
            v = t[name]
            spread = f" ({v['cpu_us_min']:.1f}–{v['cpu_us_max']:.1f})" if v["n"] > 1 else ""
            lines.append(
                f"| {name} | {v['rps']:,.0f} | {ms(v['p50_us'])} | {ms(v['p99_us'])} | "
                f"{v['cpu_us']:.1f}{spread} | {ratio(v['cpu_us'], nginx)} | {ratio(v['cpu_us'], bare)} | "
                f"{100 * v['proxy_cpu_share']:.0f}% | {mib(v['peak_rss_kb'])} | {v['errors']} |"
            )
            chart_rows.append((name, v["cpu_us"], v["p99_us"] / 1000))
        lines += ["",
                  "_proxy CPU_: share of one core the proxy used during the run (100% = the "
                  "proxy was the bottleneck). _errors_: wrk socket errors plus non-2xx/3xx answers, "
                  "all rounds.", ""]
        noisy = sum(v["noisy"] for v in t.values())
        if noisy:
            lines += [f"**Noise:** {noisy} run(s) had other processes using more than "
                      f"{100 * NOISE_LIMIT:.0f}% of a core (see latest.json, `other_cpu_share`).", ""]

    lm = res.get("latency_method")
    if lm:
        lines += [
            "## Latency at fixed rates",
            "",
            "wrk2 is not installed (no Debian package), so a fixed rate is approximated with wrk: "
            f"N connections, each waiting {lm['delay_ms']} ms after every answer (a Lua "
            "`delay()`), offer about N ÷ (delay + latency) requests per second. This is "
            "closed-loop: a proxy that falls behind is offered less, and queueing is not "
            "counted as wrk2 would, so compare achieved rates too.",
            "",
        ]
        for rate in lm["rates"]:
            lat = summarize([r for r in runs if r.get("rate_label") == rate["label"]], "latency")
            lines += [
                f"### ~{rate['target_rps']:,.0f} req/s offered: {rate['label']} "
                f"({rate['base_proxy']}, {rate['base_rps']:,.0f} req/s), "
                f"{rate['connections']} connections",
                "",
                "| proxy | achieved req/s | p50 | p99 | p99.9 | CPU µs/request | proxy CPU | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for name in Bench.PROXIES:
                if name in lat:
                    v = lat[name]
                    lines.append(
                        f"| {name} | {v['rps']:,.0f} | {ms(v['p50_us'])} | {ms(v['p99_us'])} | "
                        f"{ms(v['p999_us'])} | {v['cpu_us']:.1f} | "
                        f"{100 * v['proxy_cpu_share']:.0f}% | {v['errors']} |")
            lines.append("")

    rss = summarize(runs, "rss")
    if rss:
        lines += [
            "## Memory under 256 connections (fresh process, wrk -c256)",
            "",
            "| proxy | peak RSS (VmHWM) | req/s | p99 | CPU µs/request | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in Bench.PROXIES:
            if name in rss:
                v = rss[name]
                lines.append(f"| {name} | {mib(v['peak_rss_kb'])} | {v['rps']:,.0f} | "
                             f"{ms(v['p99_us'])} | {v['cpu_us']:.1f} | {v['errors']} |")
        lines += ["", "For nginx, the worker process's VmHWM; for the others, the process's.", ""]
    idle = bench.results.get("idle_rss")
    if idle:
        # Older results hold one measurement (as shipped then).
        idle = idle if "shipped" in idle else {"shipped": idle}
        lines += ["heroku-lb idle, no traffic, after every app's first health checks, each app a "
                  "distinct hostname:", "",
                  "| heroku-lb | VmRSS, 3 apps | VmRSS, 1,000 apps | per app |",
                  "|---|---:|---:|---:|"]
        for label, v in idle.items():
            lines.append(f"| {label} | {mib(v['apps_3_kb'])} | {mib(v['apps_1000_kb'])} | "
                         f"**{v['per_app_kib']:.1f} KiB** |")
        lines += ["", "_mimalloc defaults_: `MIMALLOC_ALLOW_THP=1`, transparent huge pages allowed "
                  "as before src/allocator.rs turned them off; the Heroku scenario has the same "
                  "row, for what it costs a request.", ""]

    many = summarize(runs, "many", key=lambda r: (r["proxy"], r.get("backends")))
    if many:
        counts = sorted({b for _, b in many})
        lines += [
            f"## Many backends: {', '.join(map(str, counts))} backends, wrk -t1 -c64",
            "",
            "| proxy | backends | req/s | p99 | CPU µs/request | vs 3 backends | peak RSS | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in Bench.PEERS:
            base = many.get((name, 3))
            for c in counts:
                v = many.get((name, c))
                if not v:
                    continue
                change = f"{100 * (v['cpu_us'] / base['cpu_us'] - 1):+.0f}%" if base and c != 3 else ""
                lines.append(
                    f"| {name} | {c} | {v['rps']:,.0f} | {ms(v['p99_us'])} | {v['cpu_us']:.1f} | "
                    f"{change} | {mib(v['peak_rss_kb'])} | {v['errors']} |")
        lines += ["", "Idle upstream pools: 256 (nginx: 64) with 3 backends, twice the backend count "
                  "with more. heroku-lb's CPU includes its active health checks of every backend "
                  "every 5 s (`GET /` on the connection kept from the previous check).", ""]

    heroku = summarize(runs, "heroku", key=lambda r: (r["proxy"], r.get("backends")))
    if heroku:
        counts = sorted({b for _, b in heroku})
        lines += [
            f"## Heroku: TLS to one router serving {' and '.join(map(str, counts))} apps by SNI "
            "and Host, wrk -t1 -c64",
            "",
            "| proxy | apps | req/s | p50 | p99 | CPU µs/request | × HAProxy | × bare Pingora | "
            "TLS handshakes / 1k req (full + resumed) | proxy CPU | peak RSS | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in counts:
            haproxy = heroku.get(("HAProxy", c), {}).get("cpu_us")
            bare = heroku.get(("bare Pingora", c), {}).get("cpu_us")
            for name in Bench.HEROKU_PROXIES:
                v = heroku.get((name, c))
                if not v:
                    continue
                hs = v.get("handshakes_per_1k")
                split = ""
                if v.get("full_handshakes") is not None:
                    split = f" ({v['full_handshakes']} + {v['resumed_handshakes']})"
                hs_text = "–" if hs is None else f"{hs:.2f}{split}"
                lines.append(
                    f"| {name} | {c} | {v['rps']:,.0f} | {ms(v['p50_us'])} | {ms(v['p99_us'])} | "
                    f"{v['cpu_us']:.1f} | {ratio(v['cpu_us'], haproxy)} | {ratio(v['cpu_us'], bare)} | "
                    f"{hs_text} | {100 * v['proxy_cpu_share']:.0f}% | {mib(v['peak_rss_kb'])} | "
                    f"{v['errors']} |")
        lines += ["", "The router is one nginx worker on the load CPU (TLS 1.2/1.3, nginx's default "
                  "session settings: tickets on, no server-side cache); a request whose SNI and "
                  "Host are not the same app gets 421, counted in _errors_ with every other non-2xx. "
                  "Handshakes: connections the router accepted during the run (stub_status "
                  "`accepts`), per 1,000 requests; full + resumed: connections whose first request "
                  "the router logged with `$ssl_session_reused`. heroku-lb's count includes its "
                  "health checks (each on the connection kept from its previous check). bare Pingora: the "
                  "mimalloc build, heroku-lb's allocator.", ""]

    counted = bench.results.get("instructions")
    if counted and counted.get("counts"):
        lines += ["## Instructions per request under callgrind: TLS to one router, by app count",
                  "",
                  "| apps | heroku-lb | heroku-lb `RUST_LOG=warn` | bare Pingora | heroku-lb × bare "
                  "| `RUST_LOG=warn` × bare | heroku-lb × bare without health checks "
                  "| bare Pingora with timeouts | heroku-lb × it |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in counted["counts"]:
            t = r["per_request"]
            bare = t["bare Pingora"]
            timed = t.get("bare Pingora with timeouts")
            lines.append(
                f"| {r['apps']} | {t['heroku-lb']:,.0f} | {t['heroku-lb RUST_LOG=warn']:,.0f} | "
                f"{bare:,.0f} | {t['heroku-lb'] / bare:.2f}× | "
                f"{t['heroku-lb RUST_LOG=warn'] / bare:.2f}× | "
                f"{(t['heroku-lb'] - r['health_checks']) / bare:.2f}× | "
                + (f"{timed:,.0f} | {t['heroku-lb'] / timed:.2f}× |" if timed else "– | – |"))
        lines += ["", "`bench/instructions.py --heroku-apps` (8 s of wrk -c8 each, under "
                  "`valgrind --tool=callgrind`): user-space instructions, which other load on the "
                  "machine does not move. heroku-lb's health checks run per second; at callgrind's "
                  "few hundred requests a second they weigh about ten times what they do at full "
                  "speed, so one column leaves them out. _bare Pingora with timeouts_: the same "
                  "floor with heroku-lb's default upstream timeouts (connect 5 s, read 30 s, idle 55 s; "
                  "`BARE_TIMEOUTS=1`), what Pingora charges any proxy that bounds its upstreams.",
                  ""]
    elif counted:
        lines += ["## Instructions per request under callgrind", "", f"Skipped: {counted['skipped']}.",
                  ""]

    cores = summarize(runs, "cores", key=lambda r: (r["proxy"], r.get("threads")))
    if cores:
        lines += [
            "## Cores: threads 1 vs 2, 3 backends, wrk -t2 -c64, nothing pinned",
            "",
            "| proxy | threads | req/s | p99 | CPU µs/request | proxy CPU | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for (name, threads), v in sorted(cores.items(), key=lambda kv: (
                Bench.CORES_PROXIES.index(kv[0][0]) if kv[0][0] in Bench.CORES_PROXIES else 99,
                kv[0][1] or 0)):
            lines.append(
                f"| {name} | {threads} | {v['rps']:,.0f} | {ms(v['p99_us'])} | {v['cpu_us']:.1f} | "
                f"{100 * v['proxy_cpu_share']:.0f}% | {v['errors']} |")
        lines += ["", "On this 2-core machine the load generator (wrk), the backend nginx and "
                  "heroku-lb's log reader share both cores with the proxy in these runs: a second "
                  "proxy thread competes with them, so req/s shows how much a second thread helps "
                  "here, not on a machine with cores to spare. _proxy CPU_ can reach 200%.", ""]

    logged = [r for r in runs if r.get("access_lines") is not None]
    if logged:
        lost = sum(r["access_lines_lost"] for r in logged)
        lines += [
            "## heroku-lb's access log (shipped default)",
            "",
            f"heroku-lb rows without `RUST_LOG=warn` ran with `RUST_LOG` unset (`info`: one "
            f"request line per request on stdout), stdout a pipe drained by a reader on the load "
            f"CPU. {len(logged)} runs: {sum(r['requests'] for r in logged):,} requests completed, "
            f"{sum(r['access_lines'] for r in logged):,} request lines read "
            f"(requests wrk had in flight when it stopped are logged too), "
            f"**{lost} lines lost**.",
            "",
        ]

    disc = res.get("discovery")
    if disc:
        api = disc["steady_api_requests"]
        init = disc["api_requests_initial"]
        lines += [
            f"## Discovery: a pipeline of {disc['apps']:,} apps (fake Platform API)",
            "",
            f"- heroku-lb start → all {disc['apps']:,} apps in `/_lb/status` (`backends_total`): "
            f"**{disc['seconds_to_all_in_status']:.2f} s** (first status answer at "
            f"{disc['seconds_to_first_status']:.2f} s; all healthy at "
            f"{disc['seconds_to_all_healthy']:.2f} s).",
            f"- API requests until then: {init['total']:,} ({init['couplings']} couplings, "
            f"{init['filters_apps']} `POST /filters/apps`, {init['formation']:,} formation, "
            f"{init['other']} other).",
            f"- Steady state at DISCOVERY_INTERVAL=1: **{disc['steady_api_requests_per_round']:.2f} "
            f"API requests per round** over {disc['steady_rounds']} rounds ({api['total']} requests: "
            f"{api['couplings']} couplings, of which {api['couplings_conditional']} with "
            f"If-None-Match; {api['filters_apps']} filters; {api['formation']} formation; "
            f"{api['other']} other).",
            f"- heroku-lb's CPU while idle with {disc['apps']:,} apps (discovery every 1 s, health "
            f"checks every 5 s): {100 * disc['idle_cpu_share']:.1f}% of a core.",
        ]
        for d_run in (r for r in runs if r["scenario"] == "discovery"):
            lines.append(
                f"- Traffic over the {disc['apps']:,} apps, upstream_keepalive_pool_size "
                f"{d_run['pool']} (wrk -c{d_run['connections']}): {d_run['rps']:,.0f} req/s, "
                f"p99 {ms(d_run['p99_us'])}, **{d_run['cpu_us_per_request']:.1f} CPU µs/request**, "
                f"{d_run['errors']} errors.")
        lines.append("")

    # What heroku-lb did when a client hung up with requests in flight.
    hl = [r for r in runs if r["proxy"].startswith("heroku-lb")]
    ejecting = [r for r in hl if r.get("ejections_in_session")]
    if hl:
        lines += ["## heroku-lb: passive ejections seen", ""]
        if ejecting:
            lines.append(
                f"In {len(ejecting)} of {len(hl)} heroku-lb runs, backends were passively ejected "
                f"({sum(r['ejections_in_session'] for r in ejecting)} ejections in all) although "
                "every backend was up: wrk ends a run by closing its connections with requests in "
                "flight, and heroku-lb counted each such client hang-up (`Downstream "
                "ConnectionClosed ... Prematurely before response header is sent`) as a failure of "
                "the backend serving it, retried the request on the other backends and ejected "
                "them. The measurements are not affected (the ejections happen after wrk's "
                "numbers are taken, and each run starts a fresh process warmed up without "
                "hang-ups), but in production a burst of client disconnects can empty the pool; "
                "answers are then 503 `no backend available` until health checks re-admit the "
                "backends.")
            after = [r for r in hl if r.get("healthy_after_wrk_stopped") is not None]
            if after:
                worst = min(after, key=lambda r: r["healthy_after_wrk_stopped"])
                lines.append("")
                lines.append(
                    f"Worst case: {worst['healthy_after_wrk_stopped']} of {worst['backends_total']} "
                    f"backends healthy 0.5 s after wrk stopped ({worst['proxy']}, "
                    f"{worst['scenario']}).")
        else:
            lines.append("None.")
        lines.append("")

    lines += deploy.report_lines(res)
    lines += mixed.report_lines(res)

    problems = res.get("log_problems")
    if problems:
        lines += ["## Warning and error lines the proxies logged (first of each)", ""]
        for name, ps in problems.items():
            lines.append(f"- {name}: `{ps[0][:220]}`")
        lines.append("")

    with open(os.path.join(out_dir, "latest.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out_dir, "latest.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True, default=str)
    if chart_rows:
        with open(os.path.join(out_dir, "latest.svg"), "w") as f:
            f.write(svg_chart(chart_rows, m, bench.args.connections))


# mimalloc's own defaults, which src/allocator.rs changes when these are unset.
MIMALLOC_DEFAULTS = {"MIMALLOC_ALLOW_THP": "1"}


def svg_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(rows: list[tuple[str, float, float]], machine: dict, connections: int) -> str:
    """Two horizontal bar charts side by side: CPU µs/request and p99 (ms)."""
    label_w, panel_w, bar_h, gap, top = 190, 330, 22, 10, 70
    bar_max = panel_w - 80  # room for the value after the longest bar
    width = label_w + 2 * panel_w
    height = top + len(rows) * (bar_h + gap) + 40
    colors = {"heroku-lb": "#6762a6", "heroku-lb RUST_LOG=warn": "#9d98d6",
              "heroku-lb least_connections": "#4f4a8c", "heroku-lb sticky": "#b8b4e8",
              "heroku-lb mimalloc defaults": "#8a86b8",
              "bare Pingora": "#f38020", "bare Pingora glibc": "#f8b878", "nginx": "#009639",
              "HAProxy": "#1f77b4"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="22" font-size="16" font-weight="bold">heroku-lb benchmark: one worker '
        f'each, 3 backends, {connections} connections</text>',
        f'<text x="10" y="40" fill="#555">{svg_escape(machine["date"])}, {machine["cores"]} cores, '
        f'{svg_escape(machine["cpu_model"])}, kernel {svg_escape(machine["kernel"])}</text>',
    ]
    for panel, (title, index, unit) in enumerate(
            [("CPU µs per request (lower is better)", 1, "µs"), ("p99 latency (ms)", 2, "ms")]):
        x0 = label_w + panel * panel_w
        peak = max(r[index] for r in rows) or 1
        out.append(f'<text x="{x0}" y="{top - 10}" font-weight="bold">{svg_escape(title)}</text>')
        for i, row in enumerate(rows):
            y = top + i * (bar_h + gap)
            w = max(1, bar_max * row[index] / peak)
            color = colors.get(row[0], "#888")
            out.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
            out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 6}">{row[index]:.1f} {unit}</text>'
                       if unit == "µs" else
                       f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 6}">{row[index]:.2f} {unit}</text>')
    for i, row in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{label_w - 8}" y="{y + bar_h - 6}" text-anchor="end">'
                   f'{svg_escape(row[0])}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


# --------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds per measured wrk run (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the throughput scenario (3)")
    p.add_argument("--quick", action="store_true",
                   help="3 s runs, 1 round, 300 apps, 15 s mixed runs, deploy with heroku-lb and "
                        "HAProxy only: a smoke test (explicit flags still win)")
    p.add_argument("--scenario", default="all",
                   help="comma-separated: " + ",".join(SCENARIOS) + " (default all)")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--apps", type=int, default=1000, help="apps in the discovery scenario (1000)")
    p.add_argument("--many", default="200,1000",
                   help="backend counts of the many scenario, beside 3 (200,1000)")
    p.add_argument("--heroku-apps", default="3,100",
                   help="app counts of the heroku scenario (3,100)")
    p.add_argument("--mixed-seconds", type=float, default=30,
                   help="seconds of load of each mixed run (30; --quick: 15)")
    p.add_argument("--quiet-wait", type=float, default=60,
                   help="before each run, wait up to this many seconds for other processes to "
                        "leave the CPUs idle (60)")
    p.add_argument("--noise-retries", type=int, default=2,
                   help="times a run disturbed by other processes is done again (2)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite latest.md and latest.svg from OUT/latest.json, run nothing")
    p.add_argument("--no-build", action="store_true", help="use the binaries already in target/")
    p.add_argument("--keep-work-dir", action="store_true",
                   help="keep the temp dir with every config and log")
    args = p.parse_args()
    given = set(a.split("=")[0] for a in sys.argv[1:])
    if args.quick:
        if "--duration" not in given:
            args.duration = 3
        if "--rounds" not in given:
            args.rounds = 1
        if "--apps" not in given:
            args.apps = 300
        if "--mixed-seconds" not in given:
            args.mixed_seconds = 15
    args.warmup = 1 if args.quick else 2
    args.many = [int(n) for n in str(args.many).split(",") if n.strip()]
    args.heroku_apps = [int(n) for n in str(args.heroku_apps).split(",") if n.strip()]
    scenarios = SCENARIOS if args.scenario == "all" else args.scenario.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            die(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    if args.report_only:
        bench = Bench.__new__(Bench)
        with open(os.path.join(args.out, "latest.json")) as f:
            bench.results = json.load(f)
        saved = bench.results.get("args", {})
        bench.args = argparse.Namespace(**{**vars(args), **{
            k: saved[k] for k in ("duration", "connections", "rounds") if k in saved}})
        write_reports(bench, args.out, bench.results.get("command", "python3 bench/run.py"))
        log(f"rewrote {os.path.join(args.out, 'latest.md')} and latest.svg")
        return 0
    if sys.platform != "linux":
        die("the benchmark reads /proc: Linux only")

    # Hundreds of ports and connections at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ensure_tools()
    bins = build(args.no_build, scenarios)
    bench = Bench(args, bins)
    bench.results["machine"] = machine_info(bins)
    bench.results["args"] = vars(args)
    command = " ".join(["python3 bench/run.py", *sys.argv[1:]])
    bench.results["command"] = command

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    load = open("/proc/loadavg").read().split()[0]
    if float(load) > 0.5:
        log(f"note: load average is {load}: other work on this machine will add noise")
    try:
        if any(s in BACKEND_SCENARIOS for s in scenarios):
            bench.start_backends(max(args.many) if "many" in scenarios else 0)
        for s in SCENARIOS:
            if s in scenarios:
                getattr(bench, s)()
                write_reports(bench, args.out, command)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        Proc.stop_all()
        if not args.keep_work_dir:
            shutil.rmtree(bench.work, ignore_errors=True)
        else:
            log(f"configs and logs kept in {bench.work}")
    log(f"results: {os.path.join(args.out, 'latest.md')} (+ .json, .svg)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
