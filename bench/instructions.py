#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind's callgrind.

The CPU-time figures of bench/run.py move with whatever else the machine is
doing; instruction counts do not. This runs heroku-lb and bare Pingora (the
mimalloc build, heroku-lb's allocator) one after the other under
`valgrind --tool=callgrind` over the same backends, zeroes the counters after
a warm-up, drives wrk for a few seconds, dumps, and reports user-space
instructions per request (kernel work, the same for both, is not counted),
then the functions whose share differs most between the two. heroku-lb runs
twice: as shipped (a request line per request) and with `RUST_LOG=warn`.

    python3 bench/instructions.py                 # 3 backends, 8 s each
    python3 bench/instructions.py --backends 1000 --top 30
    python3 bench/instructions.py --heroku-apps 3,100   # TLS to one router, N apps by SNI and Host

`--heroku-apps N` measures the job heroku-lb does on Heroku instead: every
app behind ONE TLS router address (an nginx on the load side with a test CA,
as in run.py's heroku scenario), picked by SNI and Host; heroku-lb with
`https://app-N.bench.test` backends pinned to 127.0.0.1 and `ca_file`, bare
Pingora in its Heroku mode (one TLS peer per app). One list of app counts
gives one line per count and the ratios at each.

Needs valgrind, wrk and nginx; uses the binaries in target/release (build them
with `cargo build --release --bin heroku-lb --example bare_pingora_mimalloc`).
A proxy runs about 50 times slower under callgrind: requests per second here
mean nothing, only instructions per request do. That slowness inflates one
thing: heroku-lb's health checks (one small HTTPS exchange per app every 5 s
by default) run per second, not per request, so at a few hundred requests a
second they weigh ten times what they do at full speed. Each line says how
many of its instructions were health checks, and the last line gives the
ratio without them beside the ratio with them.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configs  # noqa: E402
import run  # noqa: E402


def exclusive_costs(path: str) -> collections.Counter:
    """Instructions per function (exclusive) from a callgrind dump."""
    names: dict[str, str] = {}
    costs: collections.Counter = collections.Counter()
    function = None
    after_call = False
    with open(path) as f:
        for line in f:
            m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                kind, number, name = m.groups()
                if name:
                    names[number] = name
                if kind == "fn":
                    function = names.get(number, number)
                continue
            if line.startswith("calls="):
                after_call = True  # the next cost line is the callee's, inclusive
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2 and function:
                    if after_call:
                        after_call = False
                        continue
                    costs[function] += int(parts[1])
    return costs


def health_check_cost(path: str) -> int:
    """Instructions the health checks took in a dump (inclusive): background
    work that runs per app and per second, not per request."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          "--auto=no", path], capture_output=True, text=True).stdout
    costs = [int(m.group(1).replace(",", "")) for m in
             re.finditer(r"^\s*([\d,]+) .*HealthRegistry::run_health_check\b", out, re.M)]
    return max(costs, default=0)


def measure(kind: str, binary: str, ports: list[int], work: str, seconds: float,
            connections: int, router: dict | None = None
            ) -> tuple[int, collections.Counter, int]:
    """One proxy under callgrind: requests wrk completed, instructions by
    function, and of those the health checks'. With `router` ({"port", "ca", "hosts"}), the proxy balances the
    router's apps over TLS by SNI and Host instead of the plain `ports`."""
    d = tempfile.mkdtemp(dir=work, prefix=kind.replace(" ", "_") + "-")
    port = run.free_ports(1)[0]
    count = len(router["hosts"]) if router else len(ports)
    pool = 4 * count if count > 16 else 256
    env = {k: v for k, v in os.environ.items() if k not in run.HEROKU_LB_VARS}
    env.pop("RUST_LOG", None)
    if kind.startswith("heroku-lb"):
        if kind.endswith("RUST_LOG=warn"):
            env["RUST_LOG"] = "warn"
        conf = os.path.join(d, "heroku-lb.yaml")
        with open(conf, "w") as f:
            if router:
                f.write(configs.heroku_lb_conf(
                    d, port, [f"https://{h}:{router['port']}" for h in router["hosts"]],
                    upstream_keepalive_pool_size=pool, ca_file=router["ca"],
                    resolve={h: "127.0.0.1" for h in router["hosts"]}))
            else:
                f.write(configs.heroku_lb_conf(d, port, [f"http://127.0.0.1:{p}" for p in ports],
                                               upstream_keepalive_pool_size=pool))
        argv = [binary, "-c", conf]
    else:
        env.update(PORT=str(port), BARE_POOL_SIZE=str(pool))
        if kind.endswith("with timeouts"):
            env["BARE_TIMEOUTS"] = "1"
        if router:
            env.update(BARE_APPS=",".join(router["hosts"]),
                       BARE_ROUTER=f"127.0.0.1:{router['port']}", BARE_CA_FILE=router["ca"])
        else:
            env.update(BARE_BACKENDS=",".join(f"127.0.0.1:{p}" for p in ports))
        argv = [binary]
    out = os.path.join(d, "callgrind.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + argv,
        stdout=open(os.path.join(d, "stdout.log"), "w"),
        stderr=open(os.path.join(d, "stderr.log"), "w"), env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        run.wait_until(f"{kind} under callgrind", lambda: run.http_get(url, 5)[0] == 200, 180)
        # Every app's connection made (TLS handshakes are not the steady state).
        run.warm_up(url, 3 if count <= 16 else 10)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=False)
        result = run.Wrk(d, None).run(url, connections, seconds)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=False)
        dumps: list[str] = []
        for _ in range(100):
            dumps = sorted(glob.glob(f"{out}.{proc.pid}.*"))
            if dumps:
                break
            time.sleep(0.1)
        if not dumps:
            run.die(f"no callgrind dump from {kind}; see {d}")
        time.sleep(0.5)  # the dump is written in one go; let it finish
        return result["requests"], exclusive_costs(dumps[-1]), health_check_cost(dumps[-1])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def report(per_request: dict, top: int, label: str) -> None:
    """The totals, the ratios and the functions that differ most."""
    ours, floor = per_request["heroku-lb"], per_request["bare Pingora"]
    quiet = per_request["heroku-lb RUST_LOG=warn"]
    total = {kind: sum(costs.values()) for kind, costs in per_request.items()}
    print(f"{label}heroku-lb / bare Pingora: {total['heroku-lb'] / total['bare Pingora']:.2f}x; "
          f"RUST_LOG=warn / bare Pingora: "
          f"{total['heroku-lb RUST_LOG=warn'] / total['bare Pingora']:.2f}x; "
          f"a request line: {total['heroku-lb'] - sum(quiet.values()):.0f} instructions")
    print("\nfunctions by difference (instructions/request: bare Pingora -> heroku-lb):")
    diff = {name: ours.get(name, 0) - floor.get(name, 0) for name in set(ours) | set(floor)}
    for name, delta in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
        print(f"{delta:+8.0f}  {floor.get(name, 0):8.0f} -> {ours.get(name, 0):8.0f}  {name[:110]}")


