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
#   $DS      comma list of D values for table5_cifar100_latent (default 2,3,4,5,10)
#   $OUT     where the results go (default runs)
#   $DRY_RUN set (e.g. DRY_RUN=1): print every run of the experiment and its overrides, run nothing
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
  "$PY" -m fedfomo.queue ${DRY_RUN:+--dry-run} "$OUT/$name${TAG:+_$TAG}" "$template" "$@" "seed=$SEEDS" $SCALE
}

# One reduced scale per dataset, what this 2-core CPU can afford (README, "Running the experiments"):
#   MNIST      full scale (the 15-client comparison of every method: SCALE="samples_per_client=500" TAG=spc500)
#   CIFAR-10   SCALE="samples_per_client=1000" TAG=spc1000 (100 clients: SCALE="samples_per_client=300" TAG=spc300)
#   CIFAR-100  SCALE="samples_per_client=1000" TAG=spc1000, always with the held-out test split
#              (dataset.test_split=holdout: 10,000 training images, class-balanced, seed 0), since the
#              official test file is not available here; every such number is marked so.
# name | paper | setting | reduced scale run here | CPU time of one run on the 2-core development CPU
EXPERIMENTS=(
  "table1_mnist|Table 1|MNIST pathological, 15 clients, 20 rounds, E=5: every method|full scale|13-18 min per run alone (FedFomo, FedAvg, Local; measured; up to 70 beside other jobs); 2-15 min per run at samples_per_client=500 (every method but pFedMe, 12-44 min; measured, three seeds on two machines)"
  "table1_mnist_100|Table 1|MNIST pathological, 100 clients, 10% participation, 100 rounds: every method|full scale|7-8 min per run (seed 0 of FedFomo, FedAvg, Local; measured); seeds 1, 2 took 15-57 min with 2.1-8.0 times seed 0's training seconds on the same data, i.e. on a shared CPU; the other methods 5.9-8.3 min alone and 11-15 min beside another job, FedFomo-MA 19.2-45.2 (seed 2 on the slower machine), pFedMe 106.4 and FedAvg + Data 87.6-95.5 on a machine 2.6 times slower than the others' (three seeds of FedProx, LG-FedAvg, MOCHA, CFL, Per-FedAvg, FedPer, pFedHN and FedFomo-MA, seeds 0, 1 of FedAvg + Data, seed 0 of pFedMe, measured)"
  "table1_cifar10|Table 1|CIFAR-10 pathological, 15 clients, 20 rounds: every method|samples_per_client=1000|4.3-17.2 min per run reduced, pFedMe 24.0-36.2 (measured; the upper end beside other jobs); full scale not run (the full-scale latent D=3 runs took 22.4-27.6 min)"
  "table1_cifar10_100|Table 1|CIFAR-10 pathological, 100 clients, 10% participation, 100 rounds: every method|samples_per_client=300|5-29 min per run reduced (measured: FedFomo, FedAvg, Local 6.4-11.1; the other methods 4.6-6.3, FedFomo-MA 14.1-16.1, pFedMe 20.7-23.7, FedAvg + Data 25.5-28.5)"
  "table2_cifar10_latent_d2|Table 2|CIFAR-10 latent D=2 (VGG-11 clusters), 15 clients: fedfomo, fedavg, local|samples_per_client=1000|6.8-8.7 min on this CPU (measured; 5 of the 9 runs on an H200 machine, 3.6-4.5 min)"
  "table2_cifar10_latent_d3|Table 2|CIFAR-10 latent D=3: fedfomo, fedavg, local|samples_per_client=1000|7.1-9.8 min on this CPU (measured; seeds 1, 2 on an H200 machine, 3.5-4.5 min); full scale 22.4 (FedAvg, two attempts) and 27.6 (FedFomo) min (measured)"
  "table2_cifar10_latent_d4|Table 2|CIFAR-10 latent D=4: fedfomo, fedavg, local|samples_per_client=1000|6.7-8.7 min on this CPU (measured; seed 1 on an H200 machine, 3.9-4.5 min)"
  "table2_cifar10_latent|Table 2|CIFAR-10 latent D=5: every method|samples_per_client=1000|4.4-13.2 min per run on this CPU for every method but pFedMe, which takes 25-32 min (measured; FedFomo 5.6-8.3; seed 0 of seven methods on an H200 machine, 4.7-6.0 min)"
  "table2_cifar10_latent_d10|Table 2|CIFAR-10 latent D=10 (class-label distributions, the authors'): fedfomo, fedavg, local|samples_per_client=1000|7.1-11.3 min (measured)"
  "table3_cifar10_shuffled|Table 3|CIFAR-10 out-of-local-distribution targets, latent D=5: every method|samples_per_client=1000|5.2-8.6 min (measured; Local seed 2 15.5 beside other jobs); FedFomo, FedAvg and Local ran (three seeds), the other methods not"
  "table3_cifar100_shuffled|Table 3|CIFAR-100 (held-out test) out-of-local-distribution targets, latent D=5: every method|samples_per_client=1000|9.9-23.3 min (measured; the upper end beside other jobs); FedFomo, FedAvg and Local ran (three seeds), the other methods not"
  "table4_cifar10_latent_dp|Table 4|CIFAR-10 latent D=5, no DP and DP-SGD sigma 1, 2: fedfomo, fedavg|samples_per_client=1000|no DP: the Table 2 D=5 runs; FedFomo DP 9.6-10.4 min alone, 15-16 beside other jobs; FedAvg DP 10.8-11.1 min alone (seeds 1, 2), 29-44 min for seed 0 with two older, slower commits beside other jobs (measured)"
  "table4_cifar100_latent_dp|Table 4|CIFAR-100 (held-out test) latent D=5, no DP and sigma 1, 2: fedfomo, fedavg|samples_per_client=1000|8.1-15.3 min no DP (the Table 5 D=5 FedFomo and FedAvg runs); FedFomo DP 10.5-13.3 min, FedAvg DP 10.1-11.3 min, alone (measured)"
  "table5_cifar100_latent|Table 5|CIFAR-100 (held-out test) latent, D = 2, 3, 4, 5, 10: fedfomo, fedavg, local|samples_per_client=1000|4.7-6.5 min per run at D=2, 3, 4, 10 alone (FedFomo, Local, FedAvg); 7.6-15.3 min at D=5; full scale D=5: FedFomo 18.4, Local 15.3 min alone (measured)"
  "table6_cifar10_latent_ma_dp|Table 6|CIFAR-10 latent D=5, FedFomo-MA without DP and at sigma 1, 2|samples_per_client=1000|no DP 5.9-6.4 min (seeds 1, 2: the Table 2 D=5 runs; seed 0 26.1 beside other jobs); DP 13.1-13.4 min alone, up to 43 beside other jobs (measured)"
  "table6_cifar100_latent_ma_dp|Table 6|CIFAR-100 (held-out test) latent D=5, FedFomo-MA without DP and at sigma 1, 2|samples_per_client=1000|6.1-7.6 min without DP, 11.5-14.3 min with DP, alone (measured)"
  "fig3_cifar10_eps_m|Fig. 3|CIFAR-10 latent D=5, FedFomo: epsilon 0, 0.3, 0.6, 0.9 x M 3, 5, 10|samples_per_client=1000|5-8 min per setting (the D=5 FedFomo run, measured); 10.8-12.5 min on a slower, AVX2-only 2-core CPU (measured); 4 min on an H200 machine running 8 at once"
  "fig9_cifar10_val_split|Fig. 9|CIFAR-10 latent D=5, FedFomo: val_ratio 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9|samples_per_client=1000|5-8 min per setting (the D=5 FedFomo run, measured); 2-5 min on an H200 machine running 8 at once"
)

