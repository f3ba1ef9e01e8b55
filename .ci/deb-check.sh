#!/usr/bin/env bash
# Static checks of a built vitals-hub .deb, cheap enough for every CI run:
#   .ci/deb-check.sh PATH/TO/vitals-hub_*.deb
# - the file list has the binary, the unit, the README and the example config, with their modes;
# - the control file names the package, its architecture and its dependencies;
# - /etc/vitals-hub/hub.toml is a conffile;
# - the maintainer scripts parse (sh -n, and shellcheck where installed), #DEBHELPER# was filled in,
#   postinst creates the system user and the 0700 state directory, does not start the unit on a
#   fresh install, and postrm erases the data only on purge;
# - the packaged unit is the one in systemd/;
# - the packaged binary runs `--version` (under qemu-aarch64 when the package is arm64 and this
#   machine is not) and prints the package's version.
# Installing the package (user, directories, remove, purge) is checked by .ci/deb-install-test.sh,
# which needs a throwaway root and is not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:?usage: .ci/deb-check.sh PATH/TO/vitals-hub_VERSION_ARCH.deb}
[ -f "$deb" ] || { echo "deb-check: no such file: $deb" >&2; exit 1; }

fail=0
bad() {
    echo "deb-check FAIL: $*" >&2
    fail=1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- $deb"
dpkg-deb -I "$deb" >"$work/info"
dpkg-deb -c "$deb" >"$work/list"
dpkg-deb -e "$deb" "$work/control"
dpkg-deb -x "$deb" "$work/root"

field() { dpkg-deb -f "$deb" "$1"; }
arch=$(field Architecture)
version=$(field Version)
echo "   Package: $(field Package)  Version: $version  Architecture: $arch"
echo "   Depends: $(field Depends)"
[ "$(field Package)" = vitals-hub ] || bad "Package is $(field Package), not vitals-hub"
# libc6 comes from $auto (dpkg-shlibdeps); for the cross build cargo-deb writes it arch-qualified,
# `libc6:arm64 (>= 2.36)`, the version of Debian's cross libc.
for dep in bluez adduser libc6; do
    field Depends | tr ',' '\n' | grep -Eq "^ *$dep(:$arch)?( |\$)" || bad "Depends lacks $dep"
done

# File list: "perms owner/group size date time path".
has_file() { # MODE PATH
    grep -Eq "^$1 (root/root|0/0) .* \./$2\$" "$work/list" || bad "file list lacks $1 root/root ./$2"
}
has_file -rwxr-xr-x usr/bin/vitals-hub
has_file -rw-r--r-- usr/share/doc/vitals-hub/README.md
has_file -rw-r----- etc/vitals-hub/hub.toml
unit=$(grep -Eo '\./(usr/)?lib/systemd/system/vitals-hub\.service$' "$work/list" || true)
if [ -z "$unit" ]; then
    bad "file list lacks lib/systemd/system/vitals-hub.service"
else
    cmp -s "$work/root/$unit" systemd/vitals-hub.service ||
        bad "packaged $unit differs from systemd/vitals-hub.service"
fi

# md5sums (written by .ci/deb-build.sh): every file but the conffiles, so `dpkg --verify` can tell
# a changed binary.
if [ -s "$work/control/md5sums" ]; then
    grep -q ' usr/bin/vitals-hub$' "$work/control/md5sums" || bad "md5sums lacks usr/bin/vitals-hub"
    if grep -q ' etc/' "$work/control/md5sums"; then bad "md5sums lists a conffile"; fi
else
    bad "no md5sums (build with .ci/deb-build.sh)"
fi
grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' \
    "$work/root/usr/share/doc/vitals-hub/copyright" || bad "the copyright file is not machine-readable (DEP-5)"
[ -f "$work/root/usr/share/doc/vitals-hub/changelog.Debian.gz" ] || bad "no changelog.Debian.gz"
grep -qx /etc/vitals-hub/hub.toml "$work/control/conffiles" 2>/dev/null ||
    bad "/etc/vitals-hub/hub.toml is not in conffiles"

for script in postinst prerm postrm; do
    f="$work/control/$script"
    if [ ! -x "$f" ]; then
        bad "no executable $script"
        continue
    fi
    sh -n "$f" || bad "$script does not parse (sh -n)"
    if grep -q '#DEBHELPER#' "$f"; then bad "$script still holds the #DEBHELPER# token"; fi
    head -1 "$f" | grep -qx '#!/bin/sh' || bad "$script does not start with #!/bin/sh"
    grep -qx 'set -e' "$f" || bad "$script lacks set -e"
done
if command -v shellcheck >/dev/null; then
    # The generated fragments are cargo-deb's (debhelper's); ours are checked in full by .ci/run.
    shellcheck -s sh -S warning "$work/control/postinst" "$work/control/prerm" "$work/control/postrm" ||
        bad "shellcheck found problems in the packaged scripts"
fi
grep -q 'adduser --system --group' "$work/control/postinst" || bad "postinst does not create the system user"
grep -q -- '--shell /usr/sbin/nologin' "$work/control/postinst" || bad "postinst gives the user a login shell"
# shellcheck disable=SC2016 # the literal text of postinst
grep -q 'chmod 0700 "$STATE_DIR"' "$work/control/postinst" || bad "postinst does not make the state directory 0700"
grep -q 'deb-systemd-helper' "$work/control/postinst" || bad "postinst has no generated systemd part"
# A fresh install must not start the unit (it has no config yet): only try-restart on upgrade.
# (The update health gate's own unit is started on an upgrade only: postinst's "Updates" part.)
# shellcheck disable=SC2016 # the literal text of the generated fragment
if grep -E 'deb-systemd-invoke (start|\$_dh_action)' "$work/control/postinst" |
    grep -vq 'vitals-hub-update-check\.service'; then
    bad "postinst starts the unit on install"
fi
grep -q 'deb-systemd-invoke stop' "$work/control/prerm" || bad "prerm does not stop the unit on remove"
awk '/^if \[ "\$1" = "purge" \]; then$/ {p=1} p && /rm -rf \/var\/lib\/vitals-hub/ {ok=1} END {exit !ok}' \
    "$work/control/postrm" || bad "postrm does not erase /var/lib/vitals-hub on purge"
if grep -Eq 'chpasswd|usermod .*-p|--password|--enable-password' "$work/control/postinst"; then
    bad "postinst sets a password"
fi

# The binary inside the package runs.
bin="$work/root/usr/bin/vitals-hub"
case "$arch" in
    arm64)
        if [ "$(uname -m)" = aarch64 ]; then
            run=("$bin")
        else
            run=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin")
        fi
        ;;
    amd64) run=("$bin") ;;
    *) run=() ;;
esac
if [ "${#run[@]}" -gt 0 ]; then
    out=$("${run[@]}" --version) || bad "vitals-hub --version failed (${run[*]})"
    echo "   ${run[0]##*/}: $out"
    # Debian version 0.1.0-1 -> upstream 0.1.0
    [ "$out" = "vitals-hub ${version%-*}" ] || bad "--version printed '$out', expected 'vitals-hub ${version%-*}'"
else
    echo "   no way to run an $arch binary here: --version not checked"
fi

if [ "$fail" -ne 0 ]; then
    echo "deb-check: $deb FAILED" >&2
    exit 1
fi
echo "deb-check: $deb ok ($(wc -l <"$work/list") entries)"
