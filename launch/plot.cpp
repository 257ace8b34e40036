#include "launch/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "framework/error.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kExpected = "expected metrics.jsonl, a run folder, or moe eval result rows";

// A number from a row; NaN when absent or not a number (nlohmann writes NaN as null).
double num(const Json& row, const char* key) {
  auto it = row.find(key);
  return it != row.end() && it->is_number() ? it->get<double>() : std::nan("");
}

std::string str(const Json& row, const char* key, const std::string& fallback = "") {
  auto it = row.find(key);
  return it != row.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// metrics.jsonl is named after its run folder; any other file after itself.
std::string name_of_file(const fs::path& file) {
  if (file.filename() == "metrics.jsonl") {
    std::string folder = fs::absolute(file).parent_path().filename().string();
    if (!folder.empty()) return folder;
  }
  return file.stem().string();
}

// ".../RUN/checkpoints/step-N" -> RUN (the run of a task row without "run").
std::string run_of_checkpoint(const std::string& checkpoint, const std::string& fallback) {
  fs::path p = fs::path(checkpoint).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.parent_path().filename() == "checkpoints" && !p.parent_path().parent_path().filename().empty())
    return p.parent_path().parent_path().filename().string();
  return fallback;
}

// Rows of a JSONL file. A last line without its newline is a write in flight (a running job): it
// is skipped when it does not parse.
std::vector<Json> read_rows(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot open (", kExpected, ")");
  std::vector<Json> rows;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json row = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_discarded()) {
      if (!in.good()) break;  // torn last line
      throw error(path, ":", number, ": malformed JSON (expected one JSON object per line)");
    }
    if (!row.is_object()) throw error(path, ":", number, ": not a JSON object (expected one object per line)");
    rows.push_back(std::move(row));
  }
  return rows;
}

struct Run {
  std::string name;
  std::vector<Json> train, val;  // metrics.jsonl rows with "loss" / with "val_loss"
};

struct Inputs {
  std::vector<Run> runs;
  std::vector<Json> evals, tasks;  // with "run" filled in
};

Inputs read_inputs(const std::vector<std::string>& paths) {
  Inputs in;
  for (const std::string& arg : paths) {
    fs::path file = arg;
    if (fs::is_directory(file)) file /= "metrics.jsonl";
    const std::string path = file.string(), name = name_of_file(file);
    Run run{name, {}, {}};
    size_t used = 0;
    for (Json& row : read_rows(path)) {
      if (row.contains("task")) {  // before "dataset": a task row names its task there too (its key)
        if (!row.contains("run")) row["run"] = run_of_checkpoint(str(row, "checkpoint"), name);
        in.tasks.push_back(std::move(row));
      } else if (row.contains("dataset")) {
        if (!row.contains("run")) row["run"] = name;
        in.evals.push_back(std::move(row));
      } else if (row.contains("val_loss")) {
        run.val.push_back(std::move(row));
      } else if (row.contains("loss")) {
        run.train.push_back(std::move(row));
      } else {
        continue;
      }
      ++used;
    }
    if (used == 0) throw error(path, ": no rows to plot (", kExpected, ")");
    if (run.train.empty() && run.val.empty()) continue;
    for (const Run& r : in.runs)
      if (r.name == run.name) run.name = path;  // two runs from folders of the same name
    in.runs.push_back(std::move(run));
  }
  return in;
}

// (x, y) of rows where both are numbers, sorted by x; a repeated x keeps its last row.
PlotLine line_of(const std::vector<Json>& rows, const char* x_key, const char* y_key, std::string title,
                 PlotLine::Style style, int color) {
  std::map<double, double> xy;
  for (const Json& r : rows) {
    double x = num(r, x_key), y = num(r, y_key);
    if (std::isfinite(x) && std::isfinite(y)) xy[x] = y;
  }
  PlotLine l{std::move(title), {}, {}, style, color};
  for (auto [x, y] : xy) {
    l.x.push_back(x);
    l.y.push_back(y);
  }
  return l;
}

