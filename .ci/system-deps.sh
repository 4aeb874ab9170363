#!/usr/bin/env bash
# Install the server binaries that the integration tests start themselves, on 127.0.0.1 (Debian packages):
# Prometheus and PostgreSQL (its initdb/postgres live in /usr/lib/postgresql/<version>/bin). The tests run their own
# throw-away instances, so the packages' own services must not run after the install; and nothing that was already
# running may be stopped. So the install runs under a policy-rc.d that refuses every service start (Debian's
# documented switch, honoured by invoke-rc.d and deb-systemd-invoke), and if a package still started something, only
# that (the service or cluster that did not run before) is stopped, through its own init script or pg_ctlcluster,
# never by program name. Where the packages cannot be installed, their tests skip with a visible reason (and fail
# under CI=true).
set -euo pipefail

missing=()
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
{ command -v initdb && command -v pg_ctl; } >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "warning: ${missing[*]} not installed and cannot be installed here (needs root and apt-get); their tests" \
         "will skip (and fail under CI=true)" >&2
    exit 0
fi

policy=/usr/sbin/policy-rc.d
saved=""
restore_policy() {
    if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
if [ -x "$policy" ] && { "$policy" prometheus start >/dev/null 2>&1; [ $? -eq 101 ]; }; then
    : # an existing policy already forbids service starts: keep it as it is
else
    if [ -e "$policy" ]; then
        saved="$(mktemp "$policy.nasops-saved.XXXXXX")"
        mv -f "$policy" "$saved"
    fi
    trap restore_policy EXIT
    printf '#!/bin/sh\n# written by nasops .ci/system-deps.sh for the length of one apt-get install\nexit 101\n' \
        > "$policy"
    chmod 755 "$policy"
fi

online_clusters() { pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1 "/" $2}' || true; }
clusters_before="$(online_clusters)"

echo "installing the Debian package(s) ${missing[*]} (used by the tests, on 127.0.0.1 only; their services stay off)"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Belt and braces, for a system whose service manager ignores policy-rc.d: stop only what this install started.
for package in "${missing[@]}"; do
    case "$package" in
        prometheus)  # the service did not exist before this install
            if service prometheus status >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi ;;
        postgresql)
            for cluster in $(online_clusters); do
                grep -qxF "$cluster" <<<"$clusters_before" || pg_ctlcluster "${cluster%/*}" "${cluster#*/}" stop || true
            done ;;
    esac
done
