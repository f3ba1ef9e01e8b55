#!/usr/bin/env bash
# The installed hub as a technician meets it (issue 13), in a Debian bookworm root:
#   .ci/deb-root-test.sh PATH/TO/vitals-hub_VERSION_ARCH.deb   (this machine's architecture)
# dpkg installs the .deb; then the README's visit, as root: setup (against a clinic receiver on
# 127.0.0.1 inside the root), config check, sync --now before the service ever ran, status; the
# service's own start (`vitals-hub run` as the service user vitals-hub, as the unit runs it);
# then as root again status, export, sync --now, keys rotate, commission; the service once more;
# wipe; purge. After every step no file under /var/lib/vitals-hub may belong to anyone but
# vitals-hub, and purge must leave nothing behind.
#
# The bookworm root (debootstrap minbase plus the package's dependencies) is cached as a tarball in
# $DEB_ROOT_CACHE (default /var/cache/vitals-hub-ci), keyed by a hash of the suite, architecture
# and package list, outside the clone (.ci/debian-root.sh, shared with .ci/apt-update-test.sh);
# each run unpacks a fresh copy. `--bootstrap-only` in place of the .deb: only make the cache. Skips (exit 0, saying why)
# when not root, or when debootstrap cannot reach the Debian mirror. Prints its own wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

skip() { # under CI=true a test that cannot run is a failure, never a pass
    echo "deb-root-test: skipped: $*"
    if [ "${CI:-}" = true ]; then
        echo "deb-root-test: CI=true: failing instead of skipping" >&2
        exit 1
    fi
    exit 0
}
packages="bluez,adduser,dbus"
log_name=debootstrap.log
# shellcheck source=.ci/debian-root.sh
. .ci/debian-root.sh
[ "${1:-}" = --bootstrap-only ] && exit 0
deb=$(realpath "${1:?usage: .ci/deb-root-test.sh PATH/TO/vitals-hub_VERSION_ARCH.deb}")

root=$(mktemp -d /var/tmp/vitals-hub-root.XXXXXX)
cleanup() {
    pkill_pids=$(cat "$root/run/test-pids" 2>/dev/null || true)
    for p in $pkill_pids; do kill "$p" 2>/dev/null || true; done
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
debian_root_unpack "$root"
: >"$root/run/test-pids"

in_root() { chroot "$root" "$@"; }
fail=0
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then echo "   ok: $what"; else echo "   FAIL: $what" >&2; fail=1; fi
}
step() { # what the technician types, then its output (indented)
    echo "\$ $*"
    local rc=0
    in_root "$@" >"$root/tmp/out" 2>&1 || rc=$?
    sed 's/^/    /' "$root/tmp/out"
    [ "$rc" -eq 0 ] || echo "    (exit $rc)"
    return "$rc"
}
owned() { # every file under the state directory belongs to the service user
    local wrong
    wrong=$(in_root find /var/lib/vitals-hub ! -user vitals-hub -printf '%p %u\n')
    if [ -n "$wrong" ]; then
        echo "     not the service user's: $wrong" >&2
        return 1
    fi
}

echo "-- dpkg -i $(basename "$deb")"
cp "$deb" "$root/tmp/vitals-hub.deb"
in_root dpkg -i /tmp/vitals-hub.deb >"$root/tmp/install.log" 2>&1 || { tail -20 "$root/tmp/install.log"; exit 1; }
check "state directory owned by vitals-hub after install" owned

