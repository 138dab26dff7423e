#!/bin/bash
# Undoes every fault fault.sh injected: link up, rules flushed, a frozen server continued, a
# killed server restarted. Idempotent. Leaves the shaping (latency) alone.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
sj_need_up
ip -n "$NS_SRV" link set "$VETH_S" up
sj_srv iptables -F SJ_PART
sj_cli iptables -F SJ_CUT2
sj_kill_netns_procs "$NS_SRV" CONT
if ! sj_alive_pidfile "$SJNS_STATE/sshd.pid"; then
    # a killed listener leaves its sessions' pid file stale; kill leftovers, then restart
    sj_kill_netns_procs "$NS_SRV" KILL
    rm -f "$SJNS_STATE/sshd.pid"
    sj_start_sshd 9>&-
    sj_log "sshd restarted"
fi
sj_log "healed"
