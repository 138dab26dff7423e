# Common settings of the netshare test harness. Sourced by the other scripts, not run.
#
# Layout (nothing is added to the host's own network namespace):
#
#   test process --VFS--> $STATE/mnt  (fuse.sshfs, in the normal mount namespace)
#        sshfs + ssh run in netns $NAME-cli and reach 127.0.0.1:$PORT there:
#   relay.py 127.0.0.1:$PORT (one-way latency, shape.sh)  --veth $NAME-c $SUBNET.1
#        (mount 2 goes through a relay of its own, 127.0.0.1:$PORT2, so that fault.sh can cut
#        that machine's link alone: chain SJ_CUT2 of the client netns)
#        --> veth $NAME-s $SUBNET.2 (netns $NAME-srv): sshd, internal-sftp only
#   $STATE/export: the server's disk (check here what really landed)
#
# Every name can be overridden from the environment (pick another NAME and SUBNET to run a
# second instance side by side); the scripts of one instance must see the same values.

SJNS_NAME=${SJNS_NAME:-sjtest}                 # prefix of netns / veth names (<= 10 chars)
SJNS_STATE=${SJNS_STATE:-/tmp/$SJNS_NAME-netshare}
SJNS_SUBNET=${SJNS_SUBNET:-10.231.91}          # a /30 that exists only between our two netns
SJNS_PORT=${SJNS_PORT:-2222}
SJNS_PORT2=${SJNS_PORT2:-$((SJNS_PORT + 1))} # mount 2's relay: its link can be cut alone
SJNS_ALIVE_INTERVAL=${SJNS_ALIVE_INTERVAL:-1}  # ssh keepalive period (s): soft profile
SJNS_ALIVE_COUNT=${SJNS_ALIVE_COUNT:-3}        # missed keepalives before the mount gives EIO

NS_CLI="$SJNS_NAME-cli"
NS_SRV="$SJNS_NAME-srv"
VETH_C="${SJNS_NAME:0:10}-c"
VETH_S="${SJNS_NAME:0:10}-s"
IP_C="$SJNS_SUBNET.1"
IP_S="$SJNS_SUBNET.2"
EXPORT="$SJNS_STATE/export"
MNT="$SJNS_STATE/mnt"
# A second, independent mount of the same export: another machine (locks taken through one
# mount are not seen through the other: sshfs keeps POSIX locks in the local kernel).
MNT2="$SJNS_STATE/mnt2"
HERE=${HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

sj_log() { echo "netshare[$SJNS_NAME]: $*" >&2; }
sj_die() { echo "netshare[$SJNS_NAME]: ERROR: $*" >&2; exit 1; }
sj_need_root() { [ "$(id -u)" = 0 ] || sj_die "must run as root"; }
sj_netns_exists() { [ -e "/run/netns/$1" ]; }
sj_srv() { ip netns exec "$NS_SRV" "$@"; }
sj_cli() { ip netns exec "$NS_CLI" "$@"; }
# Is something mounted at $1? (reads mountinfo: never stat()s the mount, which could hang)
sj_is_mounted() { awk -v m="$1" '$5==m{f=1} END{exit !f}' /proc/self/mountinfo; }
# The FUSE connection id of the mount at $1 (the minor device number), from mountinfo.
sj_fuse_conn() { awk -v m="$1" '$5==m{split($3,a,":"); print a[2]}' /proc/self/mountinfo | tail -1; }
# Is pid $1 a live (non-zombie) process?
sj_alive() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
sj_alive_pidfile() { sj_alive "$(cat "$1" 2>/dev/null)"; }

# Serialises the scripts of one instance (up, down, fault, heal, shape): fd 9 holds the lock.
sj_lock() {
    exec 9>>"/tmp/$SJNS_NAME-netshare.lock"
    flock -w "${1:-60}" 9 || sj_die "another netshare script holds /tmp/$SJNS_NAME-netshare.lock"
}

# What every script that acts on a running share does first: root, the lock, the share up.
sj_need_up() {
    sj_need_root
    sj_lock 30
    [ -f "$SJNS_STATE/up" ] || sj_die "not up (run up.sh)"
}

# Kills the process in pid file $1: TERM, up to 3 s, then KILL.
sj_kill_pidfile() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if sj_alive "$pid"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 30); do sj_alive "$pid" || break; sleep 0.1; done
        sj_alive "$pid" && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
}

# Sends signal $2 (default TERM, then KILL after 3 s) to every process in OUR netns $1, by pid.
sj_kill_netns_procs() {
    local ns=$1 sig=${2:-TERM} pids
    sj_netns_exists "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    [ -n "${pids// /}" ] || return 0
    # shellcheck disable=SC2086
    kill -"$sig" $pids 2>/dev/null || true
    if [ "$sig" = TERM ]; then
        for _ in $(seq 30); do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && return 0
            sleep 0.1
        done
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        # shellcheck disable=SC2086
        [ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null
    fi
    return 0
}

# Starts a latency relay in the client netns: 127.0.0.1:$1 -> the server, pid file $2.
sj_start_relay() {
    local port=$1 pidfile=$2 log=${2%.pid}.log
    nsenter --net="/run/netns/$NS_CLI" /usr/bin/python3 "$HERE/relay.py" \
        127.0.0.1 "$port" "$IP_S" "$SJNS_PORT" "$SJNS_STATE/delay" </dev/null >"$log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 50); do
        sj_cli ss -Hltn "sport = :$port" 2>/dev/null | grep -q LISTEN && return 0
        sleep 0.1
    done
    cat "$log" >&2
    sj_die "relay on port $port not listening"
}

# Starts sshd in the server netns and waits (5 s at most) until it listens.
sj_start_sshd() {
    # nsenter --net (not `ip netns exec`, which would give sshd a mount namespace of its own,
    # holding a copy of the FUSE mount)
    nsenter --net="/run/netns/$NS_SRV" /usr/sbin/sshd -f "$SJNS_STATE/sshd_config" \
        -E "$SJNS_STATE/sshd.log" || sj_die "sshd failed to start (see $SJNS_STATE/sshd.log)"
    for _ in $(seq 50); do
        sj_srv ss -Hltn "sport = :$SJNS_PORT" 2>/dev/null | grep -q LISTEN && return 0
        sleep 0.1
    done
    sj_die "sshd not listening after 5 s (see $SJNS_STATE/sshd.log)"
}

# The tools the harness needs; prints the missing ones (empty: all there).
sj_missing_tools() {
    local m=()
    command -v sshfs >/dev/null 2>&1 || m+=("sshfs (package sshfs)")
    command -v fusermount3 >/dev/null 2>&1 || m+=("fusermount3 (package fuse3)")
    [ -x /usr/sbin/sshd ] || m+=("/usr/sbin/sshd (package openssh-server)")
    command -v ssh-keygen >/dev/null 2>&1 || m+=("ssh-keygen (package openssh-client)")
    command -v iptables >/dev/null 2>&1 || m+=("iptables (package iptables)")
    command -v ip >/dev/null 2>&1 || m+=("ip (package iproute2)")
    command -v ss >/dev/null 2>&1 || m+=("ss (package iproute2)")
    command -v nsenter >/dev/null 2>&1 || m+=("nsenter (package util-linux)")
    command -v flock >/dev/null 2>&1 || m+=("flock (package util-linux)")
    [ -x /usr/bin/python3 ] || m+=("/usr/bin/python3 (package python3)")
    [ -c /dev/fuse ] || m+=("/dev/fuse (no FUSE device)")
    echo "${m[*]}"
}
