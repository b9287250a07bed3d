#!/bin/sh
# scripts/openwrt/build.sh - build OpenWrt's userland from source into a cached root filesystem
# that the lab boots with procd as PID 1 (lab/energyhub_lab/openwrt.py). Run as root.
#
# Interface (stable; other tools rely on it):
#   sh scripts/openwrt/build.sh          build if needed; the LAST line of stdout is the build dir
#   sh scripts/openwrt/build.sh --key    print the cache key only (nothing is built)
#   sh scripts/openwrt/build.sh --dir    print the build dir only (nothing is built)
#
# Environment:
#   ENERGYHUB_OPENWRT_SRC    source dir: OpenWrt tarballs <name>-<commit12>.tar.gz, base-files/
#                            (default: ../shared/openwrt-src relative to the repository)
#   ENERGYHUB_OPENWRT_CACHE  cache dir (default: <repo>/build/openwrt, ignored by git)
#   ENERGYHUB_UBUS_SDIST     PyPI sdist ubus-0.1.3.tar.gz (default: <repo>/.cache/openwrt-build/dl/,
#                            put there by scripts/setup-openwrt-build.sh; nothing is downloaded here)
#   ENERGYHUB_OPENWRT_PYTHON python used to build the ubus binding and whose site-packages give
#                            pyroute2/paho-mqtt (default: <repo>/.venv-feed/bin/python, the feed
#                            versions; else <repo>/.venv/bin/python)
#
# Build dir = $CACHE/<key>, key = sha256 of the tarballs, base-files, this script, the ubus sdist
# and patch, the Debian binaries copied in and the python libraries' versions. Reused while the
# key matches; $CACHE/current links to the newest. Inside it:
#   stage/usr/{include,lib,bin,sbin}   staged prefix (headers + libs: build more against libubus)
#   rootfs/                            the root filesystem (use it as a read-only lower layer)
#   pyubus/ubus.cpython-*.so           python3-ubus (sdist 0.1.3 + the project's patch)
#   sources.txt, log/, key
# In rootfs/: OpenWrt's binaries in /usr/{bin,sbin} (+ /sbin, /bin links as the packages
# install them; procd with /sbin/ujail), uhttpd (/usr/sbin/uhttpd) + /usr/lib/uhttpd_ubus.so,
# python3 with /usr/lib/python3/dist-packages (ubus, pyroute2, paho, nftables), OpenWrt
# base-files, firewall4, netifd scripts, scripts/openwrt/files/ (the lab's sysntpd: chronyd -x).
# Root's password (rpcd login '$p$root') is "energyhub-lab". The project itself is NOT in it:
# the boot helper installs the package files into each run's overlay (no rebuild per change).
# To run it on the host (e.g. uci): LD_LIBRARY_PATH=<dir>/rootfs/usr/lib <dir>/rootfs/usr/bin/uci
#
# Boot (Python): energyhub_lab.openwrt.OpenWrtRouter(prefix, run_dir).up() / .run(argv) /
# .sh(script) / .down(): procd as PID 1 in new pid/mount/uts/ipc namespaces, inside netns
# <prefix>-rtr, chrooted into an overlay of rootfs/; `energyhubd lab check --openwrt` uses it.
set -eu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SRC=${ENERGYHUB_OPENWRT_SRC:-$REPO/../shared/openwrt-src}
CACHE=${ENERGYHUB_OPENWRT_CACHE:-$REPO/build/openwrt}
SDIST=${ENERGYHUB_UBUS_SDIST:-$REPO/.cache/openwrt-build/dl/ubus-0.1.3.tar.gz}
# the python3-ubus-energyhub package's patches, applied in order as OpenWrt's build does
PATCHES=$REPO/openwrt-package/python3-ubus-energyhub/patches
PY=${ENERGYHUB_OPENWRT_PYTHON:-}
if [ -z "$PY" ]; then
    PY=$REPO/.venv-feed/bin/python
    [ -x "$PY" ] || PY=$REPO/.venv/bin/python
