#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "framework/error.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/plot.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// A path inside single quotes for sh.
std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string last_line_of(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r^") != std::string::npos) last = line;
  return last;
}

// Each figure twice, as PNG (cairo) and SVG; a heatmap gets a panel's height per MoE layer.
std::string gnuplot_script(const std::vector<Figure>& figures) {
  std::string script = "# Written by moe plot; run `gnuplot plot.gp` in this folder to redraw.\n";
  for (const Figure& f : figures) {
    const size_t panels = f.lines.empty() ? f.heatmap.load_SLE[0].size() : 1;
    const std::string size = "size 1100," + std::to_string(panels == 1 ? 600 : 120 + 220 * panels);
    const std::string body = gnuplot_commands(f, "data");
    script += "\nset terminal pngcairo " + size + " font 'sans,10'\nset output '" + f.name + ".png'\n" + body;
    script += "set terminal svg " + size + " dynamic font 'sans,10'\nset output '" + f.name + ".svg'\n" + body;
    script += "unset output\n";
  }
  return script;
}

void run_gnuplot(const fs::path& dir) {
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0)
    throw error("moe plot: gnuplot not found on PATH (expected Debian's gnuplot-nox: `make deps` or "
                "`apt-get install gnuplot-nox`)");
  const std::string log = (dir / "gnuplot.log").string();
  const int status = std::system(("cd " + shell_quoted(dir.string()) + " && gnuplot plot.gp > gnuplot.log 2>&1").c_str());
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw error((dir / "plot.gp").string(), ": gnuplot failed (exit ", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                "): ", last_line_of(log), " (full output in ", log, ")");
}

}  // namespace

int cmd_plot(int argc, char** argv) {
  Args a(argc, argv, {"out", "log"}, {});
  if (a.help()) {
    puts("usage: moe plot INPUT... [--out DIR] [--log x|y|xy]\n"
         "\n"
         "Draws PNG and SVG figures with gnuplot from training metrics and evaluation results.\n"
         "INPUT is a run folder or its metrics.jsonl (several runs are overlaid), or a file of\n"
         "`moe eval` rows (a sweep's --out file, or --task rows).\n"
         "\n"
         "  --out DIR       output folder (default plots): the figures, plus data/*.dat and plot.gp\n"
         "  --log AXES      logarithmic x, y or both axes on the loss figures\n"
         "\n"
         "Figures, each where the inputs have data: loss_vs_step, loss_vs_tokens (train and val),\n"
         "lr, grad_norm, tokens_per_s, expert_load_RUN (a heatmap per MoE layer), eval_loss,\n"
         "eval_accuracy (top-1, top-5) and tasks (acc, acc_norm, chance), each as .png and .svg.\n"
         "Prints the path of every file written.");
    return 0;
  }
  if (a.positional().empty())
    throw error("moe plot: no inputs (expected run folders, metrics.jsonl or moe eval result files; see --help)");
  const std::string log = a.get("log", "");
  if (log != "" && log != "x" && log != "y" && log != "xy")
    throw error("--log: '", log, "' (expected x, y or xy)");
  PlotOptions opt;
  opt.log_x = log.find('x') != std::string::npos;
  opt.log_y = log.find('y') != std::string::npos;
  std::vector<Figure> figures = build_figures(a.positional(), opt);
  if (figures.empty()) throw error("moe plot: the inputs have rows but no values to plot (expected numbers such as loss, lr, acc)");

  const fs::path dir = a.get("out", "plots");
  std::error_code ec;
  fs::create_directories(dir / "data", ec);
  if (ec) throw error(dir.string(), ": cannot create (", ec.message(), ")");
  for (const Figure& f : figures) write_figure_data(f, (dir / "data").string());
  {
    std::ofstream script(dir / "plot.gp", std::ios::binary | std::ios::trunc);
    script << gnuplot_script(figures);
    if (!script.flush()) throw error((dir / "plot.gp").string(), ": cannot write");
  }
  run_gnuplot(dir);
  for (const Figure& f : figures)
    for (const char* ext : {".png", ".svg"}) {
      const fs::path out = dir / (f.name + ext);
      if (!fs::exists(out) || fs::file_size(out) == 0)
        throw error(out.string(), ": gnuplot wrote nothing (see ", (dir / "gnuplot.log").string(), ")");
      puts(out.string().c_str());
    }
  return 0;
}

}  // namespace moe
