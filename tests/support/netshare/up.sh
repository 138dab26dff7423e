#!/bin/bash
# Brings up the test share: sshd (internal-sftp only) in netns $NAME-srv, reached over a veth
# pair from netns $NAME-cli through relay.py (latency), mounted with sshfs (soft profile:
# keepalive every second, EIO after about 3-4 s of outage, reconnect on the next access) at
# $STATE/mnt in the normal mount namespace, and a second time at $STATE/mnt2 (a second machine:
# the two mounts share no locks; it reaches the server through a relay of its own, so that its
# link can be cut alone).
# Idempotent: if it is up and healthy it heals any active fault, clears the shaping and only
# prints the env; if half up, it tears down and rebuilds. Installs nothing: it names missing
# tools and exits 3. Prints `SJNS_MNT=...`, `SJNS_EXPORT=...` lines on stdout.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
sj_need_root
missing=$(sj_missing_tools)
if [ -n "$missing" ]; then
    echo "netshare[$SJNS_NAME]: missing tools: $missing" >&2
    exit 3
fi
sj_lock 60

print_env() {
    echo "SJNS_MNT=$MNT"
    echo "SJNS_MNT2=$MNT2"
    echo "SJNS_EXPORT=$EXPORT"
    echo "SJNS_STATE=$SJNS_STATE"
}

healthy() {
    [ -f "$SJNS_STATE/up" ] || return 1
    sj_netns_exists "$NS_CLI" && sj_netns_exists "$NS_SRV" || return 1
    sj_alive_pidfile "$SJNS_STATE/relay.pid" || return 1
    sj_alive_pidfile "$SJNS_STATE/relay2.pid" || return 1
    sj_alive_pidfile "$SJNS_STATE/sshfs.pid" || return 1
    sj_alive_pidfile "$SJNS_STATE/sshfs2.pid" || return 1
    sj_is_mounted "$MNT" || return 1
    sj_is_mounted "$MNT2" || return 1
    return 0
}

if healthy; then
    # a previous run may have left a fault or shaping behind
    ip -n "$NS_SRV" link set "$VETH_S" up
    sj_srv iptables -F SJ_PART
    sj_cli iptables -F SJ_CUT2
    sj_kill_netns_procs "$NS_SRV" CONT
    sj_alive_pidfile "$SJNS_STATE/sshd.pid" || sj_start_sshd 9>&-
    echo "0" > "$SJNS_STATE/delay"
    if timeout 8 stat -f "$MNT" >/dev/null 2>&1 && timeout 8 stat -f "$MNT2" >/dev/null 2>&1; then
        sj_log "already up"
        print_env
        exit 0
    fi
    sj_log "up but the mount does not answer; rebuilding"
fi
if [ -e "$SJNS_STATE" ] || sj_netns_exists "$NS_CLI" || sj_netns_exists "$NS_SRV"; then
    sj_log "found leftovers; cleaning up first"
    flock -u 9
    "$HERE/down.sh"
    sj_lock 60
fi

T0=$(date +%s.%N)
mkdir -p "$SJNS_STATE" "$EXPORT" "$MNT" "$MNT2" /run/sshd
chmod 700 "$SJNS_STATE"
ssh-keygen -q -t ed25519 -N '' -C sjtest-host -f "$SJNS_STATE/host_key"
ssh-keygen -q -t ed25519 -N '' -C sjtest-client -f "$SJNS_STATE/client_key"
cp "$SJNS_STATE/client_key.pub" "$SJNS_STATE/authorized_keys"
echo "sjtest-server $(cut -d' ' -f1,2 "$SJNS_STATE/host_key.pub")" > "$SJNS_STATE/known_hosts"
cat > "$SJNS_STATE/sshd_config" <<CFG
Port $SJNS_PORT
ListenAddress $IP_S
HostKey $SJNS_STATE/host_key
PidFile $SJNS_STATE/sshd.pid
AuthorizedKeysFile $SJNS_STATE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
MaxStartups 100
LogLevel INFO
ClientAliveInterval 5
ClientAliveCountMax 3
CFG
echo "0" > "$SJNS_STATE/delay"

