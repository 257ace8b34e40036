// `moe eval --format table|csv|markdown`: a sweep's result rows (launch/eval_results.h) as
//   - the matrix: one line per run, one column per dataset (and split), the loss and top-1
//     accuracy of the run's latest evaluated step;
//   - the long table: one line per row, in sweep order.
// csv has the long table only (one header, for spreadsheets and pandas).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe {

enum class TableFormat { Table, Csv, Markdown };
TableFormat parse_table_format(const std::string& name);  // throws moe::Error for anything else

std::string format_results(const std::vector<nlohmann::json>& rows, TableFormat format);

}  // namespace moe
