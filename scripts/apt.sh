# scripts/apt.sh - sourced by the set-up scripts: installs Debian packages that are missing.
# The sourcing script defines say (one line to stderr, with its own prefix).
#
#   . "$(dirname "$0")/apt.sh"
#   apt_install PKG... || fail "..."

# apt_missing PKG... prints those of the packages that are not installed, one per line.
apt_missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || echo "$p"
    done
}

# apt_install PKG... installs the packages that are missing, and returns at once when none
# is. It waits for the dpkg lock rather than failing, and tries three times, updating the
# package lists each time: on a fresh machine the first install can fail on lists that were
# cleaned away, and mirrors flake. Debian would start the packages' own services (a system
# sshd, slurmd); a policy-rc.d that refuses every start keeps the machine to the daemons the
# scripts start themselves. One the machine already has is left as it is.
apt_install() {
    local need i ok=1 policy=0
    need=$(apt_missing "$@" | tr '\n' ' ')
    [ -n "${need// /}" ] || return 0
    say "installing $need"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy=1
    fi
    for i in 1 2 3; do
        ok=1
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 \
                install --no-install-recommends $need >/dev/null && break
        ok=0
        say "apt-get install $need failed (try $i)"
        sleep 3
    done
    [ $policy = 0 ] || rm -f /usr/sbin/policy-rc.d
    [ $ok = 1 ]
}
