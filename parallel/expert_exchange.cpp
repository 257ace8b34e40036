#include "parallel/expert_exchange.h"

#include "framework/error.h"

namespace moe {

namespace {

// Element counts and packed displacements for rows of D floats.
struct Layout {
  std::vector<int64_t> counts, displs;
};

Layout rows_to_elements(const std::vector<int64_t>& rows, int64_t D) {
  Layout l;
  for (int64_t r : rows) l.counts.push_back(r * D);
  l.displs = packed_displacements(l.counts);
  return l;
}

// Rows we receive from each rank: the sum over our experts.
std::vector<int64_t> recv_rows_per_rank(const ExchangePlan& p) {
  std::vector<int64_t> rows(size_t(p.ranks), 0);
  for (int s = 0; s < p.ranks; ++s)
    for (int j = 0; j < p.local_experts; ++j) rows[s] += p.recv_rows[size_t(s) * p.local_experts + j];
  return rows;
}

}  // namespace

void AllToAllExchange::plan(const int64_t* counts_E, int64_t E, ExchangePlan& plan) const {
  const int S = group_.size();
  MOE_CHECK(E % S == 0, E, " experts over ", S, " expert-parallel ranks");
  plan.ranks = S;
  plan.local_experts = int(E / S);
  plan.send_rows.assign(size_t(S), 0);
  for (int64_t e = 0; e < E; ++e) plan.send_rows[e / plan.local_experts] += counts_E[e];
  // counts_E is [S][E/S]: for each destination, the rows for each of its experts.
  plan.recv_rows = group_.comm().exchange_counts(Counts(counts_E, size_t(E)));
}

void AllToAllExchange::dispatch(const ExchangePlan& plan, const float* send, float* recv, int64_t D) const {
  Layout out = rows_to_elements(plan.send_rows, D), in = rows_to_elements(recv_rows_per_rank(plan), D);
  group_.alltoallv(send, out.counts, out.displs, recv, in.counts, in.displs);
}

void AllToAllExchange::combine(const ExchangePlan& plan, const float* send, float* recv, int64_t D) const {
  Layout out = rows_to_elements(recv_rows_per_rank(plan), D), in = rows_to_elements(plan.send_rows, D);
  group_.alltoallv(send, out.counts, out.displs, recv, in.counts, in.displs);
}

}  // namespace moe
