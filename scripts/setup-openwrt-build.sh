#!/bin/sh
# Idempotent: everything the OpenWrt package build tests (tests/test_openwrt_sdk_build.py)
# need, downloaded once into .cache/openwrt-build/ (ignored by git), never at test time.
#
#   host-<setuptools version>/   a throwaway venv per release branch's pinned host setuptools
#                                (65.5.0: 23.05, 79.0.1: 24.10, 80.9.0: 25.12) with build,
#                                installer and wheel, the tools python3-package.mk runs
#   dl/ubus-0.1.3.tar.gz         the sdist the packages feed builds python3-ubus from
#   dl/nftables-<v>.tar.xz       an nftables source tarball whose py/ the binding is built from
#                                (see fetch_nftables for where it comes from)
set -eu
cd "$(dirname "$0")/.."

CACHE=.cache/openwrt-build
DL="$CACHE/dl"
mkdir -p "$DL"

SETUPTOOLS_VERSIONS="65.5.0 79.0.1 80.9.0"
# build/installer as the feed's host packages run them; wheel for setuptools < 70.1's bdist_wheel
HOST_TOOLS="build==1.2.2.post1 installer==0.7.0 wheel==0.45.1"

for version in $SETUPTOOLS_VERSIONS; do
    venv="$CACHE/host-$version"
    want="setuptools==$version $HOST_TOOLS"
    if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$want" ]; then
        continue
    fi
    echo "setup: host tools with setuptools $version"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check "setuptools==$version" $HOST_TOOLS
    echo "$want" > "$venv/.stamp"
done

UBUS_SDIST="$DL/ubus-0.1.3.tar.gz"
if [ ! -f "$UBUS_SDIST" ]; then
    echo "setup: ubus 0.1.3 sdist"
    "$CACHE/host-80.9.0/bin/pip" download -q --disable-pip-version-check --no-deps \
        --no-binary :all: --no-build-isolation -d "$DL" "ubus==0.1.3"
fi

# The binding must match the libnftables it loads (newer py/ binds symbols older libraries lack),
# so the test builds the py/ of the nftables version this machine's libnftables comes from.
# First choice: Debian's source package (its orig tarball is the upstream tarball), fetched with a
# private apt configuration so the host's apt sources stay untouched. Where the registry does not
# serve the orig tarball, a stand-in is assembled: the module files exactly as Debian built them
# from that py/ (python3-nftables), and a minimal setuptools project naming the same
# distribution and version as the .deb's metadata; it is marked with a STAND-IN file.
fetch_nftables() {
    version=$(dpkg-query -W -f='${source:Upstream-Version}' python3-nftables)
    tarball="$DL/nftables-$version.tar.xz"
    [ -f "$tarball" ] && return 0
    work="$CACHE/apt"
    rm -rf "$work"
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/src"
    . /etc/os-release
    for kind in deb deb-src; do
        echo "$kind http://deb.debian.org/debian $VERSION_CODENAME main"
        echo "$kind http://deb.debian.org/debian $VERSION_CODENAME-updates main"
        echo "$kind http://deb.debian.org/debian-security $VERSION_CODENAME-security main"
    done > "$work/sources.list"
    opts="-o Dir::Etc::sourcelist=$PWD/$work/sources.list -o Dir::Etc::sourceparts=-
          -o Dir::State::Lists=$PWD/$work/lists -o Dir::Cache=$PWD/$work/cache
          -o APT::Sandbox::User=root -qq"
    full=$(dpkg-query -W -f='${Version}' python3-nftables)
    # shellcheck disable=SC2086
    apt-get $opts update >/dev/null 2>&1 || echo "setup: apt-get update (private lists) reported errors"
    # shellcheck disable=SC2086
    if (cd "$work/src" && apt-get $opts source --download-only "nftables=$full" >/dev/null 2>&1) &&
        [ -f "$work/src/nftables_$version.orig.tar.xz" ]; then
        echo "setup: nftables $version source (Debian orig tarball)"
        cp "$work/src/nftables_$version.orig.tar.xz" "$tarball"
    else
        echo "setup: nftables $version orig tarball not served; assembling a stand-in py/"
        # shellcheck disable=SC2086
        (cd "$work/src" && apt-get $opts download "python3-nftables=$full" >/dev/null 2>&1)
        deb=$(ls "$work/src"/python3-nftables_*.deb)
        dpkg-deb -x "$deb" "$work/deb"
        site="$work/deb/usr/lib/python3/dist-packages"
        meta=$(ls -d "$site"/nftables-*-info)
        # bookworm installs an .egg-info file, newer releases a .dist-info directory
        metafile=$meta
        [ -d "$meta" ] && metafile="$meta/METADATA"
        dist_version=$(sed -n 's/^Version: //p' "$metafile" | head -n 1)
        [ -n "$dist_version" ] || { echo "setup: no version in $metafile" >&2; exit 1; }
        top="$work/nftables-$version"
        mkdir -p "$top/py/src"
        cp "$site/nftables/"* "$top/py/src/"
        cp "$work/deb/usr/share/doc/python3-nftables/copyright" "$top/COPYING"
        cat > "$top/py/pyproject.toml" <<EOF
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
EOF
        cat > "$top/py/setup.cfg" <<EOF
[metadata]
name = nftables
version = $dist_version

[options]
packages = nftables
package_dir =
    nftables = src

[options.package_data]
nftables = schema.json
EOF
        echo "module files from $(basename "$deb"); build files written by scripts/setup-openwrt-build.sh" \
            > "$top/STAND-IN"
        tar -C "$work" -cJf "$tarball" "nftables-$version"
    fi
    rm -rf "$work"
}
fetch_nftables
