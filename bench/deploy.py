"""The `deploy` scenario of bench/run.py: deploy day.

Three apps on 127.0.0.1 deploy one after the other while 50 GETs a second
run for 60 s (open loop) through the proxy under test: each app's router
answers 503 at once for 5 s, then its new dynos serve 200 ms slower for 10 s,
then it is normal again. The apps and the load are the tests' own
(`tests/common/deploy_day.rs`), run by `examples/deploy_day.rs`; this module
runs that program once per proxy, each time with fresh apps and a fresh proxy,
and reports per proxy: failed requests (of those sent), p99 and p99.9
latency, and the requests a cold app served. See bench/README.md.
"""

from __future__ import annotations

import json
import os

import configs
import run  # bench/run.py (it makes `import run` find itself when run as a script)

# Every row, in report order: heroku-lb as shipped (slow start 30 s, retries
# of quick 503s, passive ejection) and with slow start off, then the peers.
PROXIES = ["heroku-lb", "heroku-lb, no slow start", "HAProxy", "nginx"]
# --quick: the whole timeline still (it is the point), two proxies only.
QUICK_PROXIES = ["heroku-lb", "HAProxy"]
# The program's run: 60 s of load, then up to its 10 s client timeout for the
# last answers; plenty of slack on a busy machine.
REPORT_TIMEOUT_S = 120


def scenario(bench) -> None:
    kinds = QUICK_PROXIES if bench.args.quick else PROXIES
    out = bench.results["deploy"] = {"runs": [], "skipped": []}
    run.log(f"deploy: 3 apps deploying in turn under 50 GETs/s for 60 s, open loop; "
            f"{', '.join(kinds)}")
    for kind in kinds:
        one_run(bench, kind, out)


def start_proxy(bench, kind: str, d: str, ports: list[int], names: list[str]):
    """Start `kind` over the apps on `ports` (see run.Bench.start_over_apps);
    returns (proc, url, None), or (None, None, why) if it could not start."""

    def conf(port: int) -> str:
        if kind.startswith("heroku-lb"):
            settings = configs.heroku_lb_deploy_settings(slow_start="no slow start" not in kind)
            return configs.heroku_lb_conf(d, port, [f"http://127.0.0.1:{p}" for p in ports],
                                          settings=settings)
        if kind == "HAProxy":
            return configs.haproxy_deploy_conf(port, ports, names)
        return configs.nginx_deploy_conf(d, port, ports)

    proxy = "heroku-lb" if kind.startswith("heroku-lb") else kind
    return bench.start_over_apps(kind, proxy, d, len(ports), configs.DEPLOY_HEALTH_PATH, conf)


def taken_out(kind: str, proc, d: str, url: str | None) -> int | None:
    """How many times the proxy took an app out of rotation during the run,
    as it tells: heroku-lb's status events `down` (checks) and `ejected`
    (live traffic; it keeps the last 20 events, plenty here), HAProxy's
    `... is DOWN` lines, nginx's `upstream server temporarily disabled`
    lines (error.log)."""
    try:
        if kind.startswith("heroku-lb") and url:
            status = json.loads(run.http_get(url + "/_lb/status")[1])
            return sum(1 for e in status.get("events", []) if e.get("kind") in ("down", "ejected"))
        if kind == "HAProxy":
            with open(proc.log_path, errors="replace") as f:
                return sum(1 for line in f if " is DOWN" in line)
        if kind == "nginx":
            with open(os.path.join(d, "error.log"), errors="replace") as f:
                return sum(1 for line in f if "temporarily disabled" in line)
    except (OSError, ValueError):
        pass
    return None