// Tokens seen at each evaluation row's step: from the training row of that step, else at the
// tokens per step of the closest earlier training row.
void add_tokens(std::vector<Json>& val, const std::vector<Json>& train) {
  for (Json& v : val) {
    const double step = num(v, "step");
    double tokens = std::nan("");
    for (const Json& t : train) {
      const double s = num(t, "step"), n = num(t, "tokens");
      if (!(s > 0) || !std::isfinite(n) || s > step) continue;
      tokens = s == step ? n : n / s * step;
    }
    if (std::isfinite(tokens)) v["tokens"] = tokens;
  }
}

Heatmap expert_load(const std::vector<Json>& train) {
  Heatmap h;
  std::map<double, std::vector<std::vector<double>>> by_step;
  for (const Json& r : train) {
    auto it = r.find("expert_load");
    if (it == r.end() || !it->is_array() || it->empty() || !std::isfinite(num(r, "step"))) continue;
    std::vector<std::vector<double>> load;
    for (const Json& layer : *it) {
      std::vector<double> row;
      double sum = 0;
      for (const Json& v : layer) sum += v.is_number() ? v.get<double>() : 0;
      const double mean = layer.empty() ? 0 : sum / double(layer.size());
      for (const Json& v : layer) row.push_back(mean > 0 && v.is_number() ? v.get<double>() / mean : 0);
      load.push_back(std::move(row));
    }
    by_step[num(r, "step")] = std::move(load);
  }
  for (auto& [step, load] : by_step) {
    if (!h.load_SLE.empty() && (load.size() != h.load_SLE[0].size() || load[0].size() != h.load_SLE[0][0].size()))
      continue;  // another model shape (a reused run folder): keep the first shape
    h.steps.push_back(step);
    h.load_SLE.push_back(std::move(load));
  }
  return h;
}

// One line per (run, key) group of evaluation or task rows, in order of first appearance.
std::vector<std::pair<std::string, std::vector<Json>>> group_by(const std::vector<Json>& rows,
                                                                 const std::vector<const char*>& keys) {
  std::vector<std::pair<std::string, std::vector<Json>>> groups;
  for (const Json& r : rows) {
    std::string label;
    for (const char* k : keys)
      if (std::string v = str(r, k); !v.empty()) label += (label.empty() ? "" : " ") + v;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& p) { return p.first == label; });
    if (g == groups.end()) g = groups.insert(groups.end(), {label, {}});
    g->second.push_back(r);
  }
  return groups;
}

Figure figure(std::string name, std::string title, std::string xlabel, std::string ylabel) {
  Figure f;
  f.name = std::move(name);
  f.title = std::move(title);
  f.xlabel = std::move(xlabel);
  f.ylabel = std::move(ylabel);
  return f;
}

void keep_if_drawn(std::vector<Figure>& out, Figure f) {
  std::erase_if(f.lines, [](const PlotLine& l) { return l.x.empty(); });
  if (!f.lines.empty()) out.push_back(std::move(f));
}

std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ? c : '_';
  return out;
}

// gnuplot string literal: single quotes, where only '' needs escaping.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string data_file(const std::string& dir, const Figure& f, size_t i) {
  return dir + "/" + f.name + "_" + std::to_string(i) + ".dat";
}

// Tics at 1, 2, 5 (more within one decade) times the powers of ten around the data of axis x (or
// y): gnuplot labels only the powers themselves, which a loss curve rarely spans.
std::string log_tics(const Figure& f, bool y) {
  double lo = INFINITY, hi = 0;
  for (const PlotLine& l : f.lines)
    for (double v : y ? l.y : l.x)
      if (v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!(hi > 0)) return "";
  const double decades = std::log10(hi / lo);
  const std::vector<double> mantissas = decades <= 1.2 ? std::vector<double>{1, 1.5, 2, 3, 4, 5, 7}
                                        : decades <= 4 ? std::vector<double>{1, 2, 5} : std::vector<double>{1};
  std::string tics;
  for (double decade = std::pow(10.0, std::floor(std::log10(lo))); decade <= hi * 1.5; decade *= 10)
    for (double m : mantissas)
      if (m * decade >= lo / 1.5 && m * decade <= hi * 1.5) {
        char buf[32];
        snprintf(buf, sizeof buf, "%.6g", m * decade);
        tics += std::string(tics.empty() ? "" : ", ") + buf;
      }
  return tics.empty() ? "" : std::string("set ") + (y ? "y" : "x") + "tics (" + tics + ")\n";
}

}  // namespace

