#!/usr/bin/env bash
# Regenerates the small SentencePiece models the tests load, and the reference ids and decoded text
# that libsentencepiece's own tools give for sample.txt. Needs Debian's `sentencepiece` package
# (spm_train, spm_encode, spm_decode; `make deps` installs it). The tests use the committed files,
# so CI does not depend on these tools; where they are installed, the tests also compare live.
# usage: bash tests/golden/sentencepiece/make_models.sh   (from the repository root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 400000 "$src/data/tinyshakespeare.txt" >"$tmp/train.txt"
common=(--input="$tmp/train.txt" --normalization_rule_name=identity --num_threads=1 --minloglevel=2
        --max_sentence_length=100000)

# Llama-2 / Mistral style: BPE, byte fallback, whitespace kept, digits split, dummy prefix.
spm_train "${common[@]}" --model_prefix="$tmp/llama_bpe" --model_type=bpe --vocab_size=1000 \
  --byte_fallback=true --remove_extra_whitespaces=false --add_dummy_prefix=true --split_digits=true \
  --allow_whitespace_only_pieces=true --character_coverage=0.9995 --unk_id=0 --bos_id=1 --eos_id=2
# spm_train's defaults (unigram, extra whitespace removed, no byte fallback) but the identity
# normalizer, whose file is small (nmt_nfkc adds a 240 KB character map).
spm_train "${common[@]}" --model_prefix="$tmp/unigram" --model_type=unigram --vocab_size=800
# Whitespace as a suffix ("word▁"): a model with no safe cut before a space.
spm_train "${common[@]}" --model_prefix="$tmp/suffix" --model_type=bpe --vocab_size=400 \
  --treat_whitespace_as_suffix=true

for m in llama_bpe unigram suffix; do
  cp "$tmp/$m.model" "$here/$m.model"
  spm_encode --model="$here/$m.model" --output_format=id <"$here/sample.txt" >"$here/$m.ids"
  spm_decode --model="$here/$m.model" --input_format=id <"$here/$m.ids" >"$here/$m.decoded.txt"
done
echo "wrote $here/{llama_bpe,unigram,suffix}.{model,ids,decoded.txt}"
