#!/usr/bin/env bash
# Reproduce the paper's experiments with the committed code. Results land in results/<name>/,
# one folder per run (config.yaml, rounds.csv, clients.csv, summary.json, partition.json,
# affinity/), and `python -m fedfomo.report results` prints the tables of the README.
#
#   bash run_experiments.sh                  # everything below, full scale (hours on a CPU)
#   bash run_experiments.sh table1_mnist     # one experiment
#   SCALE="samples_per_client=1000" TAG=spc1000 bash run_experiments.sh table1_cifar10   # scaled down
#
# Extra Hydra overrides for every run go into $SCALE (e.g. "num_rounds=5 samples_per_client=500");
# $TAG is appended to the results folder name so that scaled-down runs never mix with full ones.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
SCALE=${SCALE:-}
TAG=${TAG:-}

sweep() {  # sweep NAME OVERRIDES...
  local name=$1; shift
  # shellcheck disable=SC2086
  "$PY" -m fedfomo.main --multirun "$@" $SCALE \
    "hydra.sweep.dir=results/$name${TAG:+_$TAG}" "hydra.sweep.subdir=\${method.name}_s\${seed}"
}

# Table 1, MNIST, 15 clients, 100% participation, 20 rounds, E=5.
table1_mnist() { sweep table1_mnist dataset=mnist partition=pathological method=fedfomo,fedavg,local; }
# Table 1, CIFAR-10, 15 clients, 100% participation, 20 rounds, E=5.
table1_cifar10() { sweep table1_cifar10 dataset=cifar10 partition=pathological method=fedfomo,fedavg,local; }
# Table 1, MNIST, 15 clients: every comparison method next to FedFomo, FedAvg and Local
# (METHODS picks a subset, e.g. METHODS=mocha,pfedhn).
methods_mnist() {
  sweep methods_mnist dataset=mnist partition=pathological \
    "method=${METHODS:-fedfomo,fedavg,local,fedprox,fedavg_data,lg_fedavg,fedper,perfedavg,pfedme,cfl,fedfomo_ma,mocha,pfedhn}"
}
# Table 1, MNIST, 100 clients, 10% participation, 100 rounds.
table1_mnist_100() {
  sweep table1_mnist_100 dataset=mnist partition=pathological method=fedfomo,fedavg,local \
    num_clients=100 participation=0.1 num_rounds=100
}

# Table 2, CIFAR-10, latent-distribution non-IID with D=5, 15 clients (VGG-11 embedder; the cluster
# assignments ship with the package, so no VGG-11 training is needed).
table2_cifar10_latent() {
  sweep table2_cifar10_latent dataset=cifar10 partition=latent partition.num_distributions=5 \
    method=fedfomo,fedavg,local
}
# Table 2, CIFAR-10, every D of the paper.
table2_cifar10_latent_all_d() {
  "$PY" -m fedfomo.main --multirun dataset=cifar10 partition=latent partition.num_distributions=2,3,4,5,10 \
    method=fedfomo,fedavg,local $SCALE "hydra.sweep.dir=results/table2_cifar10_latent_all_d${TAG:+_$TAG}" \
    "hydra.sweep.subdir=\${method.name}_D\${partition.num_distributions}_s\${seed}"
}
# Table 3, CIFAR-10, out-of-local-distribution: latent D=5 split, (val, test) pairs shuffled among clients.
table3_cifar10_shuffled() {
  sweep table3_cifar10_shuffled dataset=cifar10 partition=latent partition.num_distributions=5 \
    partition.shuffle_targets=true method=fedfomo,fedavg,local
}

# Table 4, CIFAR-10, latent D=5, 15 clients: FedFomo and FedAvg with DP-SGD (Opacus), sigma 1 and 2
# (sigma 0, the non-private baseline, is table2_cifar10_latent), delta 1e-5.
# METHODS picks a subset (e.g. METHODS=fedavg TAG=spc1000_fedavg), SEEDS the seeds (default 0).
table4_cifar10_latent_dp() {
  "$PY" -m fedfomo.main --multirun dataset=cifar10 partition=latent partition.num_distributions=5 \
    "method=${METHODS:-fedfomo,fedavg}" "seed=${SEEDS:-0}" dp.enabled=true dp.noise_multiplier=1,2 $SCALE \
    "hydra.sweep.dir=results/table4_cifar10_latent_dp${TAG:+_$TAG}" \
    "hydra.sweep.subdir=\${method.name}_sigma\${dp.noise_multiplier}_s\${seed}"
}

# Table 6, CIFAR-10, latent D=5, 15 clients: FedFomo-MA (Appendix A.4, Eq. 14) without DP and with
# DP-SGD at sigma 1 and 2, delta 1e-5 (FedFomo and FedAvg rows: table4_cifar10_latent_dp).
table6_cifar10_latent_ma_dp() {
  local dir="results/table6_cifar10_latent_ma_dp${TAG:+_$TAG}"
  # shellcheck disable=SC2086
  "$PY" -m fedfomo.main --multirun dataset=cifar10 partition=latent partition.num_distributions=5 \
    method=fedfomo_ma "seed=${SEEDS:-0}" $SCALE "hydra.sweep.dir=$dir/nodp" \
    "hydra.sweep.subdir=\${method.name}_sigma0_s\${seed}"
  # shellcheck disable=SC2086
  "$PY" -m fedfomo.main --multirun dataset=cifar10 partition=latent partition.num_distributions=5 \
    method=fedfomo_ma "seed=${SEEDS:-0}" dp.enabled=true dp.noise_multiplier=1,2 $SCALE \
    "hydra.sweep.dir=$dir/dp" "hydra.sweep.subdir=\${method.name}_sigma\${dp.noise_multiplier}_s\${seed}"
}

if [ $# -eq 0 ]; then
  set -- table1_mnist table1_cifar10 methods_mnist table1_mnist_100 table2_cifar10_latent table3_cifar10_shuffled
fi
for exp in "$@"; do
  "$exp"
done
