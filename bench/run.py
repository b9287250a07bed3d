"""energyhubd benchmark: how much do we cost on top of the libraries we build on?

Every figure is printed next to a baseline measured in the same run, on the same machine, so
the ratio means something even when the absolute numbers move between machines:

1. full policy apply (compile + ``kernel.apply.apply_policy``) vs the bare libnftables
   transaction of the same table;
2. no-op apply (kernel already matches) vs the full apply;
3. ``energyhubd run`` start-up until the control socket reports "applied" vs a bare Python
   that only imports the libraries; steady RSS vs that bare Python's RSS; idle wake-ups.

Run as root: ``.venv/bin/python bench/run.py [--json]`` (``make bench``). All kernel work
happens in network namespaces this script creates (``ehB<random>...``) and removes again,
also on failure. No assertions: this reports, it does not judge.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from energyhub_lab import netns
from energyhubd.control.client import ControlError, call

HERE = Path(__file__).resolve()
PYTHON = sys.executable
BARE_IMPORTS = "import nftables, pyroute2, paho.mqtt.client, json"


# -- small helpers ------------------------------------------------------------------------
def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def proc_status(pid: int) -> dict[str, str]:
    result: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            result[key] = value.strip()
    return result


def rss_kib(pid: int) -> int:
    return int(proc_status(pid)["VmRSS"].split()[0])


def voluntary_switches(pid: int) -> dict[int, int]:
    """Per thread: /proc/PID/status alone counts only the main thread."""
    counts: dict[int, int] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, KeyError):
            counts[int(task)] = int(proc_status(int(task))["voluntary_ctxt_switches"])
    return counts


def environment() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "interpreter": PYTHON,
        "pyroute2": version("pyroute2"),
        "paho-mqtt": version("paho-mqtt"),
        "libnftables": nft.stdout.strip().removeprefix("nftables "),
    }


@contextlib.contextmanager
def namespace(name: str, wan: bool = False) -> Iterator[str]:
    """A fresh namespace with an empty ``br-lan`` (and a ``wan`` veth); always removed."""
    try:
        netns.add_namespace(name)
        netns.bridge(name, "br-lan", [])
        if wan:
            netns.veth(name, "wan-peer", name, "wan")
        yield name
    finally:
        netns.delete_namespace(name)


# -- 1 + 2: apply, measured by a worker running inside the namespace ------------------------
def worker_apply(reps: int) -> dict[str, Any]:
    """Runs under ``ip netns exec``: both contestants get a real write into an empty table."""
    import nftables

    from energyhubd.config.load import parse_document
    from energyhubd.kernel.apply import apply_policy
    from energyhubd.kernel.netlink import Netlink
    from energyhubd.kernel.table import Table
    from energyhubd.policy import nft

    config = parse_document({}, "built-in defaults")
    table, netlink = Table(), Netlink()
    bare = nftables.Nftables()
    ruleset = nft.compile_ruleset(config)
    kernel_calls = [0]
    real_cmd = table._nft.cmd

    def counting_cmd(text: str) -> Any:
        kernel_calls[0] += 1
        return real_cmd(text)

    # Only counts libnftables calls per apply; the binding's json_cmd goes through cmd too.
    table._nft.cmd = counting_cmd

    def apply() -> Any:
        return apply_policy(config, nft.compile_ruleset(config), table, netlink)

    def bare_write() -> None:
        rc, _out, err = bare.json_cmd(nft.replace_transaction(ruleset))
        if rc != 0:
            raise RuntimeError(f"libnftables refused the ruleset: {err.strip()}")

    def timed(func: Any) -> float:
        started = time.perf_counter()
        func()
        return time.perf_counter() - started

    samples: dict[str, list[float]] = {
        "full": [],
        "bare": [],
        "noop": [],
        "part_list": [],
        "part_dry_run": [],
        "part_dry_run_trivial": [],
    }
    # One untimed round each: imports, caches and the address on br-lan settle first.
    apply()
    table.delete()
    bare_write()
    for _ in range(reps):  # interleaved, so drift on the machine hits both alike
        table.delete()
        samples["bare"].append(timed(bare_write))
        table.delete()
        samples["full"].append(timed(apply))
    kernel_calls[0] = 0
    for _ in range(reps):
        samples["noop"].append(timed(apply))
    noop_calls = kernel_calls[0] / reps
    table.delete()
    bare.set_dry_run(True)
    for _ in range(reps):  # where the time would go, table absent: a listing, a dry run
        samples["part_list"].append(timed(table.current))
        samples["part_dry_run"].append(
            timed(lambda: bare.json_cmd(nft.replace_transaction(ruleset)))
        )
    trivial = {"nftables": [{"add": {"table": {"family": nft.FAMILY, "name": "ehbench"}}}]}
    for _ in range(reps):  # the fixed kernel cost of any dry run, whatever the ruleset
        samples["part_dry_run_trivial"].append(timed(lambda: bare.json_cmd(trivial)))
    bare.set_dry_run(False)
    kernel_calls[0] = 0
    outcome = apply()
    return {
        "samples": samples,
        "rules": len(ruleset["nftables"]),
        "changed": outcome.changed,
        "kernel_calls_per_full_apply": kernel_calls[0],
        "kernel_calls_per_noop_apply": noop_calls,
    }


def bench_apply(ns: str, reps: int) -> dict[str, Any]:
    proc = subprocess.run(
        netns.ns_cmd(ns, [PYTHON, str(HERE), "--worker-apply", "--reps", str(reps)]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"apply worker failed:\n{proc.stderr.strip()}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


# -- 3: start-up, RSS, wake-ups ----------------------------------------------------------
def bare_python(ns: str) -> tuple[float, int]:
    """Seconds from spawn to exit, and RSS, of a Python that only imports the libraries."""
    code = f"{BARE_IMPORTS}\nprint(open('/proc/self/status').read())"
    started = time.perf_counter()
    out = netns.ns_run(ns, [PYTHON, "-c", code])
    seconds = time.perf_counter() - started
    for line in out.splitlines():
        if line.startswith("VmRSS:"):
            return seconds, int(line.split()[1])
    raise RuntimeError("bare python printed no VmRSS")


def write_config(directory: Path) -> Path:
    path = directory / "config.json"
    document = {
        "platform": "linux",
        "state_dir": str(directory / "state"),
        "control": {"socket": str(directory / "control.sock")},
        "dns": {"fallback": []},
        # No broker in this namespace; bench/portal.py measures the link on a lab site.
        "portal": {"enabled": False},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def start_daemon(ns: str, directory: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Spawn ``energyhubd run``; seconds until ``status`` says the policy is applied."""
    config = write_config(directory)
    sock = str(directory / "control.sock")
    cmd = [PYTHON, "-m", "energyhubd.cli", "run", "--config", str(config)]
    cmd += ["--pid-file", str(directory / "energyhubd.pid")]
    started = time.perf_counter()
    proc = netns.spawn_logged(ns, cmd, directory / "energyhubd.log")
    deadline = started + 20
    while time.perf_counter() < deadline:
        with contextlib.suppress(ControlError):
            if call(sock, "status", timeout=2).get("policy", {}).get("state") == "applied":
                return proc, time.perf_counter() - started
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    log_text = (directory / "energyhubd.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"energyhubd did not report an applied policy:\n{log_text}")


def daemon_pid(proc: subprocess.Popen[bytes], directory: Path) -> int:
    """``ip netns exec`` execs the command, so this is the daemon itself; the pid file says so."""
    with contextlib.suppress(OSError, ValueError):
        return int((directory / "energyhubd.pid").read_text().strip())
    return proc.pid


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def bench_daemon(prefix: str, starts: int, settle: float, idle: float) -> dict[str, Any]:
    startup: list[float] = []
    result: dict[str, Any] = {}
    for index in range(starts):
        last = index == starts - 1
        directory = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        try:
            with namespace(f"{prefix}-d{index}", wan=True) as ns:
                proc, seconds = start_daemon(ns, directory)
                try:
                    startup.append(seconds)
                    if last:
                        pid = daemon_pid(proc, directory)
                        time.sleep(settle)
                        result["rss_kib"] = rss_kib(pid)
                        result["threads"] = len(os.listdir(f"/proc/{pid}/task"))
                        before = voluntary_switches(pid)
                        time.sleep(idle)
                        after = voluntary_switches(pid)
                        woken = {t: n - before.get(t, 0) for t, n in after.items()}
                        result["idle_seconds"] = idle
                        result["idle_switches"] = sum(woken.values())
                        result["idle_switches_main"] = woken.get(pid, 0)
                        result["dnsmasq_rss_kib"] = dnsmasq_rss(directory)
                finally:
                    stop_daemon(proc)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    result["startup"] = startup
    return result


def dnsmasq_rss(directory: Path) -> int | None:
    """The dnsmasq the daemon runs on linux is a separate process; shown for completeness."""
    with contextlib.suppress(ControlError, KeyError, TypeError, OSError, ValueError):
        status = call(str(directory / "control.sock"), "status", timeout=2)
        pid = status["lan"]["dhcp"]["server"]["pid"]
        return rss_kib(int(pid))
    return None


# -- report ------------------------------------------------------------------------------
def summarise(
    apply: dict[str, Any], daemon: dict[str, Any], bare: list[tuple[float, int]]
) -> dict[str, Any]:
    s = apply["samples"]
    full, bare_tx, noop = median(s["full"]), median(s["bare"]), median(s["noop"])
    bare_start = median([b[0] for b in bare])
    bare_rss = int(median([float(b[1]) for b in bare]))
    start = median(daemon["startup"])
    per_minute = daemon["idle_switches"] * 60.0 / daemon["idle_seconds"]
    ms = 1000.0
    return {
        "apply": {
            "reps": len(s["full"]),
            "ruleset_objects": apply["rules"],
            "full_ms": {"median": full * ms, "p90": p90(s["full"]) * ms},
            "bare_ms": {"median": bare_tx * ms, "p90": p90(s["bare"]) * ms},
            "ratio_full_vs_bare": full / bare_tx,
            "noop_ms": {"median": noop * ms, "p90": p90(s["noop"]) * ms},
            "ratio_noop_vs_full": noop / full,
            "part_list_ms": median(s["part_list"]) * ms,
            "part_dry_run_ms": median(s["part_dry_run"]) * ms,
            "part_dry_run_one_table_ms": median(s["part_dry_run_trivial"]) * ms,
            "kernel_calls_per_full_apply": apply["kernel_calls_per_full_apply"],
            "kernel_calls_per_noop_apply": apply["kernel_calls_per_noop_apply"],
        },
        "daemon": {
            "starts": len(daemon["startup"]),
            "startup_ms": {
                "median": start * ms,
                "min": min(daemon["startup"]) * ms,
                "max": max(daemon["startup"]) * ms,
            },
            "bare_python_ms": bare_start * ms,
            "ratio_startup_vs_bare": start / bare_start,
            "rss_kib": daemon["rss_kib"],
            "bare_rss_kib": bare_rss,
            "ratio_rss_vs_bare": daemon["rss_kib"] / bare_rss,
            "threads": daemon["threads"],
            "dnsmasq_rss_kib": daemon["dnsmasq_rss_kib"],
            "idle_seconds": daemon["idle_seconds"],
            "idle_voluntary_switches": daemon["idle_switches"],
            "idle_voluntary_switches_main_thread": daemon["idle_switches_main"],
            "idle_wakeups_per_minute": per_minute,
        },
    }


def render(env: dict[str, Any], r: dict[str, Any]) -> str:
    a, d = r["apply"], r["daemon"]
    rows: list[tuple[str, str, str, str]] = [
        ("measure", "energyhubd", "baseline", "ratio"),
        (
            f"full apply, median ({a['reps']} reps)",
            f"{a['full_ms']['median']:.2f} ms",
            f"{a['bare_ms']['median']:.2f} ms bare libnftables",
            f"{a['ratio_full_vs_bare']:.2f}x",
        ),
        (
            "full apply, p90",
            f"{a['full_ms']['p90']:.2f} ms",
            f"{a['bare_ms']['p90']:.2f} ms bare libnftables",
            f"{a['full_ms']['p90'] / a['bare_ms']['p90']:.2f}x",
        ),
        (
            "no-op apply, median",
            f"{a['noop_ms']['median']:.2f} ms",
            f"{a['full_ms']['median']:.2f} ms full apply",
            f"{a['ratio_noop_vs_full']:.2f}x",
        ),
        (
            f"start-up to 'applied', median ({d['starts']})",
            f"{d['startup_ms']['median']:.0f} ms",
            f"{d['bare_python_ms']:.0f} ms bare python+imports",
            f"{d['ratio_startup_vs_bare']:.2f}x",
        ),
        (
            "steady RSS",
            f"{d['rss_kib'] / 1024:.1f} MiB",
            f"{d['bare_rss_kib'] / 1024:.1f} MiB bare python+imports",
            f"{d['ratio_rss_vs_bare']:.2f}x",
        ),
        (
            "idle wake-ups (voluntary ctx sw)",
            f"{d['idle_wakeups_per_minute']:.1f} /min",
            f"over {d['idle_seconds']:.0f} s, {d['threads']} threads",
            "",
        ),
        (
            "  of which main (event loop) thread",
            f"{d['idle_voluntary_switches_main_thread'] * 60.0 / d['idle_seconds']:.1f} /min",
            "",
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"energyhubd bench: {env['nproc']} CPUs, kernel {env['kernel']}, Python {env['python']}, "
        f"pyroute2 {env['pyroute2']}, paho-mqtt {env['paho-mqtt']}, "
        f"libnftables {env['libnftables']}",
        "",
    ]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [
        "",
        f"full apply = compile + {a['kernel_calls_per_full_apply']} libnftables calls (list, "
        f"write, list) + address check + sysctl ({a['ruleset_objects']} ruleset objects); "
        f"no-op apply: {a['kernel_calls_per_noop_apply']:g} libnftables calls; medians, table "
        f"absent: list {a['part_list_ms']:.2f} ms, a dry run (no longer paid) "
        f"{a['part_dry_run_ms']:.2f} ms (of a bare 'add table': "
        f"{a['part_dry_run_one_table_ms']:.2f} ms)",
        f"full apply p90 {a['full_ms']['p90']:.2f} ms, no-op p90 {a['noop_ms']['p90']:.2f} ms; "
        f"start-up min/max {d['startup_ms']['min']:.0f}/{d['startup_ms']['max']:.0f} ms",
    ]
    if d["dnsmasq_rss_kib"] is not None:
        lines.append(f"the daemon's dnsmasq (separate process): {d['dnsmasq_rss_kib']} KiB RSS")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--reps", type=int, default=30, help="apply repetitions (30)")
    parser.add_argument("--starts", type=int, default=5, help="daemon start-ups (5)")
    parser.add_argument("--settle", type=float, default=8.0, help="idle before RSS, s (8)")
    parser.add_argument("--idle", type=float, default=10.0, help="wake-up window, s (10)")
    parser.add_argument("--worker-apply", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_apply:
        print(json.dumps(worker_apply(args.reps)))
        return 0
    if os.geteuid() != 0:
        print("bench/run.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    # SIGTERM must unwind through the finally blocks that remove the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    prefix = f"ehB{secrets.token_hex(3)}"
    env = environment()
    progress = (lambda m: print(m, file=sys.stderr)) if not args.json else (lambda m: None)
    started = time.monotonic()
    with namespace(f"{prefix}-a") as ns:
        progress(f"apply: {args.reps} full + {args.reps} bare + {args.reps} no-op in {ns}")
        apply = bench_apply(ns, args.reps)
        progress("bare python baseline")
        bare = [bare_python(ns) for _ in range(args.starts)]
    progress(f"daemon: {args.starts} start-ups, then {args.settle + args.idle:.0f} s idle")
    daemon = bench_daemon(prefix, args.starts, args.settle, args.idle)
    results = summarise(apply, daemon, bare)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps({"environment": env, **results}, indent=2))
    else:
        print(render(env, results))
        print(f"(benchmark wall time {results['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
