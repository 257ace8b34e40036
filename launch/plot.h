// `moe plot`: figures from training metrics (metrics.jsonl) and evaluation results (`moe eval`
// rows), drawn by gnuplot. Reading the inputs and laying out the figures is here; the command
// (launch/cmd_plot.cpp) writes the data files and the gnuplot script and runs gnuplot.
//
// Inputs are JSON Lines; each row is classified by its keys:
//   "dataset"            an evaluation row: step, loss, top1, top5 (or accuracy); run, split
//   "task"               a task row (moe eval --task): step, acc, acc_norm, chance; run or checkpoint
//   "loss" / "val_loss"  a training row of metrics.jsonl (lr, grad_norm, tokens, tokens_per_s,
//                        expert_load [MoE layer][expert]) or one of its evaluation rows
// A run's name is its row's "run", else the folder of its metrics.jsonl (or of the checkpoints
// folder a task row names), else the file name.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct PlotLine {
  enum Style { Solid, Points, Dashed, Dotted };
  std::string title;
  std::vector<double> x, y;
  Style style = Solid;
  int color = 1;  // lines of one run (or dataset) share a colour
};

// Expert load of one run: share of each expert relative to the layer mean (1 = balanced) at each
// logged step, one panel per MoE layer.
struct Heatmap {
  std::vector<double> steps;
  std::vector<std::vector<std::vector<double>>> load_SLE;  // [step][MoE layer][expert] / layer mean
};

struct Figure {
  std::string name;  // file name without extension
  std::string title, xlabel, ylabel;
  bool log_x = false, log_y = false;
  bool y_from_zero = false;  // accuracies: keep 0 (and a chance line) in view
  std::vector<PlotLine> lines;
  Heatmap heatmap;  // used when lines is empty
};

struct PlotOptions {
  bool log_x = false, log_y = false;  // for the loss figures (train/val and evaluation loss)
};

// Reads every input (a JSONL file, or a run folder holding metrics.jsonl) and lays out the
// figures that have data. Errors (moe::Error) name the file, and the line for a malformed row:
// a missing file, malformed JSON, a row that is not an object, no usable rows.
std::vector<Figure> build_figures(const std::vector<std::string>& inputs, const PlotOptions& opt);

// gnuplot commands that draw `f` on the current terminal; its data files are written under
// data_dir (relative to the script) by write_figure_data.
std::string gnuplot_commands(const Figure& f, const std::string& data_dir);
void write_figure_data(const Figure& f, const std::string& data_dir);

}  // namespace moe
