// moe: one binary, subcommands. Errors from bad input surface here as one line and exit code 2.
#include <malloc.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "framework/error.h"
#include "launch/commands.h"
#include "launch/version.h"  // generated (launch/CMakeLists.txt)

namespace {

const char* kUsage =
    "usage: moe <command> [flags]   (moe <command> --help for its flags)\n"
    "\n"
    "commands:\n"
    "  tokenizer    train a BPE tokenizer.json; encode / decode text with one\n"
    "  preprocess   raw text -> packed token shards (train/ and val/ splits)\n"
    "  train        train a DeepSeek-V3-style MoE from a YAML config\n"
    "  eval         loss, perplexity and bits per byte of checkpoints on a split\n"
    "  generate     sample text from a checkpoint\n"
    "  serve        an HTTP completions API and a web page for a checkpoint\n"
    "  inspect      verify and summarise a shard folder or a checkpoint\n"
    "  export       a checkpoint's model as Hugging Face model.safetensors + config.json\n"
    "  import       a Hugging Face DeepseekV3 folder as a step-0 checkpoint of its weights\n"
    "  plot         PNG and SVG figures of training metrics and evaluation results\n"
    "  plan         memory, communication and time of a training run on N GPUs, before running it\n"
    "  bench        benchmarks that print JSON lines (train, comm, tokenizer, checkpoint)\n"
    "\n"
    "moe --version prints the version (and the git commit it was built from).\n";

}  // namespace

int main(int argc, char** argv) {
  // Training frees and re-allocates the same multi-MB temporaries every step. Serving them from
  // the heap (not fresh mmaps) and never trimming it avoids page-faulting them in again each time.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("moe %s%s%s%s\n", MOE_VERSION, *MOE_GIT_COMMIT ? " (git " : "", MOE_GIT_COMMIT, *MOE_GIT_COMMIT ? ")" : "");
    return 0;
  }
  std::string cmd = argv[1];
  int sub_argc = argc - 2;
  char** sub_argv = argv + 2;
  try {
    if (cmd == "train") return moe::cmd_train(sub_argc, sub_argv);
    if (cmd == "preprocess") return moe::cmd_preprocess(sub_argc, sub_argv);
    if (cmd == "tokenizer") return moe::cmd_tokenizer(sub_argc, sub_argv);
    if (cmd == "eval") return moe::cmd_eval(sub_argc, sub_argv);
    if (cmd == "generate") return moe::cmd_generate(sub_argc, sub_argv);
    if (cmd == "inspect") return moe::cmd_inspect(sub_argc, sub_argv);
    if (cmd == "bench") return moe::cmd_bench(sub_argc, sub_argv);
    if (cmd == "plan") return moe::cmd_plan(sub_argc, sub_argv);
    if (cmd == "export") return moe::cmd_export(sub_argc, sub_argv);
    if (cmd == "import") return moe::cmd_import(sub_argc, sub_argv);
    if (cmd == "plot") return moe::cmd_plot(sub_argc, sub_argv);
    if (cmd == "serve") return moe::cmd_serve(sub_argc, sub_argv);
    fprintf(stderr, "error: unknown command '%s' (expected tokenizer, preprocess, train, eval, generate, serve, inspect, export, import, plot, plan or bench; see moe --help)\n", cmd.c_str());
    return 2;
  } catch (const moe::Error& e) {
    fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    fprintf(stderr, "error: out of memory\n");
    return 3;
  } catch (const std::exception& e) {
    fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
}