# network: two private namespaces joined by a veth pair, no route anywhere else
ip netns add "$NS_CLI"
ip netns add "$NS_SRV"
ip link add "$VETH_C" type veth peer name "$VETH_S"
ip link set "$VETH_C" netns "$NS_CLI"
ip link set "$VETH_S" netns "$NS_SRV"
ip -n "$NS_CLI" addr add "$IP_C/30" dev "$VETH_C"
ip -n "$NS_SRV" addr add "$IP_S/30" dev "$VETH_S"
ip -n "$NS_CLI" link set lo up
ip -n "$NS_SRV" link set lo up
ip -n "$NS_CLI" link set "$VETH_C" up
ip -n "$NS_SRV" link set "$VETH_S" up
# the chain fault.sh fills (server side, both directions)
sj_srv iptables -N SJ_PART
sj_srv iptables -A INPUT -i "$VETH_S" -j SJ_PART
sj_srv iptables -A OUTPUT -o "$VETH_S" -j SJ_PART
# the chain that cuts mount 2's link alone (client side: its relay's port on loopback)
sj_cli iptables -N SJ_CUT2
sj_cli iptables -A OUTPUT -p tcp --dport "$SJNS_PORT2" -j SJ_CUT2
sj_cli iptables -A OUTPUT -p tcp --sport "$SJNS_PORT2" -j SJ_CUT2

# server (fd 9, the lock, is not inherited by daemons)
sj_srv /usr/sbin/sshd -t -f "$SJNS_STATE/sshd_config" || sj_die "bad sshd_config"
sj_start_sshd 9>&-

# latency relays in the client namespace: 127.0.0.1:PORT -> server (mount 1), :PORT2 (mount 2)
sj_start_relay "$SJNS_PORT" "$SJNS_STATE/relay.pid" 9>&-
sj_start_relay "$SJNS_PORT2" "$SJNS_STATE/relay2.pid" 9>&-

# client: sshfs (and its ssh) in the client netns, mounted in the normal mount namespace.
# Soft profile: keepalive every second; after ALIVE_COUNT misses ssh exits, pending requests
# get EIO and the next access reconnects.
OPTS="IdentityFile=$SJNS_STATE/client_key,UserKnownHostsFile=$SJNS_STATE/known_hosts"
OPTS+=",HostKeyAlias=sjtest-server,StrictHostKeyChecking=yes,BatchMode=yes,LogLevel=ERROR"
OPTS+=",Port=$SJNS_PORT,ConnectTimeout=3,Compression=no,allow_other,reconnect"
OPTS+=",ServerAliveInterval=$SJNS_ALIVE_INTERVAL,ServerAliveCountMax=$SJNS_ALIVE_COUNT"
# guard: while nothing is mounted here, creating files fails (EPERM) instead of SQLite
# silently creating a fresh local database under the mount point
chattr +i "$MNT" 2>/dev/null || sj_log "chattr +i $MNT not supported: no unmounted-write guard"
nsenter --net="/run/netns/$NS_CLI" sshfs -f -o "$OPTS" "root@127.0.0.1:$EXPORT" "$MNT" \
    </dev/null >"$SJNS_STATE/sshfs.log" 2>&1 9>&- &
echo $! > "$SJNS_STATE/sshfs.pid"
for _ in $(seq 100); do sj_is_mounted "$MNT" && break; sleep 0.1; done
sj_is_mounted "$MNT" || { cat "$SJNS_STATE/sshfs.log" >&2; sj_die "sshfs mount of $MNT failed"; }
chattr +i "$MNT2" 2>/dev/null || true
nsenter --net="/run/netns/$NS_CLI" sshfs -f -o "${OPTS/Port=$SJNS_PORT/Port=$SJNS_PORT2}" "root@127.0.0.1:$EXPORT" "$MNT2" \
    </dev/null >"$SJNS_STATE/sshfs2.log" 2>&1 9>&- &
echo $! > "$SJNS_STATE/sshfs2.pid"
for _ in $(seq 100); do sj_is_mounted "$MNT2" && break; sleep 0.1; done
sj_is_mounted "$MNT2" || { cat "$SJNS_STATE/sshfs2.log" >&2; sj_die "sshfs mount of $MNT2 failed"; }

# smoke test through the mount, checked on the server's disk
probe=".probe-$$"
echo ok | timeout 10 tee "$MNT/$probe" >/dev/null || sj_die "cannot write through the share"
[ "$(cat "$EXPORT/$probe" 2>/dev/null)" = ok ] || sj_die "a write through the share did not reach the export"
timeout 10 rm -f "$MNT/$probe"
touch "$SJNS_STATE/up"
sj_log "up in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
print_env
