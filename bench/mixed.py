"""The `mixed` scenario of bench/run.py: balancing that sees load.

Three apps with a fixed number of workers each (8, 8 and 4: the third is
half the size), every request holding a worker for its cost, heavy-tailed
(90 % 10 ms, 10 % 200 ms, the same seeded sequence for every proxy), under
an open-loop load at 70 % and at 110 % of the apps' total capacity
(workers ÷ mean cost ≈ 690 requests a second). The apps and the load
generator are `examples/mixed_load.rs`; this module runs it once per proxy
and load, each time with fresh apps and a fresh proxy, and reports p50,
p99, p99.9, errors and each app's share. See bench/README.md.
"""

from __future__ import annotations

import os
import resource

import configs
import run  # bench/run.py (it makes `import run` find itself when run as a script)

WORKERS = [8, 8, 4]
SEED = 1
# Offered load, as shares of the apps' total capacity.
LOADS = [0.7, 1.1]
# heroku-lb's in-flight cap per dyno in the queue rows. Static mode has one
# cap for every backend (max_in_flight_per_dyno × weight, and each backend
# here weighs one dyno), not one per app: 4, the small app's workers, would
# hold the big apps at half their workers; 8 lets the small app take up to
# 4 more than it can serve, which then wait in the app itself.
HEROKU_LB_CAP = 8

# (label, proxy, heroku-lb policy, in-flight cap and queue?)
ROWS = [
    (f"heroku-lb {policy}{' + queue' if queue else ''}", "heroku-lb", policy, queue)
    for policy in ("round_robin", "least_connections", "peak_ewma")
    for queue in (False, True)
] + [
    ("HAProxy leastconn + queue", "HAProxy", None, True),
    ("nginx least_conn", "nginx", None, False),
]
LABELS = [row[0] for row in ROWS]


def scenario(bench) -> None:
    seconds = bench.args.mixed_seconds
    out = bench.results["mixed"] = {"seconds": seconds, "loads": LOADS, "workers": WORKERS,
                                    "heroku_lb_cap": HEROKU_LB_CAP, "runs": [], "skipped": []}
    run.log(f"mixed: 3 apps with {'/'.join(map(str, WORKERS))} workers, heavy-tailed costs, "
            f"open loop at {' and '.join(f'{100 * x:.0f}%' for x in LOADS)} of capacity, "
            f"{seconds:g} s per run")
    skipped: dict[str, str] = {}
    for load in LOADS:
        for label, proxy, policy, queue in ROWS:
            if label in skipped:
                continue
            why = one_run(bench, out, load, label, proxy, policy, queue)
            if why:
                skipped[label] = why
                out["skipped"].append({"proxy": label, "why": why})