usage() {
  echo "usage: bash run_experiments.sh EXPERIMENT... | all | --help"
  echo
  echo "Experiments (results in \$OUT/EXPERIMENT[_\$TAG]/, OUT=$OUT; seeds \$SEEDS=$SEEDS):"
  for e in "${EXPERIMENTS[@]}"; do
    IFS='|' read -r name table setting scale cost <<<"$e"
    printf '  %-28s %s: %s\n' "$name" "$table" "$setting"
    printf '  %-28s full scale:   bash run_experiments.sh %s\n' "" "$name"
    if [ "$scale" != "full scale" ]; then
      printf '  %-28s reduced here: SCALE="%s" TAG=%s bash run_experiments.sh %s\n' "" "$scale" \
        "spc${scale##*=}" "$name"
    fi
    printf '  %-28s CPU: %s\n' "" "$cost"
  done
  echo
  echo "Re-running an experiment continues it (completed runs are skipped, interrupted ones resumed)."
  echo "Tables: python -m fedfomo.report \$OUT; figures: python -m fedfomo.ablation fig3|fig9 FOLDER --out PNG."
}

HOLDOUT="dataset=cifar100 dataset.test_split=holdout"
table1_mnist() { queue table1_mnist "{method}_s{seed}" dataset=mnist partition=pathological "method=${METHODS:-$ALL_METHODS}"; }
table1_cifar10() { queue table1_cifar10 "{method}_s{seed}" dataset=cifar10 partition=pathological "method=${METHODS:-$ALL_METHODS}"; }
table1_mnist_100() {
  queue table1_mnist_100 "{method}_s{seed}" dataset=mnist partition=pathological "method=${METHODS:-$ALL_METHODS}" \
    num_clients=100 participation=0.1 num_rounds=100
}
table1_cifar10_100() {
  queue table1_cifar10_100 "{method}_s{seed}" dataset=cifar10 partition=pathological "method=${METHODS:-$ALL_METHODS}" \
    num_clients=100 participation=0.1 num_rounds=100
}
# Table 2 (and 3): the VGG-11 cluster assignments ship with the package, so no VGG-11 training is needed.
latent_d() {  # latent_d NAME D DEFAULT_METHODS [extra overrides]
  local name=$1 d=$2 methods=$3; shift 3
  queue "$name" "{method}_s{seed}" dataset=cifar10 partition=latent "partition.num_distributions=$d" \
    "method=${METHODS:-$methods}" "$@"
}
table2_cifar10_latent_d2() { latent_d table2_cifar10_latent_d2 2 fedfomo,fedavg,local; }
table2_cifar10_latent_d3() { latent_d table2_cifar10_latent_d3 3 fedfomo,fedavg,local; }
table2_cifar10_latent_d4() { latent_d table2_cifar10_latent_d4 4 fedfomo,fedavg,local; }
table2_cifar10_latent() { latent_d table2_cifar10_latent 5 "$ALL_METHODS"; }
table2_cifar10_latent_d10() { latent_d table2_cifar10_latent_d10 10 fedfomo,fedavg,local; }
table3_cifar10_shuffled() {
  queue table3_cifar10_shuffled "{method}_s{seed}" dataset=cifar10 partition=latent partition.num_distributions=5 \
    partition.shuffle_targets=true "method=${METHODS:-$ALL_METHODS}"
}
table3_cifar100_shuffled() {
  # shellcheck disable=SC2086
  queue table3_cifar100_shuffled "{method}_s{seed}" $HOLDOUT partition=latent partition.num_distributions=5 \
    partition.shuffle_targets=true "method=${METHODS:-$ALL_METHODS}"
}
dp_table() {  # dp_table NAME DEFAULT_METHODS DATASET_OVERRIDES...: no DP, then sigma 1 and 2 (delta 1e-5)
  local name=$1 methods=$2; shift 2
  queue "$name" "{method}_nodp_s{seed}" "$@" partition=latent partition.num_distributions=5 "method=${METHODS:-$methods}"
  queue "$name" "{method}_sigma{dp_noise_multiplier}_s{seed}" "$@" partition=latent partition.num_distributions=5 \
    "method=${METHODS:-$methods}" dp.enabled=true dp.noise_multiplier=1,2
}
table4_cifar10_latent_dp() { dp_table table4_cifar10_latent_dp fedfomo,fedavg dataset=cifar10; }
# shellcheck disable=SC2086
table4_cifar100_latent_dp() { dp_table table4_cifar100_latent_dp fedfomo,fedavg $HOLDOUT; }
table5_cifar100_latent() {
  # shellcheck disable=SC2086
  queue table5_cifar100_latent "{method}_D{partition_num_distributions}_s{seed}" $HOLDOUT partition=latent \
    "partition.num_distributions=${DS:-2,3,4,5,10}" "method=${METHODS:-fedfomo,fedavg,local}"
}
table6_cifar10_latent_ma_dp() { dp_table table6_cifar10_latent_ma_dp fedfomo_ma dataset=cifar10; }
# shellcheck disable=SC2086
table6_cifar100_latent_ma_dp() { dp_table table6_cifar100_latent_ma_dp fedfomo_ma $HOLDOUT; }
fig3_cifar10_eps_m() {
  queue fig3_cifar10_eps_m "eps{method_epsilon}_M{method_num_models}_s{seed}" dataset=cifar10 partition=latent \
    partition.num_distributions=5 method=fedfomo method.epsilon=0.0,0.3,0.6,0.9 method.num_models=3,5,10
}
fig9_cifar10_val_split() {
  queue fig9_cifar10_val_split "val{val_ratio}_s{seed}" dataset=cifar10 partition=latent partition.num_distributions=5 \
    method=fedfomo val_ratio=0.01,0.05,0.1,0.2,0.4,0.6,0.8,0.9
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
