"""energyhubd benchmark: how much do we cost on top of the libraries we build on?

Every figure is printed next to a baseline measured in the same run, on the same machine, so
the ratio means something even when the absolute numbers move between machines:

1. full policy apply (compile + ``kernel.apply.apply_policy`` through the table owner
   ``kernel.table.Table``) vs the bare libnftables transaction of the same table,
   for the default config and for one with 1,000 port forwards;
2. no-op apply (kernel already matches) vs that bare transaction, and the kernel writes it
   makes, counted by ``nft monitor`` in the namespace (should be none);
3. ``energyhubd run`` start-up until the control socket reports "applied" vs a bare Python
   that only imports the libraries; steady RSS vs that bare Python's RSS; idle wake-ups;
4. RSS growth of the daemon over 1,000 table-changing reloads (a forward added and removed).

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
import select
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

import routerpyc

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
def forwards_document(count: int) -> dict[str, Any]:
    """A config with ``count`` locked port forwards to one LAN host (names and ports unique)."""
    return {
        "forwards": [
            {
                "name": f"fwd{n}",
                "proto": "tcp" if n % 2 else "udp",
                "port": 10000 + n,
                "target": "192.168.254.10",
                "target_port": 502,
                "allow_from": ["198.51.100.0/24"],
            }
            for n in range(count)
        ]
    }


class KernelWrites:
    """``nft monitor`` in this namespace: counts the ruleset changes the kernel announces."""

    MARK = "ehbenchmark"

    def __init__(self) -> None:
        import nftables

        self._nft = nftables.Nftables()
        # Line-buffered: nft writes to a pipe in blocks otherwise.
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "nft", "monitor"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._pending = b""
        self._barrier()  # the monitor is listening once it has seen a marker

    def _marker(self) -> None:
        table = {"table": {"family": "inet", "name": self.MARK}}
        self._nft.json_cmd({"nftables": [{"add": table}]})
        self._nft.json_cmd({"nftables": [{"delete": table}]})

    def _lines(self, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            return []
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError("nft monitor ended")
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        return [line.decode(errors="replace") for line in lines]

    def _barrier(self) -> int:
        """Write a marker table until the monitor shows it gone; changes seen before it.

        Every change is one line; ``# new generation ...`` comment lines are not counted.
        (The monitor subscribes a moment after it starts, so the first marker may be missed.)
        """
        changes = 0
        marked = False
        while True:
            self._marker()
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                for line in self._lines(0.1):
                    if self.MARK in line:
                        if line.startswith("delete"):
                            return changes
                        marked = True
                    elif not marked and line and not line.startswith("#"):
                        changes += 1

    def count(self) -> int:
        """Kernel ruleset changes since the last call."""
        return self._barrier()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def worker_apply(reps: int) -> dict[str, Any]:
    """Runs under ``ip netns exec``: both contestants get a real write into an empty table."""
    from energyhubd.config.load import parse_document
    from energyhubd.kernel.netlink import Netlink
    from energyhubd.kernel.table import Table

    config = parse_document({}, "built-in defaults")
    executor, netlink = Table(), Netlink()
    result = apply_rounds(config, executor, netlink, reps)
    big = parse_document(forwards_document(1000), "1,000 forwards")
    result["forwards_1000"] = apply_rounds(big, executor, netlink, max(3, reps // 5))
    return result


def apply_rounds(config: Any, executor: Any, netlink: Any, reps: int) -> dict[str, Any]:
    """Full vs bare (interleaved), no-op vs bare, with kernel writes counted; one config."""
    import nftables

    from energyhubd.kernel.apply import apply_policy as apply_compiled
    from energyhubd.kernel.netlink import ensure_ipv4_forwarding
    from energyhubd.policy import nft

    def apply_policy(config: Any, table: Any, netlink: Any) -> Any:
        """Compile and apply, as the daemon's table step does."""
        return apply_compiled(config, nft.compile_ruleset(config), table, netlink)

    bare = nftables.Nftables()
    ruleset = nft.compile_ruleset(config)

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
        "part_compile": [],
        "part_normalise": [],
        "part_look": [],
        "part_address": [],
        "part_sysctl": [],
    }
    # One untimed round each: imports, caches and the address on br-lan settle first.
    apply_policy(config, executor, netlink)
    executor.delete()
    bare_write()
    for _ in range(reps):  # interleaved, so drift on the machine hits both alike
        executor.delete()
        samples["bare"].append(timed(bare_write))
        executor.delete()
        samples["full"].append(timed(lambda: apply_policy(config, executor, netlink)))
    apply_policy(config, executor, netlink)
    monitor = KernelWrites()
    try:
        for _ in range(reps):
            samples["noop"].append(timed(lambda: apply_policy(config, executor, netlink)))
        noop_writes = monitor.count()
    finally:
        monitor.close()
    executor.delete()
    for _ in range(reps):  # where a full apply's time goes beside the write, table absent
        samples["part_compile"].append(timed(lambda: nft.compile_ruleset(config)))
        samples["part_normalise"].append(timed(lambda: nft.normal_digest(nft.normalise(ruleset))))
        # A table owner that starts afresh looks whether the kernel already holds its table
        # (the bench resets it before every repetition; the daemon only at start).
        samples["part_look"].append(timed(executor.current))
        samples["part_address"].append(
            timed(lambda: netlink.ensure_address(config.lan.device, config.lan.address, True))
        )
        samples["part_sysctl"].append(timed(ensure_ipv4_forwarding))
    outcome = apply_policy(config, executor, netlink)
    return {
        "samples": samples,
        "rules": len(ruleset["nftables"]),
        "changed": outcome.changed,
        "noop_kernel_writes": noop_writes,
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


def write_config(directory: Path, forwards: int = 0) -> Path:
    path = directory / "config.json"
    document: dict[str, Any] = {
        "platform": "linux",
        "state_dir": str(directory / "state"),
        "control": {"socket": str(directory / "control.sock")},
        "dns": {"fallback": []},
        # No broker in this namespace; bench/portal.py measures the link on a lab site.
        "portal": {"enabled": False},
        **(forwards_document(forwards) if forwards else {}),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)
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


def reload_growth(pid: int, directory: Path, reloads: int) -> dict[str, Any]:
    """RSS over ``reloads`` reloads that each change the table (one forward on, then off)."""
    sock = str(directory / "control.sock")

    def one(n: int) -> None:
        write_config(directory, forwards=n % 2)
        answer = call(sock, "reload", timeout=10)
        if not answer.get("applied"):
            raise RuntimeError(f"reload not applied: {answer}")

    warm = min(100, reloads)
    for n in range(warm):  # caches, interned strings and allocator pools fill up first
        one(n)
    before = rss_kib(pid)
    started = time.perf_counter()
    for n in range(reloads):
        one(n)
    seconds = time.perf_counter() - started
    after = rss_kib(pid)
    return {
        "reloads": reloads,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "growth_mib_per_1000": (after - before) / 1024 * 1000 / reloads,
        "ms_per_reload": seconds * 1000 / reloads,
    }


def bench_daemon(
    prefix: str, starts: int, settle: float, idle: float, reloads: int = 0
) -> dict[str, Any]:
    startup: list[float] = []
    floors: list[tuple[float, int]] = []
    result: dict[str, Any] = {}
    for index in range(starts):
        last = index == starts - 1
        directory = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        try:
            with namespace(f"{prefix}-d{index}", wan=True) as ns:
                # The floor right before each start, in the same namespace: load drift on a
                # shared machine then hits both sides of the ratio alike.
                floors.append(bare_python(ns))
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
                        if reloads:
                            result["reload"] = reload_growth(pid, directory, reloads)
                finally:
                    stop_daemon(proc)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    result["startup"] = startup
    result["floors"] = floors
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
    big = apply["forwards_1000"]
    bs = big["samples"]
    bare = bare + daemon.get("floors", [])
    bare_start = median([b[0] for b in daemon.get("floors", bare)])
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
            "ratio_noop_vs_bare": noop / bare_tx,
            "noop_kernel_writes": apply["noop_kernel_writes"],
            "forwards_1000": {
                "reps": len(bs["full"]),
                "ruleset_objects": big["rules"],
                "full_ms": median(bs["full"]) * ms,
                "bare_ms": median(bs["bare"]) * ms,
                "ratio_full_vs_bare": median(bs["full"]) / median(bs["bare"]),
                "noop_ms": median(bs["noop"]) * ms,
                "ratio_noop_vs_bare": median(bs["noop"]) / median(bs["bare"]),
                "noop_kernel_writes": big["noop_kernel_writes"],
            },
            "parts_ms": {
                part: median(s[f"part_{part}"]) * ms
                for part in ("compile", "normalise", "look", "address", "sysctl")
            },
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
            "reload": daemon.get("reload"),
        },
    }