def start_proxy(bench, d: str, label: str, proxy: str, policy: str | None, queue: bool,
                ports: list[int], names: list[str]):
    """Start one row's proxy over the apps (see run.Bench.start_over_apps);
    returns (proc, url, None), or (None, None, why)."""

    def conf(port: int) -> str:
        if proxy == "heroku-lb":
            settings = configs.heroku_lb_mixed_settings(policy, HEROKU_LB_CAP if queue else None)
            return configs.heroku_lb_conf(d, port, [f"http://127.0.0.1:{p}" for p in ports],
                                          settings=settings)
        if proxy == "HAProxy":
            # As many client connections as the file descriptor limit allows
            # (two each), up to 8,000: the 110 % runs keep up to ~4,000
            # requests in flight (5 s of queue at ~760 a second).
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            maxconn = 8000 if limit == resource.RLIM_INFINITY else min(8000, (limit - 256) // 2)
            return configs.haproxy_mixed_conf(port, ports, WORKERS, names, maxconn=maxconn)
        return configs.nginx_mixed_conf(d, port, ports)

    return bench.start_over_apps(label, proxy, d, len(ports), "/health", conf)


def one_run(bench, out: dict, load: float, label: str, proxy: str, policy: str | None,
            queue: bool) -> str | None:
    """One row at one load; returns why it was skipped, or None."""
    seconds = bench.args.mixed_seconds
    d = bench.path(f"mixed-{int(100 * load)}-" + label.replace(" ", "_").replace("+", "q"))
    apps = run.Proc(f"mixed_load apps ({label})",
                    [bench.bins["mixed_load"], "--workers", ",".join(map(str, WORKERS)),
                     "--seed", str(SEED)],
                    cpu=bench.load_cpu, log_path=os.path.join(d, "apps.log"),
                    stdout_pipe=True, stdin_pipe=True)
    try:
        lines = run.JsonLines(apps)
        info = lines.next("the apps' ports", 30)
        out["apps"] = {k: info[k] for k in info if k != "ports"}
        rate = round(load * info["capacity_rps"], 1)
        proc, url, why = start_proxy(bench, d, label, proxy, policy, queue, info["ports"],
                                     info["apps"])
        if proc is None:
            run.log(f"  mixed      {label:<34} SKIPPED: {why}")
            return why
        try:
            quiet = run.wait_for_quiet(bench.args.quiet_wait)
            window = run.cpu_window(proc.pids(), apps.pids())
            apps.popen.stdin.write(f"go {url} {rate} {seconds:g}\n".encode())
            apps.popen.stdin.flush()
            # The load, then up to the 30 s client timeout for the last answers.
            report = lines.next("the load's report", seconds + info["client_timeout_s"] + 60)
            cpu = window()
            if not proc.alive():
                run.die(f"{label} died during the mixed run; see {proc.log_path}")
        finally:
            proc.stop()
    finally:
        apps.stop()
    problems = bench.log_problems(proc)
    r = dict(report, proxy=label, load=load, **cpu,
             load_before=quiet, ejections=sum(1 for p in problems if "-> ejected" in p),
             log_problem_lines=len(problems), log_problems=problems[:5])
    out["runs"].append(r)
    lat = r["latency_ms"]
    run.log(f"  mixed {100 * load:3.0f}% {label:<34} p50 {lat['p50']:7.0f} ms  p99 "
            f"{lat['p99']:7.0f} ms  p99.9 {lat['p999']:7.0f} ms  errors {r['errors_total']}/"
            f"{r['sent']} {errors_text(r)}  shares {shares_text(r)}  capacity measured "
            f"{measured_capacity(r) or 0:.0f}/s  proxy CPU {cpu['proxy_cpu_s']:.1f} s"
            f"  other load {100 * cpu['other_cpu_share']:.0f}%")
    return None


def measured_capacity(r: dict) -> float | None:
    """Workers ÷ the mean time the requests of a run held a worker, as the
    apps measured it (a sleep of 10 ms holds a worker a little longer)."""
    served = sum(a["served"] for a in r["apps"])
    if not served:
        return None
    held_ms = sum(a["served"] * a["mean_service_ms"] for a in r["apps"]) / served
    return sum(a["workers"] for a in r["apps"]) * 1000 / held_ms if held_ms else None


def errors_text(r: dict) -> str:
    parts = [f"{n} {k}" for k, n in sorted(r["errors"].items())]
    if r.get("retry_after_503"):
        parts.append(f"{r['retry_after_503']} of the 503s with Retry-After")
    return "(" + ", ".join(parts) + ")" if parts else ""


def shares_text(r: dict) -> str:
    ok = r["ok"] or 1
    return " / ".join(f"{100 * r['ok_by_app'].get(a['name'], 0) / ok:.0f}%" for a in r["apps"])


def report_lines(results: dict) -> list[str]:
    """The `## Mixed load` section of latest.md."""
    mix = results.get("mixed")
    if not mix or not (mix["runs"] or mix["skipped"]):
        return []
    apps = mix.get("apps", {})
    workers = mix["workers"]
    fair = " / ".join(f"{100 * w / sum(workers):.0f}%" for w in workers)
    lines = [
        f"## Mixed load: apps with {' / '.join(map(str, workers))} workers, heavy-tailed costs, "
        "open loop",
        "",
    ]
    if apps:
        lines += [
            f"Each request holds one of its app's workers for its cost: {100 - apps['long_percent']}"
            f" % {apps['short_ms']} ms, {apps['long_percent']} % {apps['long_ms']} ms (mean "
            f"{apps['mean_cost_ms']:g} ms; seeded, the same sequence for every proxy), waiting "
            f"first come first served for a free worker. Capacity {sum(workers)} workers ÷ "
            f"{apps['mean_cost_ms']:g} ms = **{apps['capacity_rps']:.0f} requests/s**. "
            f"{mix['seconds']:g} s per run, a request every 1/rate s whatever the answers, client "
            f"timeout {apps['client_timeout_s']:g} s. Fresh apps and a fresh proxy per row. "
            f"Shares in proportion to the workers would be {fair}.",
            "",
        ]
    for load in mix["loads"]:
        runs = [r for r in mix["runs"] if r["load"] == load]
        if not runs:
            continue
        runs.sort(key=lambda r: LABELS.index(r["proxy"]) if r["proxy"] in LABELS else 99)
        rate = runs[0]["rate"]
        measured = [c for c in map(measured_capacity, runs) if c]
        other = [r["other_cpu_share"] for r in runs]
        lines += [
            f"### {100 * load:.0f} % of capacity: {rate:,.0f} requests/s",
            "",
            f"The apps' measured capacity in these runs (workers ÷ mean time a request held a "
            f"worker, timer lateness on the load CPU included): {run.span(measured, '{:,.0f}')} "
            f"requests/s. Other load on the machine: "
            f"{run.span([100 * x for x in other], '{:.0f}')} % of a core.",
            "",
            "| proxy | p50 | p99 | p99.9 | errors / sent | 503 (with Retry-After) | timeouts | "
            "share of 200s, app-1 / app-2 / app-3 | mean wait for a worker in the apps | "
            "proxy CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
        ]
        for r in runs:
            lat = r["latency_ms"]
            s503 = r["errors"].get("status 503", 0)
            waits = " / ".join(f"{a['mean_wait_ms']:.0f}" for a in r["apps"]) + " ms"
            lines.append(
                f"| {r['proxy']} | {fmt_ms(lat['p50'])} | **{fmt_ms(lat['p99'])}** | "
                f"{fmt_ms(lat['p999'])} | **{r['errors_total']}** / {r['sent']} | "
                f"{s503} ({r['retry_after_503']}) | {r['errors'].get('timeout', 0)} | "
                f"{shares_text(r)} | {waits} | {r['proxy_cpu_s']:.1f} s |")
        lines.append("")
    lines += [
        "Latency is of every request sent, errors included (a timeout counts its 30 s), from the "
        "time it was due on the schedule to the end of its answer. _errors_: answers other than "
        "200 and requests with no answer. _+ queue_: heroku-lb with at most "
        f"{mix['heroku_lb_cap']} requests in flight per app (`max_in_flight_per_dyno`; one cap "
        "for all three apps, see bench/README.md) and the rest queued up to "
        f"{configs.MIXED_QUEUE_TIMEOUT_SECONDS} s (`queue_timeout_seconds`, `queue_max` "
        f"{configs.MIXED_QUEUE_MAX}); HAProxy with `maxconn` = the app's workers per server and "
        f"`timeout queue {configs.MIXED_QUEUE_TIMEOUT_SECONDS}s`. _mean wait for a worker_: "
        "what the apps measured, so a proxy that queues in front of full apps shows short waits "
        "here and its own queueing in the latency.",
        "",
    ]
    for s in mix["skipped"]:
        lines.append(f"- {s['proxy']}: skipped, {s['why']}")
    if mix["skipped"]:
        lines.append("")
    return lines


def fmt_ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"
