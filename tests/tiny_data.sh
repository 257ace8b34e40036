# Sourced by the test scripts that train configs/tiny.yaml, with their own arguments:
#   source "$(dirname "$0")/../tiny_data.sh" "$@"      (args: <moe binary> <source dir>)
# Sets MOE, SRC and TMP (a folder removed on exit), the environment for mpirun as root with more
# ranks than cores and one thread per rank, and $TMP/data: the first 100 kB of Shakespeare as
# byte-tokenized shards.
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
export MOE_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
head -c 100000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" > /dev/null
