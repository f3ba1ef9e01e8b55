#!/usr/bin/env bash
# Updates through Debian's own machinery (issue 19), in a Debian bookworm root, as root:
#   CLINIC_TOOLS=DIR .ci/apt-update-test.sh PATH/TO/vitals-hub_VERSION_ARCH.deb
# (DIR holds `vitals-hub` with the clinic feature, for `pki`, and `vitals-clinic`, as for
# .ci/deb-root-test.sh.) From the one .deb it makes two more by repacking (dpkg-deb): VERSION+upd2
# (same binary, a newer version) and VERSION+upd3 (broken: its daemon exits before READY). A test
# key minted here signs the clinic's repository (packaging/apt/publish.sh, reprepro), served by
# python3's http.server on 127.0.0.1; another key signs a second repository, and a third is
# unsigned. In the root (apt, dpkg and unattended-upgrades of bookworm):
#   setup      `vitals-hub setup … --apt-url http://127.0.0.1:PORT/good --apt-key …` installs the
#              source, pins, unattended-upgrades config and window;
#   (b), (c)   apt refuses the unsigned repository and the one signed by another key;
#   (a)        unattended-upgrade (the real program, with the generated config) upgrades to +upd2;
#              the daemon restarted on it uploads; `update-check` passes it (timed: the figure);
#   (d)        a downgrade is refused: unattended-upgrades keeps +upd2 when the suite offers less;
#   (e)        +upd3 is published and taken; its daemon never reaches READY; `update-check` rolls
#              back to +upd2 from the kept package, pins +upd3 away, and the daemon records the
#              failure in the store's events (error), shown by `vitals-hub status`;
# after every step: hub.toml's hash unchanged, the store opens and still holds its readings.
# The root is .ci/deb-root-test.sh's, from the same cache mechanism (.ci/debian-root.sh) with
# unattended-upgrades added (its own key in $DEB_ROOT_CACHE); `--bootstrap-only` in place of the
# .deb only makes the cache. No systemd in a chroot: the test starts the daemon and the check itself,
# where a hub's postinst starts vitals-hub-update-check.service. Skips when not root or when the
# mirror is unreachable (under CI=true: fails). Prints its wall time and the upgrade's.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
started=$SECONDS

skip() {
    echo "apt-update-test: skipped: $*"
    if [ "${CI:-}" = true ]; then
        echo "apt-update-test: CI=true: failing instead of skipping" >&2
        exit 1
    fi
    exit 0
}
packages="bluez,adduser,dbus,unattended-upgrades"
log_name=debootstrap-apt.log
host_tools="reprepro=reprepro gpg=gnupg"
# shellcheck source=.ci/debian-root.sh
. .ci/debian-root.sh
[ "${1:-}" = --bootstrap-only ] && exit 0

deb=$(realpath "${1:?usage: .ci/apt-update-test.sh PATH/TO/vitals-hub_VERSION_ARCH.deb}")
tools=${CLINIC_TOOLS:?set CLINIC_TOOLS to a directory holding vitals-hub (clinic feature) and vitals-clinic}
work=$(mktemp -d /var/tmp/vitals-hub-apt.XXXXXX)
root=$work/root
mkdir -p "$root"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
debian_root_unpack "$root"
# Debian's own sources are not this test's business (and need the network): the clinic's only.
rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*

in_root() { chroot "$root" "$@"; }
fail=0
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then echo "   ok: $what"; else echo "   FAIL: $what" >&2; fail=1; fi
}
show() { # COMMAND... in the root, output indented
    echo "\$ $*"
    local rc=0
    in_root "$@" >"$work/out" 2>&1 || rc=$?
    sed 's/^/    /' "$work/out" | tail -"${SHOW_LINES:-25}"
    [ "$rc" -eq 0 ] || echo "    (exit $rc)"
    return "$rc"
}
# shellcheck disable=SC2016 # dpkg-query's own format variable
installed() { in_root dpkg-query -W -f='${Version}' vitals-hub; }

# -- three packages from one
v1=$(dpkg-deb -f "$deb" Version)
v2="$v1+upd2"
v3="$v1+upd3"
repack() { # VERSION OUT [broken]
    local d=$work/pkg-$1
    dpkg-deb -R "$deb" "$d"
    sed -i "s/^Version: .*/Version: $1/" "$d/DEBIAN/control"
    if [ "${3:-}" = broken ]; then
        # A build whose daemon fails before READY; every other command still works (the check
        # itself runs from this package, as it would on a hub).
        mkdir -p "$d/usr/lib/vitals-hub-broken"
        mv "$d/usr/bin/vitals-hub" "$d/usr/lib/vitals-hub-broken/vitals-hub"
        # shellcheck disable=SC2016 # the script's own variables
        printf '#!/bin/sh\nif [ "$1" = run ]; then echo "this build is broken on purpose" >&2; exit 70; fi\nexec /usr/lib/vitals-hub-broken/vitals-hub "$@"\n' >"$d/usr/bin/vitals-hub"
        chmod 755 "$d/usr/bin/vitals-hub"
        (cd "$d" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
            while read -r f; do grep -qx "/$f" DEBIAN/conffiles 2>/dev/null || md5sum "$f"; done >DEBIAN/md5sums)
    fi
    dpkg-deb --root-owner-group -Zxz --build "$d" "$2" >/dev/null
}
repack "$v2" "$work/hub2.deb"
repack "$v3" "$work/hub3.deb" broken

