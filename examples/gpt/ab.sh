#!/usr/bin/env bash
# Interleaved A/B of two `gpt` example binaries (say, before and after a change): ROUNDS
# rounds, each running A then B with `gpt bench --config CONFIG --steps STEPS`; prints
# each side's round medians, their median, and B/A. Interleaving puts both sides in the
# same phases of a noisy machine.
#   bash examples/gpt/ab.sh OLD/gpt NEW/gpt small 10 8 [more gpt bench options]
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: ab.sh BIN_A BIN_B CONFIG STEPS ROUNDS [gpt bench options]" >&2; exit 2; }
A=$1; B=$2; C=$3; S=$4; R=$5; shift 5
for _ in $(seq 1 "$R"); do
  for side in A B; do
    bin=${!side}
    m=$("$bin" bench --config "$C" --steps "$S" "$@" 2>&1 | grep -o 'median_ms=[0-9.]*' | cut -d= -f2)
    echo "$side $m"
  done
done | awk '
  { v[$1, ++n[$1]] = $2; line[$1] = line[$1] " " $2 }
  END {
    for (s = 1; s <= 2; s++) {
      k = (s == 1) ? "A" : "B"; m = n[k]
      for (i = 1; i <= m; i++) x[i] = v[k, i]
      for (i = 2; i <= m; i++) { y = x[i]; j = i - 1; while (j > 0 && x[j] > y) { x[j + 1] = x[j]; j-- } x[j + 1] = y }
      med[k] = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
      printf "%s median %.3f min %.3f rounds:%s\n", k, med[k], x[1], line[k]
    }
    printf "B/A = %.3f\n", med["B"] / med["A"]
  }'