def start_router(work: str, apps: int) -> tuple[subprocess.Popen, dict]:
    """run.py's TLS router (one nginx worker) for `apps` apps, with its CA."""
    d = os.path.join(work, "router")
    os.makedirs(d, exist_ok=True)
    certs = configs.test_certificates(os.path.join(d, "certs"))
    tls_port, status_port = run.free_ports(2)
    hosts = configs.app_hosts(apps)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(configs.nginx_router_conf(d, tls_port, status_port, hosts,
                                          certs["cert"], certs["key"]))
    proc = subprocess.Popen(["nginx", "-e", "stderr", "-c", conf, "-p", d],
                            start_new_session=True, stderr=subprocess.DEVNULL)
    run.wait_until("the router", lambda: run.https_get(tls_port, hosts[0], certs["ca"])[0] == 200,
                   15)
    return proc, {"port": tls_port, "ca": certs["ca"], "hosts": hosts}


def heroku_shape(counts: list[int], binaries: dict, work: str, seconds: float,
                 connections: int, top: int) -> list[dict]:
    """The Heroku shape at each app count: prints as it goes and returns, per
    count, instructions per request of each binary and of heroku-lb's health
    checks (run.py's `instructions` scenario stores them)."""
    results = []
    for apps in counts:
        router, shape = start_router(os.path.join(work, f"apps-{apps}"), apps)
        try:
            per_request = {}
            checks = {}
            for kind, path in binaries.items():
                requests, costs, health = measure(kind, path, [], work, seconds,
                                                  connections, shape)
                per_request[kind] = {name: cost / requests for name, cost in costs.items()}
                checks[kind] = health / requests
                print(f"{apps:4d} apps  {kind:<24} {requests:6d} requests  "
                      f"{sum(per_request[kind].values()):9.0f} instructions/request"
                      + (f" (health checks {checks[kind]:.0f} of them, "
                         f"{health / seconds / 1e6:.1f} M/s)" if health else ""),
                      flush=True)
            report(per_request, top, f"{apps} apps (TLS router): ")
            totals = {k: sum(v.values()) for k, v in per_request.items()}
            results.append({"apps": apps, "per_request": totals,
                            "health_checks": checks["heroku-lb"],
                            "health_checks_quiet": checks["heroku-lb RUST_LOG=warn"]})
            print()
        finally:
            os.killpg(router.pid, signal.SIGTERM)
    print("; ".join(ratio_line(r) for r in results))
    for r in results:
        t = r["per_request"]
        if "bare Pingora with timeouts" in t:
            print(f"{r['apps']} apps: heroku-lb / bare Pingora with heroku-lb's timeouts "
                  f"{t['heroku-lb'] / t['bare Pingora with timeouts']:.2f}x; the timeouts cost "
                  f"bare Pingora {t['bare Pingora with timeouts'] - t['bare Pingora']:,.0f} "
                  "instructions a request")
    return results