# -- keys and repositories
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key 'Test clinic packages <apt@clinic.test>' ed25519 sign 1d 2>/dev/null
gpg --batch --passphrase '' --quick-gen-key 'Someone else <evil@example.test>' ed25519 sign 1d 2>/dev/null
fpr_of() { gpg --with-colons --list-keys "$1" | awk -F: '/^fpr/{print $10; exit}'; }
good=$(fpr_of apt@clinic.test)
evil=$(fpr_of evil@example.test)
srv=$work/srv
mkdir -p "$srv"
publish=$here/packaging/apt/publish.sh
"$publish" init "$work/good" --key "$good" --arch "$arch" >/dev/null
"$publish" init "$work/evil" --key "$evil" --arch "$arch" >/dev/null
"$publish" key "$work/good" "$work/vitals-clinic.gpg" >/dev/null
"$publish" add "$work/good" canary "$deb"
"$publish" promote "$work/good" "$v1"
"$publish" add "$work/evil" stable "$work/hub2.deb" >/dev/null
cp -r "$work/good" "$work/unsigned"
rm -f "$work"/unsigned/dists/*/InRelease "$work"/unsigned/dists/*/Release.gpg
for r in good evil unsigned; do ln -s "$work/$r" "$srv/$r"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$srv" "$port" >"$work/http.log" 2>&1 &
pids+=($!)
base=http://127.0.0.1:$port

# -- the hub, installed from its image (dpkg -i), enrolled, with a clinic
cp "$deb" "$root/tmp/hub1.deb"
in_root dpkg -i /tmp/hub1.deb >"$work/install.log" 2>&1 || { tail -20 "$work/install.log"; exit 1; }
"$tools/vitals-hub" pki "$root/root/pki" --patient pat-0042 >/dev/null
"$tools/vitals-clinic" serve --listen 127.0.0.1:18444 --cert "$root/root/pki/receiver.crt" \
    --key "$root/root/pki/receiver.key" --client-ca "$root/root/pki/ca.crt" \
    --db "$root/root/pki/clinic.db" >"$work/clinic.log" 2>&1 &
pids+=($!)
cp "$work/vitals-clinic.gpg" "$root/root/vitals-clinic.gpg"
echo "-- setup, with the clinic's repository"
SHOW_LINES=40 show vitals-hub setup --clinic-url https://localhost:18444/fhir --patient pat-0042 \
    --ca /root/pki/ca.crt --cert /root/pki/hub.crt --key /root/pki/hub.key --force \
    --apt-url "$base/good" --apt-suite stable --apt-key /root/vitals-clinic.gpg \
    --apt-insecure-localhost --update-window 02:00-04:00 || { echo "setup failed" >&2; exit 1; }
show cat /etc/apt/sources.list.d/vitals-clinic.sources || fail=1
in_root sh -c 'cat >>/etc/vitals-hub/hub.toml' <<'TOML'

[ble]
enabled = false

[[device]]
name = "sim-meter"
kind = "simulated"
profile = "glucose"
interval_secs = 1
TOML
in_root sed -i 's|^\[uplink\]$|[uplink]\nrequire_clock_sync = false\nhub_mac = "02:00:5E:10:00:02"|' /etc/vitals-hub/hub.toml
conf_hash=$(sha256sum "$root/etc/vitals-hub/hub.toml" | cut -d' ' -f1)

daemon_pid=""
start_daemon() { # the service as its unit runs it (no systemd in a chroot)
    chroot --userspec=vitals-hub:vitals-hub "$root" vitals-hub run --config /etc/vitals-hub/hub.toml \
        >>"$work/run.log" 2>&1 &
    daemon_pid=$!
    pids+=("$daemon_pid")
}
stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=""
    fi
}
readings() { # how many readings the store holds (export, read-only beside the daemon)
    in_root vitals-hub export --from 2000-01-01 --to 2100-01-01 --format csv --out /tmp/export.csv >/dev/null 2>&1 &&
        in_root sh -c 'tail -n +2 /tmp/export.csv | wc -l'
}
survived() { # hub.toml unchanged; the store opens and holds at least as many readings as before
    local now
    [ "$(sha256sum "$root/etc/vitals-hub/hub.toml" | cut -d' ' -f1)" = "$conf_hash" ] || {
        echo "     hub.toml changed" >&2
        return 1
    }
    in_root vitals-hub status >/dev/null 2>&1 || { echo "     status fails" >&2; return 1; }
    now=$(readings) || { echo "     export fails" >&2; return 1; }
    echo "     readings: $now (before: $kept_readings)"
    [ "$now" -ge "$kept_readings" ] && [ "$now" -gt 0 ] || return 1
    kept_readings=$now
}
kept_readings=0
start_daemon
sleep 8
stop_daemon
check "version $v1 ran and stored readings; hub.toml and store intact" survived

