#!/bin/sh
# Idempotent set-up for a fresh Debian 12 machine (run as root):
# system packages the lab and the tests drive for real, then the
# virtual environments (.venv with the newest libraries, .venv-feed with the
# OpenWrt feed versions pyroute2 0.7.9 and paho-mqtt 1.6.1).
set -eu
cd "$(dirname "$0")/.."
# The LuCI app's browser test (tests/test_luci_app.py) drives Debian's chromium headless.
BROWSER_PACKAGES="chromium"

APT_PACKAGES="nftables python3-nftables dnsmasq-base busybox udhcpc iproute2 \
python3 python3-venv mosquitto mosquitto-clients iputils-ping openssl procps psmisc openssh-server openssh-client chrony \
patch xz-utils cmake build-essential pkg-config libjson-c-dev python3-dev util-linux libcap2-bin \
rabbitmq-server"

missing=""
for pkg in $APT_PACKAGES $BROWSER_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# mosquitto's Debian service is not ours to run; the tests start their own brokers.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
# Nor is RabbitMQ's (bench/fleet_cluster.py starts its own 2-node cluster under a temporary
# directory with its own epmd port); a machine with SysV init gets the same. Its init script
# is asked to stop only a node that runs: the stop goes through rabbitmqctl, whose Erlang VM
# would otherwise start the system epmd on port 4369 and leave it running.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet rabbitmq-server 2>/dev/null; then
    systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
elif [ -x /etc/init.d/rabbitmq-server ] && command -v update-rc.d >/dev/null 2>&1; then
    if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then
        /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
    fi
    update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
fi

# The official libnftables ctypes binding ships only as Debian's python3-nftables;
# copy it into each venv so the venv does not need --system-site-packages.
NFT_BINDING=/usr/lib/python3/dist-packages/nftables

make_venv() {
    venv=$1; shift
    stamp="$venv/.setup-stamp"
    want="$(cat pyproject.toml lab/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $*"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "setup: building $venv"
    [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
    "$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]" -e ./lab "$@"
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf "$site/nftables"
    cp -r "$NFT_BINDING" "$site/nftables"
    "$venv/bin/python" -c 'import nftables, pyroute2, paho.mqtt.client' 
    echo "$want" > "$stamp"
}

make_venv .venv
make_venv .venv-feed "pyroute2==0.7.9" "paho-mqtt==1.6.1"

# Host tools and sources for the OpenWrt package build tests (cached, never fetched at test time).
sh scripts/setup-openwrt-build.sh
