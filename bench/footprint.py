"""Router footprint: flash and RAM of everything the energyhubd package pulls in.

Flash. Each component is laid out as its OpenWrt package installs it: energyhubd and the
nftables binding built as the SDK builds them (tests/openwrt_sdk.py: wheel with the 24.10 host
setuptools, installed, compiled to ``.pyc`` with ``compileall -b``, ``.py`` dropped);
pyroute2 0.7.9 and paho-mqtt 1.6.1 (the feed versions) from ``.venv-feed``'s installed files,
compiled the same way; the Python 3.11 runtime as ``python3`` installs it, because
``python3-pyroute2`` depends on ``+python3`` (the whole split standard library, not only
``python3-light``): this machine's standard library compiled the same way, without the parts
OpenWrt never packages into ``python3`` (test suites, idlelib, tkinter, turtledemo, ensurepip,
the build configuration), plus the interpreter and its extension modules. The ``.pyc`` files
are the same bytes on every target for the same Python version; the native parts (interpreter,
``lib-dynload``) are this machine's x86-64 glibc builds and only approximate a MIPS/ARM musl
build. Not counted: libubus/libubox, libnftables + jansson (fw4 needs them anyway), OpenSSL,
zlib, libffi, libbz2 (in nearly every image), and the ubus binding (one small ``.so``, not
buildable here without libubus).

Three sizes per component: bytes installed; a JFFS2 estimate (each file zlib-compressed in
4 KiB nodes plus a 68-byte node header: where opkg installs on a NOR flash overlay); and
``tar | xz -6`` (close to squashfs, where the packages are part of the firmware image).

RAM. Processes whose ``sys.path`` holds only the packaged trees and the standard library
(``python -S``): the floor, an interpreter doing nothing; the libraries imported; every module
of the energyhubd package imported; and, as root, ``energyhubd run`` itself started from the
packaged trees in a network namespace of its own (bench/run.py's daemon start, same config),
its ``VmRSS`` read after 8 s idle, with the dnsmasq it runs listed apart. The router's
32-bit targets use less memory per object than this 64-bit machine; the ratios compare.

Run: ``.venv/bin/python bench/footprint.py [--json]`` (``make bench``); needs the caches that
scripts/setup.sh builds. The namespaces (``ehF<random>-…``) are removed afterwards, also on
failure or SIGTERM. No assertions: this reports.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import openwrt_sdk as sdk  # noqa: E402  (the SDK's steps, shared with the tests)

BASE_PYTHON = Path(os.path.realpath(Path(sys.base_prefix) / "bin" / f"python{sdk.PY_VERSION}"))

FEED_PYTHON = ROOT / ".venv-feed" / "bin" / "python"
STDLIB_SKIP = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__"}
STDLIB_SKIP_PREFIX = ("config-", "site-packages", "dist-packages", "lib-dynload")


def compile_tree(tree: Path) -> None:
    """Python3/CompileAll + DeleteSourceFiles of python3-package.mk."""
    env = sdk.build_env()
    env["PYTHONHASHSEED"] = "0"
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-r", "40", "-b", "-d", "/", str(tree)],
        env=env,
        check=True,
    )
    for source in tree.rglob("*.py"):
        source.unlink()
    for cache in list(tree.rglob("__pycache__")):
        shutil.rmtree(cache)


def energyhubd_tree(work: Path) -> Path:
    text = (sdk.PKG / "energyhubd" / "Makefile").read_text()
    python = sdk.host_python("24.10")
    build_dir = work / "build" / "energyhubd"
    build_dir.mkdir(parents=True)
    for name in ("pyproject.toml", "LICENSE", "daemon"):
        subprocess.run(["cp", "-a", str(ROOT / name), str(build_dir)], check=True)
    for junk in [*build_dir.rglob("__pycache__"), *build_dir.rglob("*.egg-info")]:
        shutil.rmtree(junk)
    outdir = sdk.build_wheel(python, build_dir)
    sdk.install_wheel(python, outdir, sdk.wheel_glob(text), build_dir / "install")
    dest = work / "pkg" / "energyhubd"
    sdk.package(text, "energyhubd", sdk.PKG / "energyhubd", build_dir / "install", dest)
    return dest


def binding_tree(work: Path) -> Path:
    text = (sdk.PKG / "python3-nftables-binding" / "Makefile").read_text()
    python = sdk.host_python("24.10")
    (tarball,) = (sdk.CACHE / "dl").glob("nftables-*.tar.xz")
    build_dir = work / "build" / "nftables-py"
    sdk.unpack(tarball, build_dir, text)
    outdir = sdk.build_wheel(python, build_dir, "py")
    sdk.install_wheel(python, outdir, sdk.wheel_glob(text), build_dir / "install")
    dest = work / "pkg" / "python3-nftables-binding"
    sdk.package(text, "python3-nftables-binding", sdk.PKG, build_dir / "install", dest)
    return dest


def feed_library_tree(work: Path, dist: str) -> Path:
    """The files a distribution installed in .venv-feed, compiled as Py3Package does."""
    code = (
        "import importlib.metadata as m, json, sys;"
        "d = m.distribution(sys.argv[1]);"
        "print(json.dumps([str(d.locate_file(f)) for f in d.files]))"
    )
    listing = subprocess.run(
        [str(FEED_PYTHON), "-c", code, dist], capture_output=True, text=True, check=True
    ).stdout
    site = Path(
        subprocess.run(
            [str(FEED_PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    dest = work / "pkg" / dist / sdk.SITE
    for name in json.loads(listing):
        path = Path(name).resolve()
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if path.is_relative_to(site):
            target = dest / path.relative_to(site)
        else:  # console scripts
            target = work / "pkg" / dist / "usr/bin" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    compile_tree(work / "pkg" / dist)
    return work / "pkg" / dist


def stdlib_tree(work: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dest = work / "pkg" / "python3-stdlib" / f"usr/lib/python{sdk.PY_VERSION}"

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in STDLIB_SKIP or n.startswith(STDLIB_SKIP_PREFIX)}
        if Path(directory) != stdlib:
            skip |= {n for n in names if n == "tests"}
        return skip

    shutil.copytree(stdlib, dest, ignore=ignore, symlinks=False)
    compile_tree(dest.parent.parent.parent)
    return work / "pkg" / "python3-stdlib"


def native_tree(work: Path) -> Path:
    dest = work / "pkg" / "python3-native"
    dynload = Path(os.__file__).parent / "lib-dynload"  # the base interpreter, not the venv
    shutil.copytree(dynload, dest / f"usr/lib/python{sdk.PY_VERSION}/lib-dynload")
    interpreter = BASE_PYTHON
    (dest / "usr/bin").mkdir(parents=True)
    shutil.copyfile(interpreter, dest / "usr/bin" / interpreter.name)
    # Debian links libpython into the interpreter; OpenWrt's python3.X is small and links
    # libpython3.X.so (package libpython3): the same code in another file, counted once here.
    return dest


def sizes(tree: Path) -> dict[str, int]:
    installed = jffs2 = 0
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            data = path.read_bytes()
            installed += len(data)
            for offset in range(0, max(len(data), 1), 4096):
                jffs2 += 68 + len(zlib.compress(data[offset : offset + 4096], 6))
            tar.add(path, arcname=str(path.relative_to(tree)))
    xz = len(lzma.compress(buffer.getvalue(), preset=6))
    files = sum(1 for p in tree.rglob("*") if p.is_file())
    return {"files": files, "installed": installed, "jffs2_estimate": jffs2, "xz": xz}


def rss_kib(paths: list[Path], imports: str) -> int:
    code = (
        "import sys;"
        f"sys.path[:0] = {[str(p) for p in paths]!r};"
        f"{imports};"
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1])"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def running_daemon_rss(sites: list[Path], work: Path) -> dict[str, int | None]:
    """``energyhubd run`` from the packaged trees, as bench/run.py starts and measures it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run as bench_run  # bench/run.py: its namespaces, config and daemon start

    wrapper = work / "python-packaged"
    path = ":".join(str(s) for s in sites)
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH={path} PYTHONNOUSERSITE=1 exec {BASE_PYTHON} -S "$@"\n'
    )
    wrapper.chmod(0o755)
    bench_run.PYTHON = str(wrapper)
    measured = bench_run.bench_daemon(f"ehF{secrets.token_hex(3)}", 1, 8.0, 1.0)
    return {"rss_kib": measured["rss_kib"], "dnsmasq_rss_kib": measured.get("dnsmasq_rss_kib")}


