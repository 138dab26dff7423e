#!/bin/bash
# Injects a fault between the client and the server. usage: fault.sh MODE
#   link    veth link down (server side): packets vanish, TCP retransmits, connects time out
#   drop    iptables DROP both directions, link up (a silent blackhole)
#   reset   iptables REJECT with TCP reset: established connections are reset
#   kill    SIGKILL sshd and all its sessions (a server crash; heal.sh restarts it)
#   freeze  SIGSTOP sshd and all its sessions (a hung server; heal.sh continues it)
#   cut2    DROP mount 2's traffic only (its relay's port, client side): one machine's link is
#           cut, the other's works
# Faults stack; heal.sh undoes them all. Only touches our own namespaces.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
sj_need_up
mode=${1:-link}
case "$mode" in
    link)   ip -n "$NS_SRV" link set "$VETH_S" down ;;
    drop)   sj_srv iptables -A SJ_PART -j DROP ;;
    reset)  sj_srv iptables -A SJ_PART -p tcp ! --tcp-flags RST RST -j REJECT --reject-with tcp-reset ;;
    kill)   sj_kill_netns_procs "$NS_SRV" KILL ;;
    freeze) sj_kill_netns_procs "$NS_SRV" STOP ;;
    cut2)   sj_cli iptables -A SJ_CUT2 -j DROP ;;
    *) sj_die "unknown mode '$mode' (link|drop|reset|kill|freeze|cut2)" ;;
esac
sj_log "fault '$mode' injected"