def ratio_line(r: dict) -> str:
    """`3 apps: heroku-lb / bare Pingora 1.20x (...)` for one count."""
    t = r["per_request"]
    bare = t["bare Pingora"]
    return (f"{r['apps']} apps: heroku-lb / bare Pingora {t['heroku-lb'] / bare:.2f}x "
            f"(RUST_LOG=warn {t['heroku-lb RUST_LOG=warn'] / bare:.2f}x, without health checks "
            f"{(t['heroku-lb'] - r['health_checks']) / bare:.2f}x)")


def binaries_in(target: str) -> dict:
    """heroku-lb as shipped (RUST_LOG unset: a request line per request, to a
    file here), without request lines, and the floor."""
    binaries = {
        "heroku-lb": os.path.join(target, "release", "heroku-lb"),
        "heroku-lb RUST_LOG=warn": os.path.join(target, "release", "heroku-lb"),
        "bare Pingora": os.path.join(target, "release", "examples", "bare_pingora_mimalloc"),
    }
    for path in binaries.values():
        if not os.path.exists(path):
            run.die(f"{path} is missing: cargo build --release --bin heroku-lb "
                    "--example bare_pingora_mimalloc")
    return binaries


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--top", type=int, default=20, help="functions to list (20)")
    p.add_argument("--heroku-apps", default=None,
                   help="comma-separated app counts: TLS to one router, apps by SNI and Host")
    p.add_argument("--floor-with-timeouts", action="store_true",
                   help="with --heroku-apps: also bare Pingora with heroku-lb's upstream timeouts")
    args = p.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(run.REPO, "target"))
    binaries = binaries_in(target)
    if args.floor_with_timeouts:
        binaries["bare Pingora with timeouts"] = binaries["bare Pingora"]
    work = tempfile.mkdtemp(prefix="heroku-lb-instructions-")
    if args.heroku_apps:
        heroku_shape([int(n) for n in args.heroku_apps.split(",")], binaries, work,
                     args.seconds, args.connections, args.top)
        return 0
    ports = run.free_ports(args.backends)
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(configs.nginx_backends_conf(work, ports))
    backends = subprocess.Popen(["nginx", "-e", "stderr", "-c", os.path.join(work, "nginx.conf"),
                                 "-p", work], start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        run.wait_until("backends", lambda: run.http_get(f"http://127.0.0.1:{ports[0]}/")[0] == 200,
                       15)
        per_request = {}
        for kind, path in binaries.items():
            requests, costs, _ = measure(kind, path, ports, work, args.seconds,
                                         args.connections)
            per_request[kind] = {name: cost / requests for name, cost in costs.items()}
            total = sum(per_request[kind].values())
            print(f"{kind:<24} {requests:6d} requests  {total:9.0f} instructions/request",
                  flush=True)
        report(per_request, args.top, "")
    finally:
        os.killpg(backends.pid, signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
