// moe preprocess: flags -> PreprocessOptions; prints the summary as one JSON line on stdout.
#include <cstdio>

#include "data_pipeline/shards.h"
#include "framework/error.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moe {
namespace {

const char* kUsage =
    "usage: moe preprocess --input PATH... --tokenizer T --output DIR [flags]\n"
    "\n"
    "Tokenises raw text into DIR/train/ and DIR/val/ (docs/formats.md). Killed at any point and run\n"
    "again with the same arguments, it goes on from its last checkpoint (one per shard).\n"
    "\n"
    "  --input PATH...      files or folders (folders give their *.txt and *.jsonl files, also as\n"
    "                       .gz or .zst, recursively); read in sorted path order. A .txt file is one\n"
    "                       document; each line of a .jsonl file is one (repeat --input, or list\n"
    "                       paths after it)\n"
    "  --tokenizer T        byte (ids 0..255 are bytes, EOS = 0), a byte-level BPE tokenizer.json,\n"
    "                       or a SentencePiece .model (Llama-2 / Mistral style)\n"
    "  --output DIR         written as DIR.tmp (with progress.json), renamed to DIR when complete\n"
    "  --val-fraction F     the last ceil(F * tokens) tokens become the val split (0..0.5, default 0.05)\n"
    "  --workers N          tokeniser threads (default 0 = all cores); output is identical for any N\n"
    "  --text-key K         the .jsonl field holding the text (default text)\n"
    "  --split-docs         a .txt file holds documents separated by blank lines\n"
    "  --skip-bad-lines     count and skip malformed .jsonl lines (reported at the end) instead of\n"
    "                       stopping at the first\n"
    "  --format F           shards (default) or megatron (Megatron-LM data_text_document.bin/.idx\n"
    "                       per split)\n"
    "  --dtype D            token ids on disk: auto (default: u16 when the vocabulary fits), u16, u32\n"
    "                       (written as i32 with --format megatron)\n"
    "  --shard-tokens N     tokens per shard and between checkpoints (default 268435456)\n"
    "  --progress-every S   seconds between progress lines on stderr (default 1 on a terminal, 5\n"
    "                       otherwise; 0 = none)\n"
    "  --overwrite          replace DIR if it is an earlier preprocess output\n";

}  // namespace

int cmd_preprocess(int argc, char** argv) {
  Args a(argc, argv,
         {"input...", "tokenizer", "output", "val-fraction", "workers", "text-key", "shard-tokens", "format", "dtype",
          "progress-every"},
         {"overwrite", "split-docs", "skip-bad-lines"});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  PreprocessOptions opt;
  opt.inputs = a.all("input");
  if (opt.inputs.empty()) throw error("missing required flag --input (see --help)");
  // `--input corpus/*.txt` expands to several words: the ones after the first are positionals.
  for (const auto& p : a.positional()) opt.inputs.push_back(p);
  opt.tokenizer = a.required("tokenizer");
  opt.output = a.required("output");
  opt.val_fraction = a.get_double("val-fraction", opt.val_fraction);
  long long workers = a.get_int("workers", opt.workers);
  if (workers < 0 || workers > 4096) throw error("--workers ", workers, ": out of range (expected 0 = all cores, or 1..4096)");
  opt.workers = int(workers);
  opt.text_key = a.get("text-key", opt.text_key);
  opt.shard_tokens = a.get_int("shard-tokens", opt.shard_tokens);
  opt.format = a.get("format", opt.format);
  opt.dtype = a.get("dtype", opt.dtype);
  opt.progress_seconds = a.get_double("progress-every", opt.progress_seconds);
  if (a.has("progress-every") && !(opt.progress_seconds >= 0))
    throw error("--progress-every ", opt.progress_seconds, ": expected seconds >= 0");
  opt.split_docs = a.has("split-docs");
  opt.skip_bad_lines = a.has("skip-bad-lines");
  opt.overwrite = a.has("overwrite");
  std::printf("%s\n", preprocess(opt).dump().c_str());
  return 0;
}

}  // namespace moe
