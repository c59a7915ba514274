#!/usr/bin/env bash
# hosts.sh - bring up test "hosts" for godist's ssh tests and benchmarks: each host is a
# network namespace with its own hostname (UTS namespace), its own /etc/hosts and its own
# sshd on port 22, all joined by a bridge in the root namespace. Run as root (Debian 12).
#
# Idempotent: packages are installed only when missing, and what is missing is created; a
# host whose sshd already runs is left alone. Every run ends by checking that `ssh HOST
# hostname` answers HOST for each host and that the hosts reach each other. Undo it with
# scripts/hosts-teardown.sh.
#
# Defaults (all may be overridden from the environment):
#   GODIST_HOSTS       host names                          "h1 h2 h3"
#   GODIST_NS_PREFIX   prefix of netns and root-side veths "gd-"
#   GODIST_SUBNET      first three octets of the /24       "10.232.0"
#   GODIST_BRIDGE      bridge in the root namespace        "gdbr0"
#   GODIST_HOSTS_DIR   keys, configs, logs, PID files      "/run/godist/hosts"
#                      (not under /tmp: sshd's StrictModes refuses keys below a
#                      world-writable directory)
# The bridge has .1; the hosts get .11, .12, ... The namespaces have no default route, so
# nothing sent from them can leave the machine.
#
# Output: $GODIST_HOSTS_DIR/env, to source. It exports GODIST_HOSTS, GODIST_HOST_ADDRS,
# GODIST_NS_PREFIX, SSH_CONFIG (ssh -F "$SSH_CONFIG" h2 CMD runs CMD as root on h2), SSH_KEY,
# SSH_KNOWN_HOSTS. The Go tests and `godist bench` read this file.
set -euo pipefail

HOSTS=${GODIST_HOSTS:-h1 h2 h3}
PREFIX=${GODIST_NS_PREFIX:-gd-}
SUBNET=${GODIST_SUBNET:-10.232.0}
BR=${GODIST_BRIDGE:-gdbr0}
DIR=${GODIST_HOSTS_DIR:-/run/godist/hosts}
SSHD=/usr/sbin/sshd # sshd re-executes itself, so it needs its absolute path
GW=$SUBNET.1

