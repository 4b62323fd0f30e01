#!/usr/bin/env bash
# The GPU benchmarks (docs/benchmarks.md) as one prepared script.
#
#   bash experiments/bench/gpu.sh prepare           # here: fetch the Captum and Zennit wheels into .whl/
#   bash experiments/bench/gpu.sh run [NAME ...]    # on the GPU machine; default: every benchmark
#   SMOKE=1 bash experiments/bench/gpu.sh run       # a dry run at tiny sizes, on any machine
#
# NAME is one of: selftest featvis rules-gains rules-mining pathways attribution subnet (in this
# order by default, cheapest first; selftest runs a few kernel and LRP test files on the
# machine's CPU, to show at once whether its JAX version breaks the library). Each runs under
# its own time limit (seconds, after the name in BENCHES below) and a failure does not stop the
# others. The logs and every results file that changed go into $OUT/results.tgz, with a
# one-line-per-benchmark $OUT/summary.txt (OUT defaults to /tmp/jaxplain-gpu). The machine
# needs python3 with a CUDA build of jax, torch, flax, optax, equinox and orbax (PYTHON
# overrides python3); Captum and Zennit come from .whl/ when present.
# A smoke run works on a copy of the tree, so the committed results are never overwritten.
set -u
cd "$(dirname "$0")/../.."

wheels() {
  mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d .whl captum==0.9.0 zennit==0.5.1
  ls -l .whl
}

# name  limit_s  [VAR=value ...] arguments (GPU sizes)  |  arguments (smoke sizes)
SELFTEST="JAX_PLATFORMS=cpu -m pytest -q -x -p no:cacheprovider tests/core/test_sites.py
  tests/core/test_capture_intervene.py tests/core/test_rewrite_backward.py
  tests/core/test_written_out.py tests/attribution/test_lrp.py
  tests/core/test_scan.py::test_a_linen_scan_over_layers_has_one_site_per_layer
  tests/core/test_scan.py::test_rules_apply_inside_the_loop"
BENCHES=(
  "selftest     65  ${SELFTEST//$'\n'/ }
                    | ${SELFTEST//$'\n'/ }"
  "featvis      45  -m experiments.bench.featvis --rounds 3 --ablation-rounds 1
                    | -m experiments.bench.featvis --steps 4 --rounds 1 --ablation-rounds 1"
  "rules-gains  75  -m experiments.bench.rules --only gains --gain-size 50000 512 64 256 --rounds 2 --numpy-heads 1 --plain-prefixes 8 --tag gains_50000x512
                    | -m experiments.bench.rules --only gains --gain-size 2000 64 8 8 --rounds 1 --numpy-heads 1 --plain-prefixes 2 --tag smoke"
  "rules-mining 100 -m experiments.bench.rules --only mining --full
                    | -m experiments.bench.rules --only mining --rows 2000 --units 256 --tag smoke"
  "pathways     120 experiments/bench/pathways.py --resnet50 224 --resnet-batch 32 --rounds 3 --repeats 3
                    | experiments/bench/pathways.py --images 8 --rounds 1 --repeats 1 --resnet50 32 --resnet-batch 2"
  "attribution  180 experiments/bench/attribution.py --repeats 3
                    | experiments/bench/attribution.py --batch 4 --repeats 1 --resnet50 32 --resnet-batch 2 --ig-images 2"
  "subnet       200 experiments/bench/subnet.py --resnet50 224 --steps 100 --rounds 3
                    | experiments/bench/subnet.py --steps 3 --rounds 1 --resnet50 32"
)

run() {
  local out=${OUT:-/tmp/jaxplain-gpu} py smoke=${SMOKE:-0}
  py=$(command -v "${PYTHON:-python3}") || { echo "no ${PYTHON:-python3}"; exit 1; }
  [[ $py == /* ]] || py=$PWD/$py  # absolute, but not through the venv's links
  mkdir -p "$out/pack/logs"
  out=$(cd "$out" && pwd)
  if [ "$smoke" = 1 ]; then  # work on a copy: the benchmarks write into experiments/results
    local copy
    copy=$(mktemp -d)
    git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$copy"
    cd "$copy"
  fi
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/jaxplain-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/jaxplain-site
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  local stamp
  stamp=$(mktemp)
  {
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    "$py" -c "import sys, jax, torch; print(sys.version.split()[0], 'jax', jax.__version__,
jax.devices(), 'torch', torch.__version__, torch.cuda.is_available())" 2>&1
  } >"$out/summary.txt"
  local wanted=("$@") entry name limit args gpu_args smoke_args start rc words envs
  for entry in "${BENCHES[@]}"; do
    read -r name limit gpu_args <<<"${entry%%|*}"
    smoke_args=${entry#*|}
    if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then continue; fi
    args=$gpu_args
    [ "$smoke" = 1 ] && args=$smoke_args
    read -ra words <<<"$args"
    envs=()
    while [[ ${words[0]:-} == *=* ]]; do envs+=("${words[0]}"); words=("${words[@]:1}"); done
    start=$SECONDS
    timeout -k 10 "$limit" env "${envs[@]}" "$py" "${words[@]}" >"$out/pack/logs/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $((SECONDS - start))s (limit ${limit}s): $(grep -v "^[[:space:]]*$" "$out/pack/logs/$name.log" | tail -n 1)" \
      | tee -a "$out/summary.txt"
  done
  find experiments/results -type f -newer "$stamp" >"$out/pack/logs/changed.txt"
  xargs -r cp --parents -t "$out/pack" <"$out/pack/logs/changed.txt"
  tar czf "$out/results.tgz" -C "$out/pack" .
  echo "results: $out/results.tgz ($(wc -l <"$out/pack/logs/changed.txt") results files)"
}

case "${1:-}" in
  prepare) wheels ;;
  run) shift; run "$@" ;;
  *) sed -n 2,16p "$0"; exit 2 ;;
esac
