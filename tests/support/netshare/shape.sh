#!/bin/bash
# Sets the one-way latency the relay adds in EACH direction (the round trip grows by twice it).
# usage: shape.sh --delay MS | --clear | --show
# The relay re-reads the setting every 0.2 s, also for open connections. (This kernel has no
# sch_netem, so the latency comes from the userspace relay.)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
sj_need_up
case "${1:---show}" in
    --delay) awk -v d="${2:-}" 'BEGIN{exit !(d ~ /^[0-9]+(\.[0-9]+)?$/)}' || sj_die "--delay needs MS"
             echo "$2" > "$SJNS_STATE/delay.tmp" && mv "$SJNS_STATE/delay.tmp" "$SJNS_STATE/delay"
             sleep 0.3 ;;   # the relay polls every 0.2 s
    --clear) echo 0 > "$SJNS_STATE/delay.tmp" && mv "$SJNS_STATE/delay.tmp" "$SJNS_STATE/delay"
             sleep 0.3 ;;
    --show) ;;
    *) sj_die "usage: shape.sh --delay MS | --clear | --show" ;;
esac
echo "delay_ms=$(cat "$SJNS_STATE/delay")"
