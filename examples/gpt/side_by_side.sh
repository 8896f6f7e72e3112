#!/usr/bin/env bash
# Side by side in one run: for each config, ROUNDS rounds (default 3), each round
# PyTorch eager (2 threads) and then adjoint's `gpt bench` with --split auto (the
# default), always (two halves side by side) and off (the whole batch), on the same
# parameters and batch written by make_case.py. Interleaving the rounds puts both sides
# in the same phases of a noisy machine; the summary gives each round's ratio of
# adjoint's median step to PyTorch's, the median ratio, and each round's SGEMM ceiling
# (measured between adjoint's steps: a low one marks a round in a slow phase).
#   PEERS=/path/to/peers ROUNDS=3 bash examples/gpt/side_by_side.sh tiny small gpt2
# PEERS holds the venv of ../shared/peers/SETUP.md (numpy, safetensors, torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PEERS:?set PEERS to the folder holding the peers venv}"
ROUNDS="${ROUNDS:-3}"
P="$PEERS/venv/bin/python"
S="$(cd ../shared/peers && pwd)"
cases="$(mktemp -d)"
log="$cases/log"
cargo build --release --example gpt >/dev/null
for c in "$@"; do
  # A tiny step is about a millisecond, and this machine's slow phases last from a
  # quarter of a second to two (`gpt bench --step-times`): 2,000 steps, so each run
  # spans several phases rather than sitting inside one.
  case "$c" in tiny) steps=2000 ;; gpt2) steps=5 ;; *) steps=20 ;; esac
  "$P" "$S/make_case.py" --config "$c" --seed 0 --out "$cases/$c" >/dev/null
  for r in $(seq 1 "$ROUNDS"); do
    echo "== $c round $r"
    (cd "$S" && "$P" gpt_torch.py --config "$c" --steps "$steps" --threads 2) | sed "s/^/$c $r torch /"
    for split in auto always off; do
      target/release/examples/gpt bench --config "$c" --steps "$steps" --split "$split" \
        --params "$cases/$c/params.safetensors" --batch "$cases/$c/batch.safetensors" |
        sed "s/^/$c $r $split /"
    done
  done
done | tee "$log"
echo "== ratios (adjoint median / PyTorch eager median, per round; then their median)"
awk '
  /median_ms=/ { for (i = 4; i <= NF; i++) if ($i ~ /^median_ms=/) { split($i, kv, "="); t[$1, $2, $3] = kv[2] }
                 cfg[$1] = 1; if ($2 > rounds) rounds = $2 }
  # The ceiling measured between the steps: a low one marks a round in a slow phase.
  $4 ~ /^sgemm_gflops=/ { split($4, kv, "="); g[$1, $2, $3] = kv[2] }
  END {
    for (c in cfg) for (s = 1; s <= 3; s++) {
      split("auto always off", names, " "); name = names[s]; n = 0; line = ""; ceil = ""
      for (r = 1; r <= rounds; r++) if ((c, r, "torch") in t && (c, r, name) in t) {
        x = t[c, r, name] / t[c, r, "torch"]; v[++n] = x; line = line sprintf(" %.3f", x)
        ceil = ceil sprintf(" %.0f", g[c, r, name])
      }
      # insertion sort for the median
      for (i = 2; i <= n; i++) { y = v[i]; j = i - 1; while (j > 0 && v[j] > y) { v[j + 1] = v[j]; j-- } v[j + 1] = y }
      med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      if (n > 0) printf "%s split=%s: rounds%s; median %.3f (ceiling GFLOP/s:%s)\n", c, name, line, med, ceil
    }
  }' "$log" | sort
rm -rf "$cases"
