#!/usr/bin/env bash
# Pack what benchmarks/gpu/short_schedule.sh needs on a lent GPU machine that lacks it, into
# .devpack/ (ignored by git; the device tool carries it):
#   site.tar.xz          SimpleITK and connected-components-3d, unzipped cp312 wheels (the
#                        machine has torch, numpy, scipy, scikit-image and numba, not these two)
#   chaos_t2spir.tar.xz  ../shared/data/chaos_t2spir as plain .nii, xz-compressed (18 MB against
#                        26 MB as .nii.gz), since ../shared does not travel
# Together with the tracked tree this stays under the tool's 64 MiB. Needs pip's registry.
#
#   bash benchmarks/gpu/pack.sh [DATA_ROOT]
set -euo pipefail
DATA_ROOT=${1:-../shared/data}
PACK=${PACK:-.devpack}
PYVER=${PYVER:-3.12}  # the lent machine's python3
[ -d "$DATA_ROOT/chaos_t2spir" ] || { echo "no $DATA_ROOT/chaos_t2spir" >&2; exit 2; }
mkdir -p "$PACK"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$work/wheels" \
    "SimpleITK==$(python3 -c 'import SimpleITK; print(SimpleITK.Version.VersionString())')" \
    "connected-components-3d>=3.12"
mkdir "$work/site"
for w in "$work"/wheels/*.whl; do unzip -q -o "$w" -d "$work/site"; done
tar -cf - -C "$work/site" . | xz -T2 -6 > "$PACK/site.tar.xz"
mkdir -p "$work/data/chaos_t2spir"
for f in "$DATA_ROOT"/chaos_t2spir/*.nii.gz; do
    gunzip -c "$f" > "$work/data/chaos_t2spir/$(basename "$f" .gz)"
done
tar -cf - -C "$work/data" chaos_t2spir | xz -T2 -9 > "$PACK/chaos_t2spir.tar.xz"
du -b "$PACK"/*.tar.xz
