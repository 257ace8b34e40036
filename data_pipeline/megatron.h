// Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py, the "mmap" kind):
// token ids in PREFIX.bin, and PREFIX.idx, all little-endian:
//   "MMIDIDX\0\0" (9 bytes) | u64 version = 1 | u8 dtype code | u64 sequence count N
//   | u64 document-index length D (= documents + 1)
//   | i32 sizes[N] (tokens per sequence) | i64 pointers[N] (byte offset of each sequence in .bin)
//   | i64 document_index[D] (0, then the sequence count after each document)
// dtype codes: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f32, 7 f64, 8 u16. preprocess writes one sequence
// per document piece (each whole document ends with EOS, like Megatron's --append-eod) in u16
// when the vocabulary fits, else i32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data_pipeline/shard_writer.h"

namespace moe {

struct MegatronIndex {
  int dtype_code = 0;
  int item_size = 0;
  bool is_signed = false;
  int64_t sequences = 0, documents = 0, tokens = 0;
};

// Parses and checks an index held in memory (`path` names it in errors): the header, the sizes,
// that the sequences lie back to back from byte 0 of .bin (as Megatron writes them; the reader
// takes .bin as one token stream), and that the document index rises from 0 to at most N. Float
// dtypes are refused (token ids are integers).
MegatronIndex parse_megatron_index(const std::string& path, const uint8_t* data, size_t size);

// The first token of every document of an index that parse_megatron_index accepted (the start of
// the sequence each document_index entry but the last names), rising, offsets into .bin's tokens.
std::vector<int64_t> megatron_document_starts(const uint8_t* data, size_t size);

// The dtype code for `width` bytes per token as preprocess writes it: 2 -> 8 (u16), 4 -> 4 (i32).
int megatron_code(int width);

// Megatron format: dir/train and dir/val each get data_text_document.{bin,idx} and a manifest.json
// (format "megatron"). Returns {train manifest, val manifest}.
std::pair<nlohmann::ordered_json, nlohmann::ordered_json> finish_megatron(const FinishInput& in);

}  // namespace moe
