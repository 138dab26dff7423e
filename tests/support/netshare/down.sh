#!/bin/bash
# Tears down everything up.sh created: the mount (if a process hangs on it, the FUSE connection
# is aborted through fusectl first, so it gets an error instead of blocking forever), sshfs,
# the relay, sshd (by pid, and only processes inside our own two namespaces), the namespaces
# and the state directory. Idempotent: safe when nothing, or half, is up, and during a fault.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
sj_need_root
sj_lock 60

FUSECTL_OURS=0
abort_conn() {   # abort the FUSE connection behind mount point $1
    local c
    c=$(sj_fuse_conn "$1")
    [ -n "$c" ] || return 0
    if [ ! -e "/sys/fs/fuse/connections/$c/abort" ] \
        && ! awk '$3=="fusectl"{f=1} END{exit !f}' /proc/mounts; then
        mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null && FUSECTL_OURS=1
    fi
    if [ -w "/sys/fs/fuse/connections/$c/abort" ]; then
        echo 1 > "/sys/fs/fuse/connections/$c/abort" && sj_log "aborted the FUSE connection of $1"
    fi
}

# 1. the mount (never stat() it: it may hang). A frozen or unreachable server can make a
#    clean unmount block, so: try briefly, abort the connection, unmount again, lazily at last.
for m in "$MNT" "$MNT2"; do
    if sj_is_mounted "$m"; then
        if ! timeout 3 fusermount3 -u "$m" 2>/dev/null; then
            abort_conn "$m"
            timeout 5 fusermount3 -u "$m" 2>/dev/null || timeout 5 umount -l "$m" 2>/dev/null \
                || sj_log "could not unmount $m"
        fi
    fi
done

# 2. client side: sshfs, the relay, then whatever is left in the client namespace (ssh)
sj_kill_pidfile "$SJNS_STATE/sshfs.pid"
sj_kill_pidfile "$SJNS_STATE/sshfs2.pid"
sj_kill_pidfile "$SJNS_STATE/relay.pid"
sj_kill_pidfile "$SJNS_STATE/relay2.pid"
sj_kill_netns_procs "$NS_CLI" TERM

# 3. server side: sshd and its sessions (a frozen server first gets SIGCONT)
sj_kill_netns_procs "$NS_SRV" CONT
sj_kill_netns_procs "$NS_SRV" TERM
rm -f "$SJNS_STATE/sshd.pid"

# 4. namespaces (deleting a netns deletes its veth end and its iptables rules)
for ns in "$NS_CLI" "$NS_SRV"; do
    sj_netns_exists "$ns" && { ip netns del "$ns" || sj_log "could not delete netns $ns"; }
done

# 5. state (the mount point is immutable while unmounted: the guard)
for m in "$MNT" "$MNT2"; do
    if [ -d "$m" ] && ! sj_is_mounted "$m"; then
        chattr -i "$m" 2>/dev/null || true
    fi
done
if [ -d "$SJNS_STATE" ]; then
    if sj_is_mounted "$MNT" || sj_is_mounted "$MNT2"; then
        sj_log "$MNT is still mounted: leaving $SJNS_STATE"
    else
        rm -rf "$SJNS_STATE"
    fi
fi
[ "$FUSECTL_OURS" = 1 ] && umount /sys/fs/fuse/connections 2>/dev/null
sj_log "down"
exit 0
