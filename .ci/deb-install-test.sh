#!/usr/bin/env bash
# Installs a vitals-hub .deb of this machine's architecture in a throwaway Debian root
# (debootstrap, minbase) and checks what the maintainer scripts do: the user and group, the
# directories and their modes, the enabled-not-started unit, a reinstall (postinst runs again, as
# on an upgrade), remove (data kept) and purge (data, config, credentials and user gone).
#   .ci/deb-install-test.sh PATH/TO/vitals-hub_VERSION_amd64.deb
#   .ci/deb-install-test.sh --prepare      (only bootstrap the root)
# Not run by .ci/run: it needs root, a few minutes and the Debian archive. DEB_TEST_ROOT (default
# /var/tmp/vitals-hub-deb-root) is kept between runs so that only the first one bootstraps; the
# package is purged again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

arg=${1:?usage: .ci/deb-install-test.sh PATH/TO/vitals-hub_VERSION_ARCH.deb | --prepare}
root=${DEB_TEST_ROOT:-/var/tmp/vitals-hub-deb-root}
suite=${DEB_TEST_SUITE:-bookworm}
[ "$(id -u)" -eq 0 ] || { echo "deb-install-test: needs root (chroot)" >&2; exit 1; }

if ! command -v debootstrap >/dev/null; then
    echo "-- installing debootstrap (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi
if [ ! -x "$root/usr/bin/apt-get" ]; then
    echo "-- debootstrap --variant=minbase $suite $root"
    debootstrap --variant=minbase "$suite" "$root" >/dev/null
fi
if [ "$arg" = --prepare ]; then
    echo "deb-install-test: $root ready"
    exit 0
fi
deb=$(realpath "$arg")
cp /etc/resolv.conf "$root/etc/resolv.conf"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
# Nothing started inside the chroot (there is no systemd running in it anyway).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

in_root() { chroot "$root" "$@"; }
fail=0
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then echo "   ok: $what"; else echo "   FAIL: $what" >&2; fail=1; fi
}
mode_owner() { in_root stat -c '%a %U:%G' "$1" 2>/dev/null; }
is() { [ "$1" = "$2" ] || { echo "     got '$1', want '$2'" >&2; return 1; }; }
user_ok() {
    in_root getent passwd vitals-hub |
        awk -F: '$3 < 1000 && $6 == "/var/lib/vitals-hub" && $7 == "/usr/sbin/nologin" {ok=1} END {exit !ok}'
}
no_password() { in_root getent shadow vitals-hub | awk -F: '$2 ~ /^[*!]/ {ok=1} END {exit !ok}'; }
in_bluetooth() { in_root id -nG vitals-hub | tr ' ' '\n' | grep -qx bluetooth; }
no_user() { ! in_root getent passwd vitals-hub >/dev/null; }
has_group() { in_root getent group vitals-hub >/dev/null; }
no_group() { ! in_root getent group vitals-hub >/dev/null; }
no_overrides() { ! in_root dpkg-statoverride --list | grep -q vitals-hub; }

cp "$deb" "$root/tmp/vitals-hub.deb"
export DEBIAN_FRONTEND=noninteractive
in_root apt-get purge -y -qq vitals-hub >/dev/null 2>&1 || true

installed_state() {
    check "user vitals-hub: system uid, home /var/lib/vitals-hub, shell nologin" user_ok
    check "no password for vitals-hub (shadow field starts with * or !)" no_password
    check "group vitals-hub exists" has_group
    check "vitals-hub is in group bluetooth" in_bluetooth
    check "/var/lib/vitals-hub 700 vitals-hub:vitals-hub" is "$(mode_owner /var/lib/vitals-hub)" "700 vitals-hub:vitals-hub"
    check "/etc/vitals-hub 750 root:vitals-hub" is "$(mode_owner /etc/vitals-hub)" "750 root:vitals-hub"
    check "/etc/vitals-hub/hub.toml 640 root:vitals-hub" is "$(mode_owner /etc/vitals-hub/hub.toml)" "640 root:vitals-hub"
    check "/usr/bin/vitals-hub 755 root:root" is "$(mode_owner /usr/bin/vitals-hub)" "755 root:root"
    check "unit enabled (multi-user.target.wants symlink)" \
        test -L "$root/etc/systemd/system/multi-user.target.wants/vitals-hub.service"
    check "vitals-hub --version runs" in_root /usr/bin/vitals-hub --version
}

echo "-- apt-get install ./vitals-hub.deb (pulls bluez and adduser)"
in_root apt-get install -y -qq --no-install-recommends /tmp/vitals-hub.deb >"$root/tmp/install.log" 2>&1 ||
    { tail -30 "$root/tmp/install.log"; exit 1; }
installed_state

echo "-- data as a configured hub has it, then a reinstall (postinst configure runs again)"
in_root install -d -m 0700 -o vitals-hub -g vitals-hub /var/lib/vitals-hub/keys
in_root sh -c 'echo x > /var/lib/vitals-hub/store.db && head -c 32 /dev/urandom > /var/lib/vitals-hub/keys/kek'
in_root sh -c 'echo "# edited by the technician" >> /etc/vitals-hub/hub.toml'
in_root install -d -m 0700 /etc/credstore.encrypted
in_root sh -c 'echo other > /etc/credstore.encrypted/other.cred'
in_root apt-get install -y -qq --reinstall -o Dpkg::Options::=--force-confold /tmp/vitals-hub.deb >"$root/tmp/reinstall.log" 2>&1 ||
    { tail -30 "$root/tmp/reinstall.log"; exit 1; }
installed_state
check "reinstall kept the edited hub.toml" grep -q 'edited by the technician' "$root/etc/vitals-hub/hub.toml"
check "reinstall kept the store" test -f "$root/var/lib/vitals-hub/store.db"

echo "-- apt-get remove vitals-hub"
in_root apt-get remove -y -qq vitals-hub >/dev/null
check "binary gone" test ! -e "$root/usr/bin/vitals-hub"
check "store and keys kept" test -f "$root/var/lib/vitals-hub/store.db" -a -f "$root/var/lib/vitals-hub/keys/kek"
check "config kept" grep -q 'edited by the technician' "$root/etc/vitals-hub/hub.toml"
check "user kept" in_root getent passwd vitals-hub

echo "-- apt-get purge vitals-hub"
in_root apt-get purge -y -qq vitals-hub >/dev/null
check "/var/lib/vitals-hub gone" test ! -e "$root/var/lib/vitals-hub"
check "/etc/vitals-hub gone" test ! -e "$root/etc/vitals-hub"
check "the credential store untouched (the package writes none)" test -f "$root/etc/credstore.encrypted/other.cred"
check "user gone" no_user
check "group gone" no_group
check "no stat overrides left" no_overrides
check "unit symlink gone" test ! -e "$root/etc/systemd/system/multi-user.target.wants/vitals-hub.service"
in_root rm -f /etc/credstore.encrypted/other.cred

if [ "$fail" -ne 0 ]; then
    echo "deb-install-test: FAILED" >&2
    exit 1
fi
echo "deb-install-test: install, reinstall, remove and purge ok"