# The clinic: `vitals-clinic serve` on 127.0.0.1 (the chroot shares the host's network). With
# CLINIC_DEB (the clinic's own .deb of this architecture) it is installed in the same root and runs
# from its package, as its unit does: `vitals-clinic serve --config /etc/vitals-clinic/clinic.toml`
# as the user vitals-clinic, the packaged config edited only where this test's files and ports
# differ. Otherwise it runs from the host's clinic-side build. Either way the development PKI comes
# from $CLINIC_TOOLS (`vitals-hub` with the clinic feature: `pki`), written into the root, where
# setup reads it; the hub is enrolled for pat-0042.
tools=${CLINIC_TOOLS:?set CLINIC_TOOLS to a directory holding vitals-hub (clinic feature) and vitals-clinic}
"$tools/vitals-hub" pki "$root/root/pki" --patient pat-0042 >/dev/null
clinic_owned() { # the clinic's state directory and config, as its package leaves them (names
    # resolved inside the root: its users are not the host's)
    [ "$(in_root stat -c '%a %U' /var/lib/vitals-clinic)" = "700 vitals-clinic" ] &&
        [ "$(in_root stat -c '%a %U %G' /etc/vitals-clinic)" = "750 root vitals-clinic" ] &&
        [ "$(in_root stat -c '%a %U %G' /etc/vitals-clinic/clinic.toml)" = "640 root vitals-clinic" ]
}
if [ -n "${CLINIC_DEB:-}" ]; then
    echo "-- dpkg -i $(basename "$CLINIC_DEB") (the clinic, from its package)"
    cp "$CLINIC_DEB" "$root/tmp/vitals-clinic.deb"
    in_root dpkg -i /tmp/vitals-clinic.deb >"$root/tmp/clinic-install.log" 2>&1 ||
        { tail -20 "$root/tmp/clinic-install.log"; exit 1; }
    check "vitals-clinic: user, 0700 state directory, root:vitals-clinic config" clinic_owned
    for f in receiver.crt receiver.key ca.crt; do
        install -m 0640 "$root/root/pki/$f" "$root/etc/vitals-clinic/$f"
        in_root chgrp vitals-clinic "/etc/vitals-clinic/$f"
    done
    install -m 0600 "$root/root/pki/clinic.db" "$root/var/lib/vitals-clinic/clinic.db"
    in_root chown vitals-clinic:vitals-clinic /var/lib/vitals-clinic/clinic.db
    # This test's ports and files; the console uses the ingest's certificate here (a real clinic
    # gives it its own web certificate).
    in_root sed -i \
        -e 's|^listen = .*|listen = "127.0.0.1:18443"|' \
        -e 's|^cert = .*|cert = "/etc/vitals-clinic/receiver.crt"|' \
        -e 's|^key = .*|key = "/etc/vitals-clinic/receiver.key"|' \
        -e 's|^client_ca = .*|client_ca = "/etc/vitals-clinic/ca.crt"|' \
        -e 's|^console_listen = .*|console_listen = "127.0.0.1:19443"|' \
        -e 's|^console_cert = .*|console_cert = "/etc/vitals-clinic/receiver.crt"|' \
        -e 's|^console_key = .*|console_key = "/etc/vitals-clinic/receiver.key"|' \
        /etc/vitals-clinic/clinic.toml
    chroot --userspec=vitals-clinic:vitals-clinic "$root" \
        vitals-clinic serve --config /etc/vitals-clinic/clinic.toml >"$root/tmp/receiver.log" 2>&1 &
    echo $! >>"$root/run/test-pids"
else
    "$tools/vitals-clinic" serve --listen 127.0.0.1:18443 --cert "$root/root/pki/receiver.crt" \
        --key "$root/root/pki/receiver.key" --client-ca "$root/root/pki/ca.crt" \
        --db "$root/root/pki/clinic.db" >"$root/tmp/receiver.log" 2>&1 &
    echo $! >>"$root/run/test-pids"
fi
for _ in $(seq 50); do
    grep -q 'listening\|https://' "$root/tmp/receiver.log" 2>/dev/null && break
    sleep 0.2
done
sleep 1

echo "-- the visit, as root"
step vitals-hub setup --clinic-url https://localhost:18443/fhir --patient pat-0042 \
    --ca /root/pki/ca.crt --cert /root/pki/hub.crt --key /root/pki/hub.key --force ||
    { echo "setup failed" >&2; exit 1; }
check "owned after setup" owned
# Simulated devices for the visit, no radio, uploads without NTP (a chroot has none).
in_root sh -c 'cat >>/etc/vitals-hub/hub.toml' <<'TOML'

[ble]
enabled = false

[[device]]
name = "sim-meter"
kind = "simulated"
profile = "glucose"
interval_secs = 1
TOML
# The chroot has no /sys/class/net to take the hub's MAC address from: given here.
in_root sed -i 's|^\[uplink\]$|[uplink]\nrequire_clock_sync = false\nhub_mac = "02:00:5E:10:00:02"|' /etc/vitals-hub/hub.toml
step vitals-hub config check || fail=1
step vitals-hub sync --now || fail=1
check "owned after sync --now before the first start" owned
step vitals-hub status || fail=1
check "owned after status" owned

