"""The OpenWrt SDK's build steps for a Python package, reproduced with the host tools of each
release branch (the SDK itself cannot be downloaded here).

What each function does, and which OpenWrt file it stands for:

* ``unpack``: include/unpack.mk — ``xzcat|gzip -dc <tarball> | tar -C <dir> -xf -`` where
  <dir> is ``$(PKG_BUILD_DIR)/..`` unless the package's Makefile sets its own ``TAR_CMD``.
* ``build_wheel``: python3-package.mk ``Py3Build/Compile/Default`` —
  ``python -m build --no-isolation --outdir <build path>/openwrt-build --wheel <build path>``
  run in ``$(PKG_BUILD_DIR)``.
* ``install_wheel``: ``Py3Build/Install/Default`` — ``python -m installer --destdir
  $(PKG_INSTALL_DIR) --no-compile-bytecode --prefix /usr
  <build path>/openwrt-build/$(PYTHON3_PKG_WHEEL_NAME)-$(PYTHON3_PKG_WHEEL_VERSION)-*.whl``.
* ``package``: ``Py3Package`` — the package's install hook, site-packages copied from
  $(PKG_INSTALL_DIR) (the default filespec), ``compileall -b -d /``, every ``.py`` deleted,
  empty directories removed, ``#!…python…`` in usr/bin rewritten to ``#!/usr/bin/python3``.

The Makefile is read for the values these steps use, so a wrong value fails here as it
would in the SDK.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "openwrt-build"
PKG = ROOT / "openwrt-package"

# The host setuptools each release branch builds with (python3-version.mk on 23.05/24.10,
# python-setuptools/host on 25.12).
BRANCH_SETUPTOOLS = {"23.05": "65.5.0", "24.10": "79.0.1", "25.12": "80.9.0"}

PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
SITE = f"usr/lib/python{PY_VERSION}/site-packages"

INSTALL_RE = re.compile(r"^\t\$\(INSTALL_(BIN|DATA|CONF)\)\s+(\S+)\s+(\S+)\s*$")


def host_python(branch: str) -> Path:
    python = CACHE / f"host-{BRANCH_SETUPTOOLS[branch]}" / "bin" / "python"
    if not python.exists():
        raise AssertionError(f"{python} missing: run scripts/setup.sh (make setup)")
    return python


def cached(name: str) -> Path:
    path = CACHE / "dl" / name
    if not path.exists():
        raise AssertionError(f"{path} missing: run scripts/setup.sh (make setup)")
    return path


def makefile_var(text: str, name: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}\s*:?=\s*(.*)$", text, re.M)
    return match.group(1).strip() if match else None


def define_block(text: str, name: str) -> str:
    match = re.search(rf"^define {re.escape(name)}\n(.*?)^endef", text, re.M | re.S)
    if match is None:
        raise AssertionError(f"no 'define {name}'")
    return match.group(1)


def wheel_glob(text: str) -> str:
    """The file name Py3Build/Install looks for (python3-package.mk's defaults)."""
    pkg_name = makefile_var(text, "PKG_NAME") or ""
    source_name = makefile_var(text, "PYPI_NAME")
    name = makefile_var(text, "PYTHON3_PKG_WHEEL_NAME") or (source_name or pkg_name).replace(
        "-", "_"
    )
    version = makefile_var(text, "PYTHON3_PKG_WHEEL_VERSION") or makefile_var(text, "PKG_VERSION")
    return f"{name}-{version}-*.whl"


def unpack(tarball: Path, build_dir: Path, text: str) -> None:
    """include/unpack.mk with the Makefile's own TAR_OPTIONS/TAR_CMD, if any."""
    options = ["-xf", "-"]
    extra = re.search(r"^TAR_OPTIONS\s*\+=\s*(.*)$", text, re.M)
    if extra:
        options += extra.group(1).split()
    tar_cmd = makefile_var(text, "TAR_CMD")
    if tar_cmd is None:
        target = build_dir.parent
    elif tar_cmd == "$(HOST_TAR) -C $(1) $(TAR_OPTIONS)":
        target = build_dir
    else:
        raise AssertionError(f"TAR_CMD not reproduced here: {tar_cmd}")
    build_dir.mkdir(parents=True, exist_ok=True)  # package.mk: mkdir -p $(PKG_BUILD_DIR)
    decompress = ["xzcat"] if tarball.name.endswith(".xz") else ["gzip", "-dc"]
    cat = subprocess.Popen([*decompress, str(tarball)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(target), *options], stdin=cat.stdout, check=True)
    assert cat.wait() == 0


def build_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # python3-package.mk's PYTHON3_VARS
    return env


def build_wheel(python: Path, build_dir: Path, build_path: str = "") -> Path:
    source = build_dir / build_path if build_path else build_dir
    outdir = source / "openwrt-build"
    result = subprocess.run(
        [
            *(str(python), "-m", "build", "--no-isolation"),
            *("--outdir", str(outdir), "--wheel", str(source)),
        ],
        cwd=build_dir,
        env=build_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return outdir


def install_wheel(python: Path, outdir: Path, pattern: str, install_dir: Path) -> None:
    wheels = sorted(outdir.glob(pattern))
    built = sorted(p.name for p in outdir.glob("*.whl"))
    assert len(wheels) == 1, f"Py3Build/Install looks for {pattern}; built: {built}"
    subprocess.run(
        [
            *(str(python), "-m", "installer", "--destdir", str(install_dir)),
            *("--no-compile-bytecode", "--prefix", "/usr", str(wheels[0])),
        ],
        env=build_env(),
        check=True,
    )


def install_hook(
    text: str, package: str, makefile_dir: Path, install_dir: Path, dest: Path
) -> None:
    """Run the $(INSTALL_*) lines of Py3Package/<package>/install (the package's own files)."""
    try:
        block = define_block(text, f"Py3Package/{package}/install")
    except AssertionError:
        # python3-package.mk's default hook: usr/bin from the installed wheel
        if (install_dir / "usr/bin").is_dir():
            shutil.copytree(install_dir / "usr/bin", dest / "usr/bin", dirs_exist_ok=True)
        return
    for line in block.splitlines():
        match = INSTALL_RE.match(line)
        if not match:
            assert "$(INSTALL_BIN)" not in line and "$(INSTALL_DATA)" not in line, line
            continue
        kind, src, target = match.groups()
        source = Path(
            src.replace("$(PKG_INSTALL_DIR)", str(install_dir)).replace(
                "$(ENERGYHUBD_SRC)", str(ROOT)
            )
        )
        if not source.is_absolute():
            source = makefile_dir / source
        assert target.startswith("$(1)/"), target
        out = dest / target.removeprefix("$(1)/")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out)
        out.chmod(0o755 if kind == "BIN" else (0o600 if kind == "CONF" else 0o644))


def package(text: str, package: str, makefile_dir: Path, install_dir: Path, dest: Path) -> None:
    """Py3Package's Package/<name>/install, with the host interpreter compiling."""
    install_hook(text, package, makefile_dir, install_dir, dest)
    site = install_dir / SITE
    assert site.is_dir(), f"nothing installed under /{SITE}"
    shutil.copytree(site, dest / SITE, dirs_exist_ok=True)
    for exe in dest.rglob("*.exe"):
        exe.unlink()
    env = build_env()
    env["PYTHONHASHSEED"] = "0"
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-r", "20", "-b", "-d", "/", str(dest)],
        env=env,
        check=True,
    )
    for source in dest.rglob("*.py"):
        source.unlink()
    for directory in sorted((p for p in dest.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    bin_dir = dest / "usr/bin"
    for script in bin_dir.iterdir() if bin_dir.is_dir() else ():
        lines = script.read_bytes().split(b"\n", 1)
        if lines[0].startswith(b"#!") and b"python" in lines[0]:
            script.write_bytes(b"#!/usr/bin/python3\n" + (lines[1] if len(lines) > 1 else b""))


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def purelib() -> str:
    return sysconfig.get_paths()["purelib"]
