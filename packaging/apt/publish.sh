#!/usr/bin/env bash
# The clinic's signed apt repository for the hub's packages (issue 19), around reprepro.
# Two suites: `canary` (a few hubs first) and `stable` (every hub); a version reaches stable only
# by promotion from canary. Release files are signed by the clinic's signing subkey with gpg
# (InRelease and Release.gpg); GNUPGHOME selects the keyring holding it. packaging/apt/README.md
# has the key ceremony.
#
#   publish.sh init    REPO --key KEYID [--origin NAME] [--arch "arm64 amd64"]
#   publish.sh add     REPO SUITE PACKAGE.deb...     (SUITE: canary, or stable for a hotfix)
#   publish.sh promote REPO VERSION [PACKAGE]        (canary's PACKAGE at VERSION into stable)
#   publish.sh list    REPO
#   publish.sh key     REPO OUT.gpg                  (the public key, binary, for Signed-By)
#
# REPO is the directory served over HTTPS as the repository's root (dists/, pool/) — its conf/
# and db/ are reprepro's own and must not be served (the reference nginx: deny them).
# Never a downgrade: `add` refuses a version not newer than the suite's, and `promote` one not
# newer than stable's. Exit 2 for bad usage, 1 when refused or failed; each error names the fix.
set -euo pipefail

SUITES="canary stable"
die() { echo "publish.sh: $*" >&2; exit 1; }
usage() { sed -n '7,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
need() { command -v "$1" >/dev/null || die "$1 is not installed; fix: apt-get install $2"; }

# The version of PACKAGE in SUITE of REPO, or nothing.
version_in() { # REPO SUITE PACKAGE
    # shellcheck disable=SC2016 # reprepro's own format variable
    reprepro -b "$1" --list-format '${version}\n' list "$2" "$3" 2>/dev/null | head -1
}
configured() { # REPO
    [ -f "$1/conf/distributions" ] || die "$1 is not a repository made by \`publish.sh init\`; fix: run \`publish.sh init $1 --key KEYID\` first"
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
need reprepro reprepro
need gpg gnupg

case "$cmd" in
init)
    repo=${1:-}; [ -n "$repo" ] || usage; shift
    key="" origin="vitals-clinic" arch="arm64 amd64"
    while [ $# -gt 0 ]; do
        case "$1" in
        --key) key=${2:?--key needs a key id or fingerprint}; shift 2 ;;
        --origin) origin=${2:?--origin needs a name}; shift 2 ;;
        --arch) arch=${2:?--arch needs a list}; shift 2 ;;
        *) usage ;;
        esac
    done
    [ -n "$key" ] || die "--key is missing; fix: give the fingerprint of the clinic's signing subkey (gpg --list-secret-keys --with-subkey-fingerprints)"
    # The secret signing key must be here (a signing subkey suffices: the primary stays offline).
    gpg --batch --list-secret-keys "$key" >/dev/null 2>&1 ||
        die "no secret key $key in ${GNUPGHOME:-~/.gnupg}; fix: import the signing subkey (README: key ceremony) or set GNUPGHOME"
    case "$origin" in *[!A-Za-z0-9.-]*) die "--origin $origin: letters, digits, dots and dashes only" ;; esac
    mkdir -p "$repo/conf"
    tmp="$repo/conf/distributions.tmp"
    : >"$tmp"
    for s in $SUITES; do
        cat >>"$tmp" <<DIST
Origin: $origin
Label: $origin
Suite: $s
Codename: $s
Architectures: $arch
Components: main
Description: vitals-hub packages of $origin ($s)
SignWith: $key

DIST
    done
    mv "$tmp" "$repo/conf/distributions"
    printf 'verbose\n' >"$repo/conf/options"
    reprepro -b "$repo" export >/dev/null
    echo "publish.sh: $repo: suites $SUITES signed by $key (origin $origin)"
    ;;
add)
    repo=${1:-} suite=${2:-}
    if [ -z "$repo" ] || [ -z "$suite" ] || [ $# -lt 3 ]; then usage; fi
    shift 2
    configured "$repo"
    case " $SUITES " in *" $suite "*) ;; *) die "suite $suite: not one of: $SUITES" ;; esac
    for deb in "$@"; do
        [ -f "$deb" ] || die "$deb: no such file"
        pkg=$(dpkg-deb -f "$deb" Package) || die "$deb is not a Debian package"
        ver=$(dpkg-deb -f "$deb" Version)
        cur=$(version_in "$repo" "$suite" "$pkg")
        if [ -n "$cur" ] && ! dpkg --compare-versions "$ver" gt "$cur"; then
            die "$pkg $ver is not newer than $cur in $suite; hubs never downgrade: fix: bump the version (a new tag) and build again"
        fi
        reprepro -b "$repo" includedeb "$suite" "$deb" >/dev/null
        echo "publish.sh: $pkg $ver in $suite${cur:+ (was $cur)}"
    done
    ;;
promote)
    repo=${1:-} ver=${2:-} pkg=${3:-vitals-hub}
    if [ -z "$repo" ] || [ -z "$ver" ]; then usage; fi
    configured "$repo"
    can=$(version_in "$repo" canary "$pkg")
    [ "$can" = "$ver" ] || die "canary has $pkg ${can:-(none)}, not $ver; fix: promote the version canary hubs ran (publish.sh list $repo)"
    cur=$(version_in "$repo" stable "$pkg")
    if [ -n "$cur" ] && ! dpkg --compare-versions "$ver" gt "$cur"; then
        die "$pkg $ver is not newer than stable's $cur; nothing promoted"
    fi
    reprepro -b "$repo" copy stable canary "$pkg" >/dev/null
    [ "$(version_in "$repo" stable "$pkg")" = "$ver" ] || die "reprepro did not copy $pkg $ver to stable"
    echo "publish.sh: $pkg $ver promoted canary -> stable${cur:+ (was $cur)}"
    ;;
list)
    repo=${1:-}; [ -n "$repo" ] || usage
    configured "$repo"
    for s in $SUITES; do reprepro -b "$repo" list "$s"; done
    ;;
key)
    repo=${1:-} out=${2:-}
    if [ -z "$repo" ] || [ -z "$out" ]; then usage; fi
    configured "$repo"
    key=$(sed -n 's/^SignWith: //p' "$repo/conf/distributions" | head -1)
    gpg --batch --export "$key" >"$out.tmp"
    [ -s "$out.tmp" ] || { rm -f "$out.tmp"; die "gpg exported nothing for $key"; }
    mv "$out.tmp" "$out"
    echo "publish.sh: public key of $key in $out (install it as /usr/share/keyrings/vitals-clinic.gpg on the hub)"
    ;;
*) usage ;;
esac
