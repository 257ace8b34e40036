// The `moe` subcommands. Each takes the arguments after its name, returns the process exit code,
// and throws moe::Error for bad input (main prints "error: <message>" and exits 2).
#pragma once

namespace moe {

int cmd_train(int argc, char** argv);
int cmd_preprocess(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_tokenizer(int argc, char** argv);        // train | encode | decode
int cmd_bench_tokenizer(int argc, char** argv);  // `moe bench tokenizer`, args after "tokenizer"
int cmd_bench_generate(int argc, char** argv);   // `moe bench generate`, args after "generate"
int cmd_bench_gemm(int argc, char** argv);       // `moe bench gemm`, args after "gemm"
int cmd_bench_comm(int argc, char** argv);       // `moe bench comm`, args after "comm"
int cmd_bench_checkpoint(int argc, char** argv); // `moe bench checkpoint`, args after "checkpoint"
int cmd_export(int argc, char** argv);           // checkpoint -> Hugging Face safetensors + config.json
int cmd_import(int argc, char** argv);           // Hugging Face DeepseekV3 folder -> step-0 checkpoint
int cmd_plot(int argc, char** argv);             // metrics / eval results -> PNG and SVG figures (gnuplot)
int cmd_plan(int argc, char** argv);             // memory, communication and time of a run on N devices (launch/plan.h)
int cmd_serve(int argc, char** argv);            // HTTP completions API + web page (docs/serving.md)

}  // namespace moe
