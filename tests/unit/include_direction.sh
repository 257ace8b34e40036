#!/usr/bin/env bash
# Usage: include_direction.sh <source dir>
#
# Includes point the way the libraries link (each folder's CMakeLists.txt; docs/architecture.md,
# "Layout"): framework includes nothing of ours, model and data_pipeline and checkpoints only
# framework, parallel also model, launch anything. Every folder compiles with the source root on
# its include path, so a header-only include against that direction (model/ including parallel/)
# would compile and link without complaint: this test reads every #include of the library folders
# instead. It first checks that it catches violations planted in a scratch tree, so a broken
# pattern cannot make it pass by finding nothing.
set -euo pipefail
SRC=$(realpath "$1")

# The library a file belongs to (into $lib): its top folder, except the CUDA backend (moe_cuda) and the NCCL
# process group (moe_nccl), libraries of their own inside framework/ and parallel/.
library() {
  case $1 in
    framework/cuda/*) lib=cuda ;;
    parallel/nccl_*) lib=nccl ;;
    *) lib=${1%%/*} ;;
  esac
}
# The libraries each one may include besides itself: its link line.
declare -A MAY=(
  [framework]=""
  [cuda]="framework"
  [model]="framework"
  [data_pipeline]="framework"
  [checkpoints]="framework"
  [parallel]="framework model"
  [nccl]="framework model parallel cuda"
  [launch]="framework cuda model data_pipeline checkpoints parallel nccl"
)
# System headers that belong to one layer: MPI to the process groups (model/ never sees it), NCCL
# to moe_nccl, HDF5 to the checkpoints, the CUDA runtime to the CUDA backend and NCCL.
declare -A SYSTEM=([mpi.h]="parallel nccl" [nccl.h]="nccl" [hdf5.h]="checkpoints" [cuda_runtime.h]="cuda nccl"
                   [cuda_runtime_api.h]="cuda nccl")
OURS=" framework model parallel data_pipeline checkpoints launch tests "

# Prints one line per include against the direction in the tree at $1; fails if there is one.
violations() {
  local n=0 hit file line target from to lib
  while IFS= read -r hit; do
    file=${hit%%:*}
    line=${hit#*:}; line=${line%%:*}
    [[ ${hit#*:*:} =~ include[[:space:]]*([<\"])([^>\"]+) ]] || continue
    target=${BASH_REMATCH[2]}
    library "$file"; from=$lib
    if [[ ${BASH_REMATCH[1]} == "<" ]]; then
      [[ -v SYSTEM[$target] ]] || continue
      [[ " ${SYSTEM[$target]} " == *" $from "* ]] && continue
      echo "$file:$line: $from includes <$target>, which belongs to: ${SYSTEM[$target]}"
    else
      [[ $target == */* && $OURS == *" ${target%%/*} "* ]] || continue
      library "$target"; to=$lib
      [[ $to == "$from" || " ${MAY[$from]} " == *" $to "* ]] && continue
      echo "$file:$line: $from includes \"$target\" ($to); $from may include: ${MAY[$from]:-nothing of ours}"
    fi
    n=$((n + 1))
  done < <(cd "$1" && grep -rnE --include='*.h' --include='*.cpp' --include='*.cu' --include='*.cuh' \
             '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]' framework model parallel data_pipeline checkpoints launch)
  [ "$n" -eq 0 ]
}

# The checker checks itself: a scratch tree with one planted violation of each kind.
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP"/{framework/cuda,model,parallel,data_pipeline,checkpoints,launch}
printf '#include "framework/tensor.h"\n#include "parallel/comm.h"\n' > "$TMP/model/planted.h"
printf '#include <vector>\n  #  include <mpi.h>\n' > "$TMP/framework/planted.cpp"
printf '#include "model/model.h"\n' > "$TMP/data_pipeline/planted.cpp"
printf '#include "framework/cuda/ops.h"\n' > "$TMP/checkpoints/planted.cpp"
printf '#include "framework/cuda/ops.h"\n#include "parallel/comm.h"\n#include <mpi.h>\n' > "$TMP/parallel/nccl_planted.cpp"
printf '#include "framework/cuda/ops.h"\n' > "$TMP/launch/fine.cpp"
if found=$(violations "$TMP"); then
  echo "FAIL: the check found nothing in a tree with planted violations"; exit 1
fi
want=("model/planted.h:2:" "framework/planted.cpp:2:" "data_pipeline/planted.cpp:1:" "checkpoints/planted.cpp:1:")
for w in "${want[@]}"; do
  grep -q "^$w" <<< "$found" || { echo "FAIL: the check missed the planted $w"; echo "$found"; exit 1; }
done
[ "$(wc -l <<< "$found")" -eq "${#want[@]}" ] || { echo "FAIL: the check flagged allowed includes:"; echo "$found"; exit 1; }

if ! found=$(violations "$SRC"); then
  echo "FAIL: includes against the direction of the libraries (docs/architecture.md, \"Layout\"):"
  echo "$found"
  exit 1
fi
echo "ok: every #include of framework, model, parallel, data_pipeline, checkpoints and launch follows the link lines"
