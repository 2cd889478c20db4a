#!/usr/bin/env bash
# Runs on the device machine, from the repository root (see
# benchmarks/gpu/README.md).
#
#   bash benchmarks/gpu/device.sh stash
#       copies the carried .data/<group>/<dataset>/ archives and .whl/
#       wheels into /tmp/keras_dib (the only place that survives between
#       calls while the machine is warm) and lists what is there;
#   bash benchmarks/gpu/device.sh run <job> [extra flags]
#       installs the wheels into /tmp/keras_dib/site and runs one job on
#       JAX, writing its JSON lines and plots into $OUT (or ./gpu_results):
#         gtsrb     accuracy, VGG-11-BN, greedy DIB / greedy CE / end to end
#         cifar10   the same on the CIFAR-10 JPEG copy
#         resnet    accuracy, ResNet-18, greedy DIB / end to end, GTSRB
#         resnet_cifar10  the same on the CIFAR-10 JPEG copy
#         schedules accuracy, VGG-11-BN, simultaneous DIB, GTSRB
#         vgg16     accuracy, VGG-16-BN, greedy DIB / end to end, GTSRB
#         memory    peak device memory per block vs end to end (+ simultaneous)
#         speed     images/s per block and objective, Renyi share, batch 64-512
#       extra flags go to the benchmark script (e.g. --seeds 0,1,2).
set -euo pipefail
cd "$(dirname "$0")/../.."
home=/tmp/keras_dib
out=${OUT:-$PWD/gpu_results}

case "${1:-}" in
  stash)
    mkdir -p "$home/data" "$home/wheels"
    if [ -d .data ]; then
      for group in .data/*/; do cp -r "$group"* "$home/data/"; done
    fi
    if [ -d .whl ]; then cp .whl/*.whl "$home/wheels/"; fi
    find "$home" -type f | sort
    ;;
  run)
    job=${2:?"usage: device.sh run <job> [flags]"}
    shift 2
    if ! python3 -c "import keras" 2>/dev/null; then
      python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$home/site" "$home"/wheels/*.whl
      export PYTHONPATH="$home/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv \
      >"$out/nvidia_smi_$job.txt" 2>&1 || true
    gtsrb=(--data_dir "$home/data/gtsrb" --setting gpu --results_dir "$out")
    case "$job" in
      gtsrb) python3 benchmarks/accuracy.py "${gtsrb[@]}" \
        --head_conv_filters 32 --variant_name conv32 \
        --plot_name accuracy_gpu_gtsrb.png "$@" ;;
      cifar10) python3 benchmarks/accuracy.py --dataset cifar10 \
        --data_dir "$home/data/cifar10" --setting gpu --results_dir "$out" \
        --head_conv_filters 32 --variant_name conv32 \
        --plot_name accuracy_gpu_cifar10.png "$@" ;;
      resnet) python3 benchmarks/accuracy.py "${gtsrb[@]}" \
        --architecture resnet --modes greedy_dib,end_to_end \
        --head_conv_filters 32 --variant_name conv32 \
        --plot_name accuracy_gpu_resnet18.png "$@" ;;
      resnet_cifar10) python3 benchmarks/accuracy.py --dataset cifar10 \
        --data_dir "$home/data/cifar10" --setting gpu --results_dir "$out" \
        --architecture resnet --modes greedy_dib,end_to_end \
        --head_conv_filters 32 --variant_name conv32 \
        --plot_name accuracy_gpu_resnet18_cifar10.png "$@" ;;
      schedules) python3 benchmarks/accuracy.py "${gtsrb[@]}" \
        --modes simultaneous_dib --head_conv_filters 32 \
        --variant_name conv32 --plot_name accuracy_gpu_simultaneous.png "$@" ;;
      vgg16) python3 benchmarks/accuracy.py "${gtsrb[@]}" --depth 16 \
        --modes greedy_dib,end_to_end --head_conv_filters 32 \
        --variant_name conv32 --plot_name accuracy_gpu_vgg16.png "$@" ;;
      memory) python3 benchmarks/memory.py --setting gpu \
        --data_dir "$home/data/gtsrb" --output_dir "$out" "$@" ;;
      speed) python3 benchmarks/speed.py --setting gpu \
        --data_dir "$home/data/gtsrb" --output_dir "$out" "$@" ;;
      *) echo "error: unknown job '$job' (expected gtsrb, cifar10, resnet," \
        "resnet_cifar10, schedules, vgg16, memory or speed)" >&2; exit 2 ;;
    esac
    ;;
  *)
    echo "usage: device.sh stash | device.sh run <job> [flags]" >&2
    exit 2
    ;;
esac