echo "-- the service's own start: vitals-hub run as vitals-hub (as the unit runs it)"
# chroot itself (not a shell function) in the background, so that $! is the hub's pid.
chroot --userspec=vitals-hub:vitals-hub "$root" vitals-hub run --config /etc/vitals-hub/hub.toml >"$root/tmp/run.log" 2>&1 &
hub=$!
sleep 5
kill -TERM "$hub"
if wait "$hub"; then echo "   ok: the service ran and stopped cleanly"; else
    echo "   FAIL: the service as vitals-hub failed:" >&2
    tail -5 "$root/tmp/run.log" >&2
    fail=1
fi
check "owned after the service's run" owned

echo "-- root commands after the service"
step vitals-hub status || fail=1
step vitals-hub export --from 2000-01-01 --to 2100-01-01 --format csv --out /root/export.csv || fail=1
step vitals-hub sync --now || fail=1
step vitals-hub keys rotate || fail=1
step vitals-hub commission --no-upload --scan-seconds 0 || true # FAILs the radio line: no BlueZ here
# Only the radio may fail here (no BlueZ in a chroot): every other line of commission's checklist
# (identity, clinic, patient, certificate, clock, backlog) must hold.
only_radio_fails() {
    local other
    other=$(grep -E '^ *FAIL' "$root/tmp/out" | grep -v -E 'ble adapter|BlueZ|radio' || true)
    if [ -n "$other" ]; then
        echo "     failing lines besides the radio: $other" >&2
        return 1
    fi
}
check "commission: nothing but the radio fails" only_radio_fails
step vitals-hub doctor || true # FAILs `ble adapter`: no BlueZ here
check "doctor: nothing but the radio fails (patient, clinic, modes, certificate, backlog hold)" only_radio_fails
check "doctor: the clinic knows the enrolled patient" grep -q -E '^ *PASS +patient ' "$root/tmp/out"
step vitals-hub devices || fail=1
check "owned after status, export, sync, keys rotate, commission, doctor, devices" owned
chroot --userspec=vitals-hub:vitals-hub "$root" vitals-hub run --config /etc/vitals-hub/hub.toml >"$root/tmp/run2.log" 2>&1 &
hub=$!
sleep 3
kill -TERM "$hub"
if wait "$hub"; then echo "   ok: the service starts again"; else
    echo "   FAIL: the service's second start:" >&2
    tail -5 "$root/tmp/run2.log" >&2
    fail=1
fi
check "owned after the second run" owned
step vitals-hub wipe --yes || fail=1
check "owned after wipe (its lock file)" owned

echo "-- dpkg --purge vitals-hub"
in_root dpkg --purge vitals-hub >/dev/null 2>&1 || fail=1
check "/var/lib/vitals-hub gone" test ! -e "$root/var/lib/vitals-hub"
check "/etc/vitals-hub gone" test ! -e "$root/etc/vitals-hub"
check "user gone" sh -c "! chroot '$root' getent passwd vitals-hub >/dev/null"

if [ -n "${CLINIC_DEB:-}" ]; then
    echo "-- the clinic from its package"
    console_login() {
        [ "$(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1:19443/login)" = 200 ]
    }
    check "the packaged clinic's console answers its login page" console_login
    check "vitals-clinic hub list (as vitals-clinic) shows the enrolled hub" sh -c \
        "chroot --userspec=vitals-clinic:vitals-clinic '$root' vitals-clinic hub list --db /var/lib/vitals-clinic/clinic.db | grep -q pat-0042"
    check "the clinic's store stayed the service user's" sh -c \
        "[ -z \"\$(chroot '$root' find /var/lib/vitals-clinic ! -user vitals-clinic)\" ]"
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$root/run/test-pids"
    sleep 1
    echo "-- dpkg --purge vitals-clinic"
    in_root dpkg --purge vitals-clinic >/dev/null 2>&1 || fail=1
    check "/var/lib/vitals-clinic gone" test ! -e "$root/var/lib/vitals-clinic"
    check "/etc/vitals-clinic gone" test ! -e "$root/etc/vitals-clinic"
    check "user vitals-clinic gone" sh -c "! chroot '$root' getent passwd vitals-clinic >/dev/null"
fi

echo "deb-root-test: $((SECONDS - started)) s"
if [ "$fail" -ne 0 ]; then
    echo "deb-root-test: FAILED" >&2
    exit 1
fi
echo "deb-root-test: every command worked and the state stayed the service user's"