std::vector<Figure> build_figures(const std::vector<std::string>& inputs, const PlotOptions& opt) {
  Inputs in = read_inputs(inputs);
  std::vector<Figure> out;
  Figure by_step = figure("loss_vs_step", "loss", "step", "loss (nats per token)"),
         by_tokens = figure("loss_vs_tokens", "loss", "tokens", "loss (nats per token)"),
         lr = figure("lr", "learning rate", "step", "learning rate"),
         grad = figure("grad_norm", "gradient norm (before clipping)", "step", "grad norm"),
         speed = figure("tokens_per_s", "throughput", "step", "tokens/s");
  for (Figure* f : {&by_step, &by_tokens}) f->log_x = opt.log_x, f->log_y = opt.log_y;
  int color = 1;
  for (Run& r : in.runs) {
    add_tokens(r.val, r.train);
    for (auto [f, x] : {std::pair{&by_step, "step"}, std::pair{&by_tokens, "tokens"}}) {
      f->lines.push_back(line_of(r.train, x, "loss", r.name + " train", PlotLine::Solid, color));
      f->lines.push_back(line_of(r.val, x, "val_loss", r.name + " val", PlotLine::Points, color));
    }
    lr.lines.push_back(line_of(r.train, "step", "lr", r.name, PlotLine::Solid, color));
    grad.lines.push_back(line_of(r.train, "step", "grad_norm", r.name, PlotLine::Solid, color));
    speed.lines.push_back(line_of(r.train, "step", "tokens_per_s", r.name, PlotLine::Solid, color));
    ++color;
  }
  for (Figure* f : {&by_step, &by_tokens, &lr, &grad, &speed}) keep_if_drawn(out, std::move(*f));
  for (const Run& r : in.runs) {
    Figure f = figure("expert_load_" + file_safe(r.name), "expert load of " + r.name +
                      " (tokens per expert / layer mean; 1 = balanced)", "step", "expert");
    f.heatmap = expert_load(r.train);
    if (!f.heatmap.steps.empty()) out.push_back(std::move(f));
  }

  Figure eval_loss = figure("eval_loss", "evaluation loss", "step", "loss (nats per token)"),
         eval_acc = figure("eval_accuracy", "next-token accuracy (solid top-1, dashed top-5)", "step", "accuracy");
  eval_acc.y_from_zero = true;
  eval_loss.log_x = opt.log_x;
  eval_loss.log_y = opt.log_y;
  color = 1;
  for (auto& [label, rows] : group_by(in.evals, {"run", "dataset", "split"})) {
    eval_loss.lines.push_back(line_of(rows, "step", "loss", label, PlotLine::Points, color));
    const char* top1 = std::any_of(rows.begin(), rows.end(), [](const Json& r) { return r.contains("top1"); })
                           ? "top1" : "accuracy";
    eval_acc.lines.push_back(line_of(rows, "step", top1, label + " top-1", PlotLine::Points, color));
    eval_acc.lines.push_back(line_of(rows, "step", "top5", label + " top-5", PlotLine::Dashed, color));
    ++color;
  }
  Figure tasks = figure("tasks", "task accuracy (solid acc, dashed acc_norm, dotted chance)", "step", "accuracy");
  tasks.y_from_zero = true;
  color = 1;
  for (auto& [label, rows] : group_by(in.tasks, {"run", "task"})) {
    tasks.lines.push_back(line_of(rows, "step", "acc", label + " acc", PlotLine::Points, color));
    tasks.lines.push_back(line_of(rows, "step", "acc_norm", label + " acc_norm", PlotLine::Dashed, color));
    tasks.lines.push_back(line_of(rows, "step", "chance", label + " chance", PlotLine::Dotted, color));
    ++color;
  }
  for (Figure* f : {&eval_loss, &eval_acc, &tasks}) keep_if_drawn(out, std::move(*f));
  return out;
}

