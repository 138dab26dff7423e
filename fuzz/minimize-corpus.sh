#!/usr/bin/env bash
# Reduces fuzz/corpus/<target>/ to a greedy set cover of its edge coverage, always keeping the
# named seeds (seed-*). Inputs that crash cover nothing and are dropped.
#
# `cargo fuzz cmin` keeps every input that adds a feature in size order, which leaves many
# files; this keeps the same edges with far fewer. Run it after `cargo fuzz cmin`, in fuzz/:
#
#   RUSTC_BOOTSTRAP=1 cargo fuzz build
#   ./minimize-corpus.sh decode_record scan_segment recover_open
#
# Needs bash and python3.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "$@"; do
  bin=target/x86_64-unknown-linux-gnu/release/$t
  [ -x "$bin" ] || { echo "build $t first: RUSTC_BOOTSTRAP=1 cargo fuzz build $t" >&2; exit 1; }
  : > "$work/cov"
  for f in corpus/"$t"/*; do
    rm -rf "$work/in" "$work/out" "$work/ctl"
    mkdir "$work/in" "$work/out"
    cp "$f" "$work/in/"
    # One input per merge: the control file's COV line then lists all of its edges.
    "$bin" -merge=1 -use_counters=0 -merge_control_file="$work/ctl" "$work/out" "$work/in" \
      >/dev/null 2>&1 || true
    echo "$(basename "$f") $(grep '^COV 0 ' "$work/ctl" 2>/dev/null | cut -d' ' -f3- || true)" \
      >> "$work/cov"
  done
  python3 - "$work/cov" "corpus/$t" <<'EOF'
import os, sys
covf, corpus = sys.argv[1], sys.argv[2]
cov = {}
for line in open(covf):
    p = line.split()
    if p:
        cov[p[0]] = set(p[1:])
edges = set().union(*cov.values())
chosen = [f for f in cov if f.startswith("seed-")]
covered = set().union(*(cov[f] for f in chosen)) if chosen else set()
rest = sorted(f for f in cov if f not in chosen)
size = lambda f: os.path.getsize(os.path.join(corpus, f))
while rest:
    best = max(rest, key=lambda f: (len(cov[f] - covered), -size(f)))
    if not cov[best] - covered:
        break
    chosen.append(best)
    covered |= cov[best]
    rest.remove(best)
for f in rest:
    os.remove(os.path.join(corpus, f))
print(f"{corpus}: {len(edges)} edges, kept {len(chosen)} files, removed {len(rest)}")
EOF
done