def render(env: dict[str, Any], r: dict[str, Any]) -> str:
    a, d = r["apply"], r["daemon"]
    f = a["forwards_1000"]
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
            f"{a['noop_ms']['median']:.2f} ms, {a['noop_kernel_writes']} kernel writes",
            f"{a['bare_ms']['median']:.2f} ms bare libnftables",
            f"{a['ratio_noop_vs_bare']:.2f}x",
        ),
        (
            f"full apply, 1,000 forwards ({f['reps']} reps)",
            f"{f['full_ms']:.1f} ms",
            f"{f['bare_ms']:.1f} ms bare libnftables",
            f"{f['ratio_full_vs_bare']:.2f}x",
        ),
        (
            "no-op apply, 1,000 forwards",
            f"{f['noop_ms']:.1f} ms, {f['noop_kernel_writes']} kernel writes",
            f"{f['bare_ms']:.1f} ms bare libnftables",
            f"{f['ratio_noop_vs_bare']:.2f}x",
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
    if d.get("reload"):
        g = d["reload"]
        rows.append(
            (
                f"RSS growth, {g['reloads']} table-changing reloads",
                f"{g['growth_mib_per_1000']:+.2f} MiB per 1,000",
                f"{g['rss_before_kib'] / 1024:.1f} MiB before, {g['ms_per_reload']:.0f} ms each",
                "",
            )
        )
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
        "full apply = compile + normal form and digest + look for the table + one write + "
        f"address check + sysctl ({a['ruleset_objects']} ruleset objects; "
        f"{f['ruleset_objects']} with 1,000 forwards; no dry run, no listing after the "
        "write); medians beside the write: "
        + ", ".join(f"{part} {value:.3f} ms" for part, value in a["parts_ms"].items()),
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
    parser.add_argument("--idle", type=float, default=60.0, help="wake-up window, s (60)")
    parser.add_argument("--reloads", type=int, default=1000, help="reloads for RSS growth")
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
    env["bytecode"] = routerpyc.compile_packages()
    progress(f"byte-compiled, as the router package ships them: {', '.join(env['bytecode'])}")
    started = time.monotonic()
    with namespace(f"{prefix}-a") as ns:
        progress(f"apply: {args.reps} full + {args.reps} bare + {args.reps} no-op in {ns}")
        apply = bench_apply(ns, args.reps)
        progress("bare python baseline")
        bare = [bare_python(ns) for _ in range(args.starts)]
    progress(f"daemon: {args.starts} start-ups, then {args.settle + args.idle:.0f} s idle")
    daemon = bench_daemon(prefix, args.starts, args.settle, args.idle, args.reloads)
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