def one_run(bench, kind: str, out: dict) -> None:
    d = bench.path("deploy-" + kind.replace(" ", "_").replace(",", ""))
    apps = run.Proc(f"deploy_day apps ({kind})", [bench.bins["deploy_day"]], cpu=bench.load_cpu,
                    log_path=os.path.join(d, "apps.log"), stdout_pipe=True, stdin_pipe=True)
    try:
        lines = run.JsonLines(apps)
        info = lines.next("the apps' ports", 30)
        proc, url, why = start_proxy(bench, kind, d, info["ports"], info["apps"])
        if proc is None:
            run.log(f"  deploy     {kind:<26} SKIPPED: {why}")
            out["skipped"].append({"proxy": kind, "why": why})
            return
        try:
            quiet = run.wait_for_quiet(bench.args.quiet_wait)
            window = run.cpu_window(proc.pids(), apps.pids())
            apps.popen.stdin.write(f"go {url}\n".encode())
            apps.popen.stdin.flush()
            report = lines.next("the load's report", REPORT_TIMEOUT_S)
            cpu = window()
            if not proc.alive():
                run.die(f"{kind} died during the deploy run; see {proc.log_path}")
            removed = taken_out(kind, proc, d, url)
        finally:
            proc.stop()
    finally:
        apps.stop()
    problems = bench.log_problems(proc)
    r = dict(report, proxy=kind, **cpu, load_before=quiet,
             taken_out=removed, timeline={k: info[k] for k in info if k not in ("ports",)},
             log_problem_lines=len(problems), log_problems=problems[:5])
    out["runs"].append(r)
    failures = ", ".join(f"{n} {k}" for k, n in sorted(r["failures"].items())) or "none"
    run.log(f"  deploy     {kind:<26} failed {r['failed']}/{r['sent']} ({failures})  "
            f"p99 {r['p99_ms']:.0f} ms  p99.9 {r['p999_ms']:.0f} ms  "
            f"served cold {r['served_cold']}  refused at the apps {sum(r['refused_by_app'].values())}"
            f"  taken out {removed if removed is not None else '?'}  "
            f"proxy CPU {cpu['proxy_cpu_s']:.2f} s"
            f"  other load {100 * cpu['other_cpu_share']:.0f}%")


def report_lines(results: dict) -> list[str]:
    """The `## Deploy day` section of latest.md."""
    dep = results.get("deploy")
    if not dep or not (dep["runs"] or dep["skipped"]):
        return []
    lines = [
        "## Deploy day: 3 apps deploying in turn, 50 GETs/s for 60 s (open loop)",
        "",
    ]
    if dep["runs"]:
        t = dep["runs"][0]["timeline"]
        lines += [
            f"Each app in turn (at {', '.join(f'{s:g}' for s in t['deploy_at_s'])} s): its router "
            f"answers 503 at once for {t['refusing_s']:g} s, then it serves "
            f"{t['cold_delay_ms']:g} ms slower (cold) for {t['cold_s']:g} s. Fresh apps and a fresh "
            "proxy per row; the tests' scenario (`tests/common/deploy_day.rs`).",
            "",
            "| proxy | failed / sent | failures | p50 | p99 | p99.9 | served cold (per app) | "
            "503s the apps gave | apps taken out | proxy CPU |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in dep["runs"]:
            failures = ", ".join(f"{n} {k}" for k, n in sorted(r["failures"].items())) or "–"
            cold = " / ".join(str(v) for _, v in sorted(r["served_cold_by_app"].items()))
            removed = "?" if r.get("taken_out") is None else str(r["taken_out"])
            lines.append(
                f"| {r['proxy']} | **{r['failed']}** / {r['sent']} | {failures} | "
                f"{fmt_ms(r['p50_ms'])} | **{fmt_ms(r['p99_ms'])}** | {fmt_ms(r['p999_ms'])} | "
                f"**{r['served_cold']}** ({cold}) | {sum(r['refused_by_app'].values())} | "
                f"{removed} | {r['proxy_cpu_s']:.2f} s |")
        other = [r["other_cpu_share"] for r in dep["runs"]]
        lines += [
            "",
            f"Other load on the machine during the runs: "
            f"{run.span([100 * x for x in other], '{:.0f}')} % of a core.",
            "",
            "_failed_: answers other than 200, and requests with no answer within the client's "
            "10 s. Latencies are of every request sent, failed ones included, from send to the "
            "answer's head. _served cold_: requests the apps served in their cold phase (+200 ms "
            "each), counted by the apps. _503s the apps gave_: requests the refusing routers "
            "answered 503, retried or not. _apps taken out_: heroku-lb's `down` and `ejected` "
            "status events, HAProxy's `is DOWN` lines, nginx's `upstream server temporarily "
            "disabled` lines.",
            "",
        ]
    for s in dep["skipped"]:
        lines.append(f"- {s['proxy']}: skipped, {s['why']}")
    if dep["skipped"]:
        lines.append("")
    return lines


def fmt_ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"