say() { printf '[hosts] %s\n' "$*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root"
start=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# --- packages -------------------------------------------------------------------------------
. "$(dirname "$0")/apt.sh"
apt_install openssh-server openssh-client iproute2 util-linux procps || fail "apt-get install of the hosts' packages"

# running PIDFILE WORD: the pid in PIDFILE is a live process whose command line has WORD.
running() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

mkdir -p "$DIR"
chmod 700 "$DIR"
# Written first, so that the teardown knows what to undo even if we stop half-way.
printf 'GODIST_HOSTS="%s"\nGODIST_NS_PREFIX=%s\nGODIST_BRIDGE=%s\n' "$HOSTS" "$PREFIX" "$BR" >"$DIR/layout"

declare -A IP
n=11
for h in $HOSTS; do
    [ $((${#PREFIX} + ${#h})) -le 15 ] || fail "interface name $PREFIX$h is longer than 15 characters"
    IP[$h]=$SUBNET.$n
    n=$((n + 1))
done

# --- bridge ---------------------------------------------------------------------------------
# A subnet the machine already routes through another interface is not ours to use.
clash=$(ip -4 route show to match "$GW" | grep -v "dev $BR " | grep -v '^default' || true)
[ -z "$clash" ] || fail "$SUBNET.0/24 is already routed: $clash (set GODIST_SUBNET)"
ip link show "$BR" >/dev/null 2>&1 || ip link add "$BR" type bridge
ip -4 addr show dev "$BR" | grep -q " $GW/24 " || ip addr add "$GW/24" dev "$BR"
ip link set "$BR" up

# --- namespaces -----------------------------------------------------------------------------
{
    echo "$GW $BR"
    for h in $HOSTS; do echo "${IP[$h]} $h"; done
} >"$DIR/hosts"
for h in $HOSTS; do
    ns=$PREFIX$h
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$ns" >/dev/null 2>&1; then
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add "$ns" type veth peer name eth0 netns "$ns"
    fi
    # The root-side veth may have been taken down (tests do that to lose a host): bring it up.
    ip link set "$ns" master "$BR" up
    ip -n "$ns" link set lo up
    # A MAC derived from the address keeps neighbours' ARP caches right across re-creation.
    # shellcheck disable=SC2046,SC2183
    ip -n "$ns" link set eth0 address "$(printf '02:47:%02x:%02x:%02x:%02x' $(echo "${IP[$h]}" | tr . ' '))"
    ip -n "$ns" -4 addr show dev eth0 | grep -q " ${IP[$h]}/24 " || ip -n "$ns" addr add "${IP[$h]}/24" dev eth0
    ip -n "$ns" link set eth0 up
    # `ip netns exec` bind-mounts these over /etc; the sshd below mounts them itself.
    mkdir -p "/etc/netns/$ns"
    { printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n'; cat "$DIR/hosts"; } >"/etc/netns/$ns/hosts"
    echo "$h" >"/etc/netns/$ns/hostname"
done
ip neigh flush dev "$BR" 2>/dev/null || true
for h in $HOSTS; do ip -n "$PREFIX$h" neigh flush dev eth0 2>/dev/null || true; done
# Nothing is sent before each address is known to route through our bridge.
for h in $HOSTS; do
    ip -4 route get "${IP[$h]}" | grep -q "dev $BR " || fail "${IP[$h]} does not route via $BR: $(ip -4 route get "${IP[$h]}")"
done

# --- keys and ssh client config -------------------------------------------------------------
[ -f "$DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C godist-test-client -f "$DIR/id_ed25519"
cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
chmod 600 "$DIR/authorized_keys"
mkdir -p /run/sshd
chmod 755 /run/sshd
# sshd with UsePAM no refuses a locked account ('!' password) even for keys.
pam=no
[ "$(getent shadow root | cut -d: -f2 | cut -c1)" = '!' ] && pam=yes

{
    echo "# ssh client config for the godist test hosts, written by scripts/hosts.sh"
    for h in $HOSTS; do printf 'Host %s\n    HostName %s\n' "$h" "${IP[$h]}"; done
    echo "Host $HOSTS ${IP[*]}"
    echo "    User root"
    echo "    IdentityFile $DIR/id_ed25519"
    echo "    IdentitiesOnly yes"
    echo "    UserKnownHostsFile $DIR/known_hosts"
    echo "    GlobalKnownHostsFile /dev/null"
    echo "    StrictHostKeyChecking yes"
    echo "    BatchMode yes"
    echo "    ConnectTimeout 5"
    echo "    ServerAliveInterval 5"
    echo "    ServerAliveCountMax 3"
    echo "    LogLevel ERROR"
} >"$DIR/ssh_config"

# --- one sshd per host ----------------------------------------------------------------------
: >"$DIR/known_hosts.new"
for h in $HOSTS; do
    ns=$PREFIX$h
    d=$DIR/$h
    mkdir -p "$d"
    [ -f "$d/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C "godist-$h" -f "$d/host_key"
    printf '%s,%s %s\n' "$h" "${IP[$h]}" "$(cut -d' ' -f1,2 "$d/host_key.pub")" >>"$DIR/known_hosts.new"
    cat >"$d/sshd_config" <<EOF
# sshd of godist test host $h (netns $ns), written by scripts/hosts.sh
Port 22
ListenAddress ${IP[$h]}
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM $pam
PrintMotd no
AcceptEnv LANG LC_* GODIST_TEST_*
AllowTcpForwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
# Many workers start at once: do not throttle unauthenticated connections.
MaxStartups 200:30:400
MaxSessions 200
EOF
    "$SSHD" -t -f "$d/sshd_config" || fail "$h: sshd -t rejects $d/sshd_config"
    if running "$d/sshd.pid" "$d/sshd_config"; then
        continue
    fi
    rm -f "$d/sshd.pid"
    # The sshd runs in the host's network namespace, in a new UTS namespace (its hostname)
    # and a new mount namespace where the host's hosts/hostname files cover /etc's; its
    # sessions inherit all three. nsenter+unshare rather than `ip netns exec`, which remounts
    # /sys and would hide /sys/fs/cgroup from what runs there.
    nsenter --net="/run/netns/$ns" -- unshare --uts --mount --propagation private -- \
        sh -c 'mount --bind "/etc/netns/$1/hosts" /etc/hosts &&
               mount --bind "/etc/netns/$1/hostname" /etc/hostname &&
               hostname "$2" && exec "$3" -f "$4" -E "$5"' \
        sh "$ns" "$h" "$SSHD" "$d/sshd_config" "$d/sshd.log"
done
mv "$DIR/known_hosts.new" "$DIR/known_hosts"
for h in $HOSTS; do
    d=$DIR/$h
    for _ in $(seq 100); do running "$d/sshd.pid" "$d/sshd_config" && break; sleep 0.05; done
    running "$d/sshd.pid" "$d/sshd_config" || fail "$h: sshd did not start; see $d/sshd.log"
done

# --- check ----------------------------------------------------------------------------------
# All at once (each ssh costs about a second on a loaded machine): every host by name from
# here, and the first host reaching the second by name (through its own /etc/hosts).
set -- $HOSTS
for h in "$@"; do
    ssh -F "$DIR/ssh_config" "$h" hostname >"$DIR/check.$h" 2>&1 &
done
if [ $# -ge 2 ]; then
    ssh -F "$DIR/ssh_config" "$1" ssh -F "$DIR/ssh_config" "$2" hostname >"$DIR/check.hop" 2>&1 &
fi
ok=1
wait || ok=0
for h in "$@"; do
    got=$(cat "$DIR/check.$h")
    [ "$got" = "$h" ] || { say "ssh $h said '$got' (see $DIR/$h/sshd.log)"; ok=0; }
done
if [ $# -ge 2 ]; then
    got=$(cat "$DIR/check.hop")
    [ "$got" = "$2" ] || { say "ssh $1 -> $2 said '$got'"; ok=0; }
fi
rm -f "$DIR"/check.*
[ $ok = 1 ] || fail "the hosts do not answer as they should"

addrs=""
for h in $HOSTS; do addrs="$addrs ${IP[$h]}"; done
cat >"$DIR/env" <<EOF
export GODIST_HOSTS="$HOSTS"
export GODIST_HOST_ADDRS="${addrs# }"
export GODIST_NS_PREFIX=$PREFIX
export GODIST_BRIDGE=$BR
export SSH_CONFIG=$DIR/ssh_config
export SSH_KEY=$DIR/id_ed25519
export SSH_KNOWN_HOSTS=$DIR/known_hosts
EOF
say "up in $(since "$start") s: $(for h in $HOSTS; do printf '%s=%s ' "$h" "${IP[$h]}"; done)"
say "env: . $DIR/env"
