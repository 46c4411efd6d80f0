#!/bin/bash
# Stage what benchmarks/device/glas_sweep.sh needs on a GPU machine that receives the repository
# only (no ../shared, no package index): wheels of the packages its image lacks, focal-al's own
# wheel, and GlaS at the glas-cpu resolution. Run from the repository root; .gpu/ must be ignored
# (e.g. listed in .git/info/exclude) and carried to the machine.
set -eu
mkdir -p .gpu/whl
rm -f .gpu/whl/focal_al-*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl skorch==1.4.0 modAL-python==0.4.1 POT==0.9.6.post1
python3 -m pip wheel -q --no-deps --no-build-isolation -w .gpu/whl .
[ -d .gpu/glas-half ] || python3 benchmarks/device/stage_glas.py ../shared/data/glas .gpu/glas-half --scale 0.5
du -sh .gpu
