#include "launch/eval_table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "framework/error.h"

namespace moe {

namespace {

using Json = nlohmann::json;
using Grid = std::vector<std::vector<std::string>>;  // header first

double num(const Json& row, const char* key) {
  auto it = row.find(key);
  return it != row.end() && it->is_number() ? it->get<double>() : std::nan("");
}
std::string str(const Json& row, const char* key) {
  auto it = row.find(key);
  if (it == row.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}
std::string fixed(double x, int digits) {
  if (std::isnan(x)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}
std::string percent(double x) { return std::isnan(x) ? "-" : fixed(100 * x, 2) + "%"; }
std::string count(const Json& row, const char* key) {
  const double x = num(row, key);
  return std::isnan(x) || x < 0 ? "-" : std::to_string((long long)x);
}
std::string column_of(const Json& row) { return str(row, "dataset") + "/" + str(row, "split"); }

Grid long_table(const std::vector<Json>& rows) {
  Grid g = {{"run", "step", "tokens_seen", "dataset", "split", "loss", "perplexity", "bits_per_byte", "top1", "top5",
             "load_max_mean", "tokens", "seconds", "windows_per_s"}};
  for (const Json& r : rows)
    g.push_back({str(r, "run"), count(r, "step"), count(r, "tokens_seen"), str(r, "dataset"), str(r, "split"),
                 fixed(num(r, "loss"), 4), fixed(num(r, "perplexity"), 3), fixed(num(r, "bits_per_byte"), 4),
                 percent(num(r, "top1")), percent(num(r, "top5")), fixed(num(r, "expert_load_max_mean_worst"), 3),
                 count(r, "tokens"), fixed(num(r, "seconds"), 2), fixed(num(r, "windows_per_s"), 1)});
  return g;
}

// Runs (in order of first appearance) x dataset columns at each run's latest step.
Grid matrix(const std::vector<Json>& rows) {
  std::vector<std::string> runs, columns;
  std::map<std::string, int64_t> latest;
  for (const Json& r : rows) {
    const std::string run = str(r, "run"), col = column_of(r);
    if (std::find(runs.begin(), runs.end(), run) == runs.end()) runs.push_back(run);
    if (std::find(columns.begin(), columns.end(), col) == columns.end()) columns.push_back(col);
    latest[run] = std::max(latest.count(run) ? latest[run] : INT64_MIN, int64_t(num(r, "step")));
  }
  Grid g = {{"run", "step"}};
  for (const std::string& c : columns) g[0].push_back(c + " loss (top-1)");
  for (const std::string& run : runs) {
    std::vector<std::string> line = {run, std::to_string((long long)latest[run])};
    for (const std::string& c : columns) {
      std::string cell = "-";
      for (const Json& r : rows)
        if (str(r, "run") == run && column_of(r) == c && int64_t(num(r, "step")) == latest[run])
          cell = fixed(num(r, "loss"), 4) + " (" + percent(num(r, "top1")) + ")";
      line.push_back(cell);
    }
    g.push_back(line);
  }
  return g;
}

std::string aligned(const Grid& g) {
  std::vector<size_t> width(g[0].size(), 0);
  for (const auto& line : g)
    for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  std::ostringstream out;
  for (const auto& line : g) {
    for (size_t i = 0; i < line.size(); ++i) {
      out << line[i];
      if (i + 1 < line.size()) out << std::string(width[i] - line[i].size() + 2, ' ');
    }
    out << "\n";
  }
  return out.str();
}

std::string markdown(const Grid& g) {
  std::ostringstream out;
  for (size_t l = 0; l < g.size(); ++l) {
    out << "|";
    for (const std::string& cell : g[l]) out << " " << cell << " |";
    out << "\n";
    if (l == 0) {
      out << "|";
      for (size_t i = 0; i < g[0].size(); ++i) out << (i == 0 ? "---|" : "---:|");
      out << "\n";
    }
  }
  return out.str();
}

std::string csv(const Grid& g) {
  std::ostringstream out;
  for (const auto& line : g) {
    for (size_t i = 0; i < line.size(); ++i) {
      const std::string& c = line[i];
      const bool quote = c.find_first_of(",\"\n") != std::string::npos;
      if (i) out << ",";
      if (!quote) {
        out << (c == "-" ? "" : c);
        continue;
      }
      out << '"';
      for (char ch : c) out << (ch == '"' ? "\"\"" : std::string(1, ch));
      out << '"';
    }
    out << "\n";
  }
  return out.str();
}

// Task rows (moe eval --task) have "task" and the accuracy fields instead of a loss.
bool is_task(const Json& row) { return row.contains("task"); }

Grid task_table(const std::vector<Json>& rows) {
  Grid g = {{"run", "step", "task", "n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "chance"}};
  for (const Json& r : rows)
    g.push_back({str(r, "run"), count(r, "step"), str(r, "task"), count(r, "n"), percent(num(r, "acc")),
                 percent(num(r, "acc_stderr")), percent(num(r, "acc_norm")), percent(num(r, "acc_norm_stderr")),
                 percent(num(r, "chance"))});
  return g;
}

std::string format_data_rows(const std::vector<Json>& rows, TableFormat format) {
  if (format == TableFormat::Csv) {
    // Numbers at full precision for tools; the percent signs and rounding are for people.
    Grid g = long_table(rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Json& r = rows[i];
      auto full = [&](const char* key) { return std::isnan(num(r, key)) ? "" : Json(num(r, key)).dump(); };
      g[i + 1] = {str(r, "run"), count(r, "step"), count(r, "tokens_seen"), str(r, "dataset"), str(r, "split"),
                  full("loss"), full("perplexity"), full("bits_per_byte"), full("top1"), full("top5"),
                  full("expert_load_max_mean_worst"), count(r, "tokens"), full("seconds"), full("windows_per_s")};
    }
    return csv(g);
  }
  if (rows.empty()) return "no results\n";
  if (format == TableFormat::Markdown)
    return "Latest step of each run:\n\n" + markdown(matrix(rows)) + "\nEvery checkpoint:\n\n" + markdown(long_table(rows));
  return aligned(matrix(rows)) + "\n" + aligned(long_table(rows));
}

}  // namespace

TableFormat parse_table_format(const std::string& name) {
  if (name == "table") return TableFormat::Table;
  if (name == "csv") return TableFormat::Csv;
  if (name == "markdown") return TableFormat::Markdown;
  throw error("--format ", name, " (expected table, csv, markdown or json)");
}

// Data rows as before; task rows in a table of their own (csv: full-precision numbers).
std::string format_results(const std::vector<Json>& all, TableFormat format) {
  std::vector<Json> rows, tasks;
  for (const Json& r : all) (is_task(r) ? tasks : rows).push_back(r);
  if (tasks.empty()) return format_data_rows(rows, format);
  std::string out = rows.empty() ? "" : format_data_rows(rows, format) + "\n";
  Grid g = task_table(tasks);
  if (format == TableFormat::Csv) {
    for (size_t i = 0; i < tasks.size(); ++i)
      for (size_t c = 4; c < g[0].size(); ++c)
        g[i + 1][c] = std::isnan(num(tasks[i], g[0][c].c_str())) ? "" : Json(num(tasks[i], g[0][c].c_str())).dump();
    return out + csv(g);
  }
  if (format == TableFormat::Markdown) return out + "Tasks:\n\n" + markdown(g);
  return out + aligned(g);
}

}  // namespace moe
