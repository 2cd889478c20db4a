#!/usr/bin/env bash
# Prepares, on the development machine, what the GPU runs carry to the
# device machine (see benchmarks/gpu/README.md): the keras, optree and namex
# wheels for its Python 3.12 (it has JAX but no Keras) in .whl/, and the
# data archives of ../shared/data split into groups of at most 56 MiB in
# .data/<group>/<dataset>/ (a call carries at most 64 MiB with the working
# tree). Both folders are git-ignored. Prints the groups.
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${SHARED_DATA:-../shared/data}
limit=$((56 * 1024 * 1024))
python=${PYTHON:-python3}

if [ ! -d "$shared/gtsrb" ] || [ ! -d "$shared/cifar10" ]; then
  echo "error: expected the data archives in $shared/gtsrb and" \
    "$shared/cifar10 (set SHARED_DATA to their parent folder)" >&2
  exit 1
fi

keras_version=$("$python" -c "from importlib.metadata import version; print(version('keras'))")
optree_version=$("$python" -c "from importlib.metadata import version; print(version('optree'))")
rm -rf .whl && mkdir -p .whl
for package in "keras==$keras_version" "optree==$optree_version" namex; do
  "$python" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$package"
done

# First-fit groups, largest archives first; the wheels travel with group 1.
rm -rf .data && mkdir -p .data
group=1
used=$(du -bc .whl/* | tail -1 | cut -f1)
for archive in $(ls -S "$shared"/gtsrb/*.zip "$shared"/cifar10/*.zip); do
  size=$(stat -c %s "$archive")
  placed=
  for g in $(seq 1 "$group"); do
    mkdir -p .data/"$g"
    current=$(du -bs .data/"$g" | cut -f1)
    [ "$g" = 1 ] && current=$((current + used))
    if [ $((current + size)) -le "$limit" ]; then
      placed=$g
      break
    fi
  done
  if [ -z "$placed" ]; then
    group=$((group + 1))
    placed=$group
  fi
  dataset=$(basename "$(dirname "$archive")")
  mkdir -p .data/"$placed"/"$dataset"
  cp "$archive" .data/"$placed"/"$dataset"/
done
for g in $(seq 1 "$group"); do
  echo "group $g: $(du -sh .data/"$g" | cut -f1) $(cd .data/"$g" && ls -- */*)"
done
echo "wheels: $(ls .whl)"