def import_all(package_root: Path, sites: list[Path]) -> tuple[str, list[str]]:
    """One import statement per module of energyhubd; modules that need a binding that is
    not here (ubus) are left out and named."""
    names = sorted(
        ".".join(p.relative_to(package_root).with_suffix("").parts).removesuffix(".__init__")
        for p in (package_root / "energyhubd").rglob("*.pyc")
    )
    skipped = []
    for name in names:
        probe = f"import {name}"
        try:
            rss_kib(sites, probe)
        except subprocess.CalledProcessError:
            skipped.append(name)
    kept = [n for n in names if n not in skipped]
    return ";".join(f"import {n}" for n in kept), skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # SIGTERM must unwind through the finally blocks that remove the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="eh-footprint-") as tmp:
        work = Path(tmp)
        trees = {
            "energyhubd": energyhubd_tree(work),
            "python3-nftables-binding": binding_tree(work),
            "python3-pyroute2 0.7.9": feed_library_tree(work, "pyroute2"),
            "python3-paho-mqtt 1.6.1": feed_library_tree(work, "paho-mqtt"),
            f"python3 {sdk.PY_VERSION} stdlib (.pyc)": stdlib_tree(work),
            f"python3 {sdk.PY_VERSION} native (x86-64 build)": native_tree(work),
        }
        result = {name: sizes(tree) for name, tree in trees.items()}
        site = [trees[n] / sdk.SITE for n in list(trees)[:4]]
        imports, skipped = import_all(trees["energyhubd"] / sdk.SITE, site)
        floor = rss_kib([], "pass")
        loaded = rss_kib(site, imports)
        libraries = rss_kib(site, "import pyroute2, paho.mqtt.client, nftables")
        daemon: dict[str, int | None] = {}
        if os.geteuid() == 0:
            daemon = running_daemon_rss(site, work)
    totals = {
        key: sum(v[key] for v in result.values())
        for key in ("files", "installed", "jffs2_estimate", "xz")
    }
    report = {
        "components": result,
        "total": totals,
        "ram": {
            "bare_python_rss_kib": floor,
            "libraries_rss_kib": libraries,
            "energyhubd_all_modules_rss_kib": loaded,
            "ratio_all_modules_vs_bare": loaded / floor,
            "modules_not_importable_here": skipped,
            "daemon_steady_rss_kib": daemon.get("rss_kib"),
            "daemon_dnsmasq_rss_kib": daemon.get("dnsmasq_rss_kib"),
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    mib = 1024 * 1024
    print(f"{'component':44} {'files':>6} {'installed':>11} {'JFFS2 est.':>11} {'xz':>9}")
    for name, row in [*result.items(), ("total", totals)]:
        print(
            f"{name:44} {row['files']:>6} {row['installed'] / mib:>7.2f} MiB"
            f" {row['jffs2_estimate'] / mib:>7.2f} MiB {row['xz'] / mib:>5.2f} MiB"
        )
    print()
    print(f"RSS, bare python -I -S: {floor / 1024:.1f} MiB (floor)")
    print(f"RSS, + pyroute2, paho, nftables: {libraries / 1024:.1f} MiB ({libraries / floor:.2f}x)")
    print(f"RSS, + every energyhubd module: {loaded / 1024:.1f} MiB ({loaded / floor:.2f}x)")
    if skipped:
        print(f"  not importable here (no ubus binding): {', '.join(skipped)}")
    if daemon:
        rss = daemon["rss_kib"] or 0
        print(
            f"RSS, energyhubd run (packaged, 8 s idle): {rss / 1024:.1f} MiB ({rss / floor:.2f}x)"
        )
        print(f"  its dnsmasq: {(daemon['dnsmasq_rss_kib'] or 0) / 1024:.1f} MiB")
    else:
        print("RSS of the running daemon: needs root (network namespace); not measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
