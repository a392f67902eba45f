#!/usr/bin/env bash
# Per-round overhead of the flwr-run path (this checkout) against the start_simulation path of
# commit 5bfeed2 (checked out into a git worktree), on trivial clients and on a 15-client MNIST
# FedFomo round. Usage: scripts/compare_flower_paths.sh OUT_DIR DATA_ROOT
# Runs one after another (never in parallel); results into OUT_DIR/{old,new}_{trivial,mnist15}.
set -euo pipefail
OUT=$(realpath -m "$1"); DATA=$(realpath "$2")
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
OLD=$(mktemp -d)/old
git -C "$REPO" worktree add --detach "$OLD" 5bfeed2 >/dev/null
trap 'git -C "$REPO" worktree remove --force "$OLD"' EXIT
TRIVIAL="dataset=mnist method=fedavg num_clients=15 num_rounds=10 local_epochs=0 samples_per_client=20 sim.progress=false"
MNIST15="dataset=mnist method=fedfomo num_clients=15 num_rounds=2 sim.progress=false"
mkdir -p "$OUT"
for path in old new; do
  dir=$([ "$path" = old ] && echo "$OLD" || echo "$REPO")
  for name in trivial mnist15; do
    args=$([ "$name" = trivial ] && echo "$TRIVIAL" || echo "$MNIST15")
    start=$(date +%s.%N)
    (cd "$dir" && $PY -m fedfomo.main $args dataset.root="$DATA" hydra.run.dir="$OUT/${path}_$name") \
      > "$OUT/${path}_$name.log" 2>&1
    echo "${path}_$name total_wall_s=$(echo "$(date +%s.%N) - $start" | bc)" | tee -a "$OUT/walls.txt"
  done
done