fi
SELF=$REPO/scripts/openwrt/build.sh
# files written for the lab's userland where OpenWrt's own cannot run on Debian (sysntpd)
LABFILES=$REPO/scripts/openwrt/files
COMPONENTS="libubox ubus uci libnl-tiny ucode udebug procd ubox jsonpath rpcd netifd uhttpd firewall4"
DEBIAN_BINARIES="busybox dnsmasq-base nftables util-linux chrony python3.11-minimal libpython3.11-stdlib python3-nftables"

die() { echo "openwrt-build: $*" >&2; exit 1; }
[ -d "$SRC" ] || die "no source dir $SRC (set ENERGYHUB_OPENWRT_SRC)"
SRC=$(cd "$SRC" && pwd)

tarball() { # name -> path of its tarball
    set -- "$SRC/$1"-[0-9a-f]*.tar.gz
    [ -f "$1" ] || return 1
    echo "$1"
}

site_packages() { "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

compute_key() {
    {
        for n in $COMPONENTS; do t=$(tarball "$n") || die "no tarball for $n in $SRC"; sha256sum <"$t"; done
        (cd "$SRC/base-files" && find rootfs -type f -o -type l | LC_ALL=C sort | while read -r f; do
            echo "$f"; if [ -L "$f" ]; then readlink "$f"; else sha256sum <"$f"; fi; done)
        sha256sum <"$SELF"
        (cd "$LABFILES" && find . -type f | LC_ALL=C sort | xargs sha256sum)
        [ -f "$SDIST" ] && sha256sum <"$SDIST"
        cat "$PATCHES"/*.patch | sha256sum
        dpkg-query -W $DEBIAN_BINARIES 2>/dev/null || true
        sp=$(site_packages)
        ls "$sp" | grep -E '^(pyroute2|paho_mqtt)-.*info$' || true
    } | sha256sum | cut -c1-16
}

KEY=$(compute_key)
OUT=$CACHE/$KEY
case "${1:-}" in
    --key) echo "$KEY"; exit 0;;
    --dir) echo "$OUT"; exit 0;;
    "") ;;
    *) die "usage: $0 [--key|--dir]";;
esac
[ "$(id -u)" = 0 ] || die "run as root (the root filesystem has root-owned files)"
mkdir -p "$CACHE"
# One build at a time per cache (parallel test runs, two shells); the second waits and reuses.
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$OUT/complete" ]; then
    ln -sfn "$KEY" "$CACHE/current"
    echo "$OUT"
    exit 0
fi
[ -f "$SDIST" ] || die "no ubus sdist at $SDIST (run scripts/setup.sh; it downloads it once)"
T0=$(date +%s)
W=$CACHE/$KEY.partial
rm -rf "$W"
mkdir -p "$W/src" "$W/build" "$W/log" "$W/stage"
STAGE=$W/stage
: >"$W/sources.txt"

# Debian 12's glibc (2.36) lacks strlcpy, which procd, rpcd and netifd call (musl has it).
# A header forced into those builds, using only compiler builtins so it cannot interfere with
# the sources' feature-test macros.
COMPAT=$W/compat.h
: >"$COMPAT"
printf '#include <string.h>\nint main(void){char b[2];return (int)strlcpy(b,"",2);}\n' >"$W/probe.c"
if ! cc -o "$W/probe" "$W/probe.c" >/dev/null 2>&1; then
    cat >"$COMPAT" <<'EOF'
static inline __SIZE_TYPE__ energyhub_strlcpy(char *dst, const char *src, __SIZE_TYPE__ size)
{
	__SIZE_TYPE__ len = __builtin_strlen(src);
	if (size) {
		__SIZE_TYPE__ n = len < size ? len : size - 1;
		__builtin_memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}
#define strlcpy energyhub_strlcpy
EOF
fi

unpack() { # name
    t=$(tarball "$1")
    mkdir -p "$W/src/$1"
    tar -xzf "$t" -C "$W/src/$1" --strip-components 1
    echo "$1 $(basename "$t" .tar.gz)" >>"$W/sources.txt"
}

# cmake_build <name> <in-source 0|1> <extra cflags> [cmake args...]
cmake_build() {
    n=$1; insrc=$2; cflags=$3; shift 3
    t=$(date +%s)
    if [ "$insrc" = 1 ]; then bdir=$W/src/$n; else bdir=$W/build/$n; mkdir -p "$bdir"; fi
    if ! (cd "$bdir" && cmake "$W/src/$n" \
            -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR=lib \
            -DCMAKE_PREFIX_PATH="$STAGE/usr" -DCMAKE_FIND_ROOT_PATH="$STAGE" \
            -DCMAKE_C_FLAGS="-I$STAGE/usr/include -Wno-error -Wno-format-overflow $cflags" \
            -DCMAKE_EXE_LINKER_FLAGS="-L$STAGE/usr/lib -Wl,-rpath-link,$STAGE/usr/lib" \
            -DCMAKE_SHARED_LINKER_FLAGS="-L$STAGE/usr/lib -Wl,-rpath-link,$STAGE/usr/lib" \
            -DCMAKE_MODULE_LINKER_FLAGS="-L$STAGE/usr/lib -Wl,-rpath-link,$STAGE/usr/lib" \
            -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF -DBUILD_TESTS=OFF -DUNIT_TESTING=OFF "$@" \
            && make -j"$(nproc)" && make install DESTDIR="$STAGE") >"$W/log/$n.log" 2>&1; then
        tail -20 "$W/log/$n.log" >&2
        die "$n failed to build (log: $W/log/$n.log)"
    fi
    echo "openwrt-build: $n built in $(( $(date +%s) - t )) s" >&2
}

for n in $COMPONENTS; do unpack "$n"; done

cmake_build libubox 0 ""
cmake_build ubus 0 ""
cmake_build uci 0 ""
cmake_build libnl-tiny 0 ""
cmake_build ucode 0 "" -DUCI_SUPPORT=ON -DUBUS_SUPPORT=ON -DULOOP_SUPPORT=ON -DRTNL_SUPPORT=ON \
    -DNL80211_SUPPORT=OFF -DZLIB_SUPPORT=OFF -DDIGEST_SUPPORT=OFF -DDIGEST_SUPPORT_EXTENDED=OFF
cmake_build udebug 0 ""
# ujail (JAIL_SUPPORT): procd applies an instance's capability set only through it. Its header
# generator runs in the source tree; gcc 12 raises warnings that its -Werror turns fatal.
cmake_build procd 1 "-include $COMPAT -Wno-maybe-uninitialized -Wno-format-truncation" \
    -DJAIL_SUPPORT=ON -DSECCOMP_SUPPORT=OFF -DUTRACE_SUPPORT=OFF
cmake_build ubox 0 ""
# jsonpath and netifd generate sources next to themselves: built in the source tree.
cmake_build jsonpath 1 ""
cmake_build rpcd 0 "-include $COMPAT" -DFILE_SUPPORT=ON -DRPCSYS_SUPPORT=ON -DIWINFO_SUPPORT=OFF \
    -DUCODE_SUPPORT=OFF
# This kernel has no bridge VLAN filtering and refuses IFLA_BR_VLAN_FILTERING even as 0, while
# netifd always sends it: br-lan would never come up. Send it only when filtering is wanted.
sed -i 's/^\([[:space:]]*\)nla_put_u8(msg, IFLA_BR_VLAN_FILTERING, !!cfg->vlan_filtering);/\1if (cfg->vlan_filtering) nla_put_u8(msg, IFLA_BR_VLAN_FILTERING, 1); \/* energyhub-lab *\//' \
    "$W/src/netifd/system-linux.c"
grep -q 'energyhub-lab' "$W/src/netifd/system-linux.c" || die "netifd VLAN-filtering fix did not apply"
cmake_build netifd 1 "-include $COMPAT -D_GNU_SOURCE= -I$STAGE/usr/include/libnl-tiny" -DLIBNL_LIBS=nl-tiny
# gcc 12 reports a false -Wstringop-overread in client.c and uhttpd builds with -Werror.
cmake_build uhttpd 0 "-Wno-stringop-overread" -DTLS_SUPPORT=OFF -DLUA_SUPPORT=OFF \
    -DUCODE_SUPPORT=OFF -DUBUS_SUPPORT=ON

# ---- python3-ubus: the PyPI sdist with the project's patch, compiled against the staged libubus
t=$(date +%s)
mkdir -p "$W/pyubus-src" "$W/pyubus"
tar -xzf "$SDIST" -C "$W/pyubus-src" --strip-components 1
for p in "$PATCHES"/*.patch; do
    (cd "$W/pyubus-src" && patch -p1 <"$p") >>"$W/log/pyubus.log" 2>&1 || die "$(basename "$p") does not apply"
done
if ! (cd "$W/pyubus-src" && CFLAGS="-I$STAGE/usr/include" LDFLAGS="-L$STAGE/usr/lib" \
        "$PY" -m pip wheel -q --no-build-isolation --no-deps --no-index -w "$W/pyubus-wheel" .) \
        >>"$W/log/pyubus.log" 2>&1; then
    die "python ubus failed to build (log: $W/log/pyubus.log)"
fi
(cd "$W/pyubus" && "$PY" -m zipfile -e "$W"/pyubus-wheel/ubus-*.whl .)
rm -rf "$W/pyubus"/*.dist-info
echo "openwrt-build: python ubus built in $(( $(date +%s) - t )) s" >&2

# ---- root filesystem
R=$W/rootfs
mkdir -p "$R"
for d in bin sbin lib usr/bin usr/sbin usr/lib/python3/dist-packages usr/share etc/init.d \
         etc/rc.d etc/config etc/hotplug.d etc/uci-defaults proc sys dev tmp root overlay rom www; do
    mkdir -p "$R/$d"
done
chmod 1777 "$R/tmp"
ln -s /tmp "$R/var"
# Debian's merged /usr: the ELF interpreter is /lib64/ld-linux-x86-64.so.2.
mkdir -p "$R/usr/lib64" "$R/usr/lib/x86_64-linux-gnu"
ln -s usr/lib64 "$R/lib64"
ln -s ../usr/lib/x86_64-linux-gnu "$R/lib/x86_64-linux-gnu"

cp -a "$STAGE/usr/." "$R/usr/"
rm -rf "$R/usr/include" "$R/usr/lib/pkgconfig" "$R/usr/share/cmake"
rm -f "$R"/usr/lib/*.a
# Where OpenWrt's packages put these programs.
for b in procd ubusd rpcd netifd logd validate_data getrandom askfirst udebugd ujail uxc; do
    [ -e "$R/usr/sbin/$b" ] && ln -sf "../usr/sbin/$b" "$R/sbin/$b"
done
ln -sf ../usr/bin/ubus "$R/bin/ubus"
ln -sf ../usr/bin/uci "$R/sbin/uci"
ln -sf ../usr/sbin/logread "$R/sbin/logread"
ln -sf jsonpath "$R/usr/bin/jsonfilter"
[ -e "$R/usr/bin/uhttpd" ] && ln -sf ../bin/uhttpd "$R/usr/sbin/uhttpd"
[ -e "$R/usr/lib/libsetlbf.so" ] && ln -sf ../usr/lib/libsetlbf.so "$R/lib/libsetlbf.so"
# Host protection: procd's coldplug runs udevtrigger, which writes "add" into every uevent file
# under /sys and so replays device events on the host's kernel. A no-op takes its place.
rm -f "$R/sbin/udevtrigger" "$R/usr/sbin/udevtrigger"
printf '#!/bin/sh\n# energyhub-lab: no-op; the real one would replay uevents on the host kernel\nexit 0\n' \
    >"$R/sbin/udevtrigger"
chmod 755 "$R/sbin/udevtrigger"

copy_libs() { # copy the shared libraries that the given host binaries need into the rootfs
    for b in "$@"; do
        ldd "$b" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\/lib/{print $1}' | while read -r l; do
            case "$l" in "$STAGE"/*|/usr/local/*) continue;; esac
            [ -e "$R$l" ] && continue
            mkdir -p "$R$(dirname "$l")"
            cp -L "$l" "$R$l"
        done
    done
}
host_bin() { # host-path rootfs-path
    mkdir -p "$R$(dirname "$2")"
    cp -L "$1" "$R$2"
    copy_libs "$1"
}
# the libraries our own builds need (libjson-c, libc); libubox & co. are in /usr/lib already
LD_LIBRARY_PATH=$STAGE/usr/lib copy_libs "$R"/usr/sbin/* "$R"/usr/bin/* "$R"/usr/lib/*.so* "$R"/usr/lib/ucode/*.so

host_bin /usr/bin/busybox /bin/busybox
# Busybox applets, except those OpenWrt provides itself or that must never run here.
for a in $(busybox --list-full); do
    case "$a" in
        sbin/init|linuxrc|*/ubus|*/uci|*/logread|sbin/ifup|sbin/ifdown|*/flock) continue;;
        # these act on the machine (kernel modules, clock, kernel log, block devices, watchdog),
        # which a namespace shares with the host: not installed
        */insmod|*/rmmod|*/modprobe|*/depmod|*/adjtimex|*/hwclock|*/mdev|*/klogd|*/syslogd|\
        */swapon|*/swapoff|*/fdisk|*/mke2fs|*/mkswap|*/mkdosfs|*/losetup|*/blockdev|*/fstrim|\
        */freeramdisk|*/devmem|*/pivot_root|*/switch_root|*/run-init|*/watchdog|*/acpid|\
        */ntpd|*/rdate|*/setkeycodes|*/loadkmap|*/loadfont|*/openvt|*/chvt|*/deallocvt) continue;;
    esac
    [ -e "$R/$a" ] || [ -L "$R/$a" ] || { mkdir -p "$R/$(dirname "$a")"; ln -s /bin/busybox "$R/$a"; }
done
ln -sf busybox "$R/bin/sh"
ln -sf busybox "$R/bin/ash"
host_bin /usr/sbin/dnsmasq /usr/sbin/dnsmasq
host_bin /usr/sbin/nft /usr/sbin/nft
# procd.sh takes a lock per service with flock; Debian's busybox has no flock applet.
host_bin /usr/bin/flock /usr/bin/flock
host_bin /usr/bin/setpriv /usr/bin/setpriv
host_bin /usr/sbin/chronyd /usr/sbin/chronyd
PYBIN=$(readlink -f /usr/bin/python3)
PYVER=$(basename "$PYBIN")
host_bin "$PYBIN" "/usr/bin/$PYVER"
ln -sf "$PYVER" "$R/usr/bin/python3"
cp -a "/usr/lib/$PYVER" "$R/usr/lib/"
rm -rf "$R/usr/lib/$PYVER/test" "$R/usr/lib/$PYVER"/*/test "$R/usr/lib/$PYVER"/config-*
copy_libs "$R/usr/lib/$PYVER"/lib-dynload/*.so
[ -d /etc/ssl/certs ] && mkdir -p "$R/etc/ssl" && cp -aL /etc/ssl/certs "$R/etc/ssl/" 2>/dev/null || true
# python libraries: the binding built above, the feed's pyroute2/paho from $PY's site-packages,
# the libnftables ctypes binding (Debian's python3-nftables; the feed's binding package on OpenWrt)
DP=$R/usr/lib/python3/dist-packages
cp "$W"/pyubus/ubus*.so "$DP/"
SP=$(site_packages)
for p in pyroute2 paho; do cp -a "$SP/$p" "$DP/"; done
cp -a /usr/lib/python3/dist-packages/nftables "$DP/"
copy_libs "$R/usr/sbin/nft"
# libnftables is loaded by ctypes (no ldd edge from python): copy it by name
for l in /usr/lib/x86_64-linux-gnu/libnftables.so*; do cp -a "$l" "$R$l"; done
find "$DP" -name __pycache__ -prune -exec rm -rf {} +

# OpenWrt base-files, then the files that live in component trees
cp -a --remove-destination "$SRC/base-files/rootfs/." "$R/"
mkdir -p "$R/lib/netifd/proto"
cp "$W/src/netifd/scripts/"*.sh "$R/lib/netifd/"
cp -a "$W/src/firewall4/root/." "$R/"
cp -a "$LABFILES/." "$R/"
# The source dir is read-only (files 0444/0555); OpenWrt ships them writable by root (0644/0755).
# Root without CAP_DAC_OVERRIDE (a jailed daemon) must still be able to commit /etc/config/*.
chmod -R u+w "$R/etc" "$R/lib" "$R/sbin" "$R/usr/share" "$R/usr/lib/dnsmasq"
# ujail resolves a jailed program's libraries itself (/lib, /lib64, /usr/lib and the dirs of
# /etc/ld.so.conf); Debian's glibc and libraries live in the multiarch dirs.
printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$R/etc/ld.so.conf"
# glibc looks users and hosts up through nsswitch.conf (musl has none); ujail binds it into jails
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$R/etc/nsswitch.conf"

PASSHASH=$(openssl passwd -6 energyhub-lab)
cat >"$R/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/ash
daemon:*:1:1:daemon:/var:/bin/false
network:*:101:101:network:/var:/bin/false
dnsmasq:x:453:453:dnsmasq:/var/run/dnsmasq:/bin/false
nobody:*:65534:65534:nobody:/var:/bin/false
EOF
cat >"$R/etc/group" <<EOF
root:x:0:
daemon:x:1:
network:x:101:
dnsmasq:x:453:dnsmasq
nogroup:x:65534:
EOF
cat >"$R/etc/shadow" <<EOF
root:$PASSHASH:20000:0:99999:7:::
daemon:*:0:0:99999:7:::
network:*:0:0:99999:7:::
dnsmasq:*:0:0:99999:7:::
nobody:*:0:0:99999:7:::
EOF
chmod 600 "$R/etc/shadow"
echo OpenWrt >"$R/etc/hostname"
# rc.d links, as `/etc/init.d/<name> enable` makes them
for s in "$R"/etc/init.d/*; do
    n=$(basename "$s")
    st=$(sed -n 's/^START=//p' "$s" | head -1)
    sp=$(sed -n 's/^STOP=//p' "$s" | head -1)
    [ -n "$st" ] && ln -sf "../init.d/$n" "$R/etc/rc.d/S$st$n"
    [ -n "$sp" ] && ln -sf "../init.d/$n" "$R/etc/rc.d/K$sp$n"
done
rm -f "$R"/etc/rc.d/*owrtns-test

# ---- smoke checks: every binary resolves its libraries inside the rootfs
for b in usr/sbin/procd usr/sbin/ubusd usr/bin/ubus usr/bin/uci usr/sbin/rpcd usr/sbin/netifd \
         usr/sbin/logd usr/bin/ucode usr/bin/jsonpath usr/sbin/uhttpd bin/busybox usr/sbin/dnsmasq \
         usr/sbin/nft "usr/bin/$PYVER"; do
    [ -e "$R/$b" ] || die "missing /$b in the root filesystem"
done
chroot "$R" /usr/bin/python3 -c 'import ubus, pyroute2, paho.mqtt.client, nftables; assert ubus.LENIENT_SIGNATURE == 1' \
    || die "python in the root filesystem cannot import ubus/pyroute2/paho/nftables"
echo "$KEY" >"$W/key"
touch "$W/complete"
echo "openwrt-build: done in $(( $(date +%s) - T0 )) s, rootfs $(du -sh "$R" | cut -f1)" >&2
rm -rf "$W/build" "$W/pyubus-src" "$W/pyubus-wheel" "$W/probe" "$W/probe.c"
rm -rf "$OUT"
mv "$W" "$OUT"
ln -sfn "$KEY" "$CACHE/current"
# Keep this build and the one before it (a router booted from it may still be running);
# older keys and broken partial builds go. We hold the lock, so no build is in progress.
ls -1dt "$CACHE"/*/ 2>/dev/null | sed 's:/$::' | while read -r d; do
    case "$d" in */current) continue;; esac
    echo "$d"
done | tail -n +3 | while read -r d; do rm -rf "$d"; done
rm -rf "$CACHE"/*.partial
echo "$OUT"