echo "-- (b) an unsigned repository is refused by apt"
in_root sed -i "s|^URIs: .*|URIs: $base/unsigned|" /etc/apt/sources.list.d/vitals-clinic.sources
show apt-get update || true
check "apt refuses the unsigned repository" grep -q -E "not signed|NO_PUBKEY|is not signed|no longer signed" "$work/out"
echo "-- (c) a repository signed by another key is refused by apt"
in_root sed -i "s|^URIs: .*|URIs: $base/evil|" /etc/apt/sources.list.d/vitals-clinic.sources
show apt-get update || true
check "apt refuses the wrongly signed repository" grep -q -E "NO_PUBKEY|not signed|signatures couldn't be verified|invalid" "$work/out"
check "nothing of the other key's repository is a candidate" sh -c \
    "! chroot '$root' apt-cache policy vitals-hub | grep -q 'upd2'"
in_root sed -i "s|^URIs: .*|URIs: $base/good|" /etc/apt/sources.list.d/vitals-clinic.sources

echo "-- (a) $v2 in canary, promoted to stable; unattended-upgrade takes it"
"$publish" add "$work/good" canary "$work/hub2.deb"
"$publish" promote "$work/good" "$v2"
show apt-get update || fail=1
t0=$(date +%s.%N)
SHOW_LINES=12 show unattended-upgrade -v || fail=1
check "unattended-upgrade installed $v2" test "$(installed)" = "$v2"
check "postinst recorded the pending upgrade ($v1 -> $v2)" grep -q "to=$v2" "$root/var/lib/vitals-hub-update/pending"
start_daemon
show vitals-hub update-check --timeout-secs 120 --poll-secs 1 || fail=1
t1=$(date +%s.%N)
check "the health gate passed $v2" grep -q "^ok $v2" "$root/var/lib/vitals-hub-update/last-outcome"
upgrade_secs=$(echo "$t1 - $t0" | bc 2>/dev/null || python3 -c "print(round($t1 - $t0, 1))")
echo "   upgrade with health check (unattended-upgrade + restart + first upload + update-check): $upgrade_secs s"
sleep 2
stop_daemon
check "hub.toml and store intact after the upgrade" survived

echo "-- (d) a downgrade is refused"
rm -rf "$work/good/db" "$work/good/dists" "$work/good/pool"
"$publish" add "$work/good" stable "$deb" >/dev/null
show apt-get update || fail=1
SHOW_LINES=8 show unattended-upgrade -v || true
check "unattended-upgrade kept $v2 with only $v1 offered" test "$(installed)" = "$v2"
show apt-get install -y vitals-hub="$v1" || true
check "apt-get refuses the downgrade without --allow-downgrades" grep -q "without --allow-downgrades" "$work/out"
check "a plain apt-get install of $v1 leaves $v2" test "$(installed)" = "$v2"

echo "-- (e) a broken $v3 is rolled back"
"$publish" add "$work/good" stable "$work/hub2.deb" >/dev/null
"$publish" add "$work/good" canary "$work/hub3.deb" >/dev/null
"$publish" promote "$work/good" "$v3" >/dev/null
# apt asks with If-Modified-Since and the test's web server answers to the second: a Release
# rewritten within the second of an earlier fetch would be "not modified". Fetch the lists afresh.
in_root sh -c 'rm -f /var/lib/apt/lists/*127.0.0.1*'
show apt-get update || fail=1
SHOW_LINES=8 show unattended-upgrade -v || fail=1
check "unattended-upgrade installed $v3" test "$(installed)" = "$v3"
check "postinst kept $v2's package for the rollback" sh -c \
    "[ \"\$(dpkg-deb -f '$root/var/lib/vitals-hub-update/previous.deb' Version)\" = '$v2' ]"
start_daemon
sleep 2
show vitals-hub update-check --timeout-secs 10 --poll-secs 1 || true
check "update-check rolled $v3 back" grep -q "^rolled-back $v3 to $v2" "$root/var/lib/vitals-hub-update/last-outcome"
check "$v2 is installed again" test "$(installed)" = "$v2"
check "$v3 is pinned away" grep -q "Pin: version $v3" "$root/etc/apt/preferences.d/00-vitals-hub-rolled-back.pref"
show apt-get update >/dev/null || true
SHOW_LINES=4 show unattended-upgrade -v || true
check "unattended-upgrade does not take $v3 again" test "$(installed)" = "$v2"
start_daemon
sleep 6
stop_daemon
show vitals-hub status || true
check "the rollback is in the store's events (error), on its way upstream" sh -c \
    "chroot '$root' vitals-hub status --json | grep -q 'rolled-back $v3'"
check "hub.toml and store intact after the rollback" survived

echo "apt-update-test: $(( SECONDS - started )) s (upgrade with health check: $upgrade_secs s)"
if [ "$fail" -ne 0 ]; then
    echo "apt-update-test: FAILED" >&2
    exit 1
fi
echo "apt-update-test: every step passed"
