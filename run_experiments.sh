#!/usr/bin/env bash
# Reproduce the paper's experiments with the committed code: one named experiment per table.
#
#   bash run_experiments.sh --help                          # every experiment, its setting and CPU time
#   bash run_experiments.sh table1_mnist                    # one experiment, full scale
#   SCALE="samples_per_client=1000" TAG=spc1000 bash run_experiments.sh table1_cifar10   # scaled down
#   bash run_experiments.sh all                             # everything (days on a 2-core CPU)
#
# Results go to $OUT/<experiment>[_$TAG]/<run>/ (OUT defaults to runs/), never into the shipped
# results/ folders. Each experiment is a queue (python -m fedfomo.queue): running the same command
# again skips completed runs (status.json), resumes interrupted or failed ones from their
# checkpoint, and starts the rest, so a queue stopped halfway picks up where it stopped.
#   $SCALE   extra Hydra overrides for every run (e.g. "samples_per_client=500 num_rounds=5")
#   $TAG     appended to the experiment's folder, so that scaled-down runs never mix with full ones
#   $SEEDS   comma list of seeds (default 0,1,2: the paper reports mean +- std over three runs)
#   $METHODS comma list of methods, where an experiment compares several
#   $OUT     where the results go (default runs)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
SCALE=${SCALE:-}
TAG=${TAG:-}
SEEDS=${SEEDS:-0,1,2}
OUT=${OUT:-runs}
ALL_METHODS=fedfomo,fedavg,local,fedprox,fedavg_data,lg_fedavg,fedper,perfedavg,pfedme,cfl,fedfomo_ma,mocha,pfedhn

queue() {  # queue NAME TEMPLATE OVERRIDES...
  local name=$1 template=$2; shift 2
  # shellcheck disable=SC2086
  "$PY" -m fedfomo.queue "$OUT/$name${TAG:+_$TAG}" "$template" "$@" "seed=$SEEDS" $SCALE
}

# name | setting | CPU time of one run on the 2-core development CPU (measured where a result exists)
EXPERIMENTS=(
  "table1_mnist|Table 1, MNIST pathological, 15 clients, 20 rounds, E=5: fedfomo, fedavg, local|~18 min per run full scale (measured)"
  "table1_cifar10|Table 1, CIFAR-10 pathological, 15 clients: fedfomo, fedavg, local|~5 min at samples_per_client=1000 (measured); ~17 min full (estimated)"
  "table1_mnist_100|Table 1, MNIST pathological, 100 clients, 10% participation, 100 rounds|~8 min per run full scale (measured)"
  "methods_mnist|Table 1, MNIST pathological, 15 clients: every method (\$METHODS)|2-14 min per run at samples_per_client=500 (measured)"
  "table2_cifar10_latent|Table 2, CIFAR-10 latent D=5 (VGG-11 clusters): fedfomo, fedavg, local|~5 min at samples_per_client=1000 (measured)"
  "table2_cifar10_latent_all_d|Table 2, CIFAR-10 latent, D = 2, 3, 4, 5, 10: fedfomo, fedavg, local|~5 min per run at samples_per_client=1000 (estimated)"
  "table3_cifar10_shuffled|Table 3, CIFAR-10 out-of-local-distribution targets, latent D=5|~5 min at samples_per_client=1000 (measured)"
  "table4_cifar10_latent_dp|Table 4, CIFAR-10 latent D=5, DP-SGD sigma 1 and 2: fedfomo, fedavg|~15 min per run at samples_per_client=1000 (measured)"
  "table6_cifar10_latent_ma_dp|Table 6, CIFAR-10 latent D=5, FedFomo-MA without DP and at sigma 1, 2|~5 / ~15 min at samples_per_client=1000 (measured)"
)

usage() {
  echo "usage: bash run_experiments.sh EXPERIMENT... | all | --help"
  echo
  echo "Experiments (results in \$OUT/EXPERIMENT[_\$TAG]/, OUT=$OUT; seeds \$SEEDS=$SEEDS):"
  for e in "${EXPERIMENTS[@]}"; do
    IFS='|' read -r name setting cost <<<"$e"
    printf '  %-28s %s\n  %-28s CPU: %s\n' "$name" "$setting" "" "$cost"
  done
  echo
  echo "Re-running an experiment continues it (completed runs are skipped, interrupted ones resumed)."
}

table1_mnist() { queue table1_mnist "{method}_s{seed}" dataset=mnist partition=pathological method=fedfomo,fedavg,local; }
table1_cifar10() { queue table1_cifar10 "{method}_s{seed}" dataset=cifar10 partition=pathological method=fedfomo,fedavg,local; }
table1_mnist_100() {
  queue table1_mnist_100 "{method}_s{seed}" dataset=mnist partition=pathological method=fedfomo,fedavg,local \
    num_clients=100 participation=0.1 num_rounds=100
}
methods_mnist() { queue methods_mnist "{method}_s{seed}" dataset=mnist partition=pathological "method=${METHODS:-$ALL_METHODS}"; }
# Table 2 (and 3): the VGG-11 cluster assignments ship with the package, so no VGG-11 training is needed.
table2_cifar10_latent() {
  queue table2_cifar10_latent "{method}_s{seed}" dataset=cifar10 partition=latent partition.num_distributions=5 \
    "method=${METHODS:-fedfomo,fedavg,local}"
}
table2_cifar10_latent_all_d() {
  queue table2_cifar10_latent_all_d "{method}_D{partition_num_distributions}_s{seed}" dataset=cifar10 \
    partition=latent partition.num_distributions=2,3,4,5,10 method=fedfomo,fedavg,local
}
table3_cifar10_shuffled() {
  queue table3_cifar10_shuffled "{method}_s{seed}" dataset=cifar10 partition=latent partition.num_distributions=5 \
    partition.shuffle_targets=true method=fedfomo,fedavg,local
}
# sigma 0 (no DP) is table2_cifar10_latent; delta 1e-5.
table4_cifar10_latent_dp() {
  queue table4_cifar10_latent_dp "{method}_sigma{dp_noise_multiplier}_s{seed}" dataset=cifar10 partition=latent \
    partition.num_distributions=5 "method=${METHODS:-fedfomo,fedavg}" dp.enabled=true dp.noise_multiplier=1,2
}
table6_cifar10_latent_ma_dp() {
  queue table6_cifar10_latent_ma_dp "{method}_nodp_s{seed}" dataset=cifar10 partition=latent \
    partition.num_distributions=5 method=fedfomo_ma
  queue table6_cifar10_latent_ma_dp "{method}_sigma{dp_noise_multiplier}_s{seed}" dataset=cifar10 partition=latent \
    partition.num_distributions=5 method=fedfomo_ma dp.enabled=true dp.noise_multiplier=1,2
}

if [ $# -eq 0 ]; then
  usage >&2
  exit 2
fi
case "$1" in
  -h|--help) usage; exit 0 ;;
  all) set -- $(for e in "${EXPERIMENTS[@]}"; do echo "${e%%|*}"; done) ;;
esac
for exp in "$@"; do
  if ! printf '%s\n' "${EXPERIMENTS[@]}" | grep -q "^$exp|"; then
    echo "error: unknown experiment '$exp'; allowed: all, $(for e in "${EXPERIMENTS[@]}"; do printf '%s ' "${e%%|*}"; done)" >&2
    exit 2
  fi
done
status=0
for exp in "$@"; do
  "$exp" || { code=$?; [ "$code" -ge 128 ] && exit "$code"; status=1; }
done
exit "$status"