void write_figure_data(const Figure& f, const std::string& data_dir) {
  auto open = [](const std::string& path) {
    std::ofstream o(path, std::ios::binary | std::ios::trunc);
    if (!o) throw error(path, ": cannot write");
    o.precision(10);
    return o;
  };
  for (size_t i = 0; i < f.lines.size(); ++i) {
    std::ofstream o = open(data_file(data_dir, f, i));
    for (size_t k = 0; k < f.lines[i].x.size(); ++k) o << f.lines[i].x[k] << ' ' << f.lines[i].y[k] << '\n';
  }
  // Heatmap: one file per MoE layer, a box per (step, expert): x y xlow xhigh ylow yhigh value,
  // each step's box reaching halfway to its neighbours (steps need not be evenly spaced).
  const Heatmap& h = f.heatmap;
  const size_t S = h.steps.size(), L = S ? h.load_SLE[0].size() : 0;
  for (size_t l = 0; l < L; ++l) {
    std::ofstream o = open(data_file(data_dir, f, l));
    for (size_t s = 0; s < S; ++s) {
      const double x = h.steps[s];
      const double half_left = s > 0 ? (x - h.steps[s - 1]) / 2 : (S > 1 ? (h.steps[1] - x) / 2 : 0.5);
      const double half_right = s + 1 < S ? (h.steps[s + 1] - x) / 2 : half_left;
      for (size_t e = 0; e < h.load_SLE[s][l].size(); ++e)
        o << x << ' ' << e << ' ' << x - half_left << ' ' << x + half_right << ' ' << e - 0.5 << ' ' << e + 0.5 << ' '
          << h.load_SLE[s][l][e] << '\n';
    }
  }
}

std::string gnuplot_commands(const Figure& f, const std::string& data_dir) {
  std::string g = "reset\nset termoption noenhanced\nset grid\n";
  if (f.lines.empty()) {
    const Heatmap& h = f.heatmap;
    const size_t L = h.load_SLE[0].size(), E = h.load_SLE[0][0].size();
    double top = 1;
    for (const auto& load : h.load_SLE)
      for (const auto& layer : load) top = std::max(top, *std::max_element(layer.begin(), layer.end()));
    g += "set palette defined (0 '#440154', 1 '#3b528b', 2 '#21918c', 3 '#5ec962', 4 '#fde725')\n";
    g += "set cbrange [0:" + std::to_string(top) + "]\nset yrange [-0.5:" + std::to_string(double(E) - 0.5) + "]\n";
    g += "set xrange [" + std::to_string(h.steps.front()) + ":" + std::to_string(h.steps.back()) + "]\n";
    g += "set ylabel 'expert'\nset ytics 1\nunset grid\n";
    g += "set multiplot layout " + std::to_string(L) + ",1 title " + quoted(f.title) + "\n";
    for (size_t l = 0; l < L; ++l) {
      g += "set title " + quoted("MoE layer " + std::to_string(l)) + "\n";
      if (l + 1 == L) g += "set xlabel 'step'\n";
      g += "plot " + quoted(data_file(data_dir, f, l)) +
           " using 1:2:3:4:5:6:7 with boxxyerror fillstyle solid 1.0 noborder linecolor palette notitle\n";
    }
    return g + "unset multiplot\n";
  }
  g += "set title " + quoted(f.title) + "\nset xlabel " + quoted(f.xlabel) + "\nset ylabel " + quoted(f.ylabel) + "\n";
  g += "set key outside right top\n";
  if (f.xlabel == "tokens") g += "set format x '%.1s%c'\n";
  if (f.log_x) g += "set logscale x\n" + log_tics(f, false);
  if (f.log_y) g += "set logscale y\n" + log_tics(f, true);
  if (f.y_from_zero) g += "set yrange [0:*]\n";
  g += "plot";
  for (size_t i = 0; i < f.lines.size(); ++i) {
    const PlotLine& l = f.lines[i];
    // Dashed and dotted lines have point marks too: a series of one evaluation is a single point.
    static const char* const kStyle[] = {"with lines lw 2", "with linespoints lw 2 pt 7 ps 0.7",
                                         "with linespoints lw 2 dt 2 pt 6 ps 0.8",
                                         "with linespoints lw 1 dt 3 pt 1 ps 0.8"};
    g += std::string(i ? ", \\\n    " : " ") + quoted(data_file(data_dir, f, i)) + " using 1:2 " + kStyle[l.style] +
         " lc " + std::to_string(l.color) + " title " + quoted(l.title);
  }
  return g + "\n";
}

}  // namespace moe
