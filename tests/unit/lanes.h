// Lanes: the lanes of one GPU thread block, emulated on the CPU with real threads and barriers, so
// that single-source row functions (framework/kernels/row.h) can be tested under the multi-lane
// contract the CUDA backend runs them with: strided loops, reductions and scans across lanes, a
// leader that writes the row's scalars, syncs around shared scratch. A missing sync or a lane
// writing outside its stride shows up here as a wrong (or racy) result.
//   Lanes lanes(5);
//   lanes.run([&](LaneRow& r) { kern::rmsnorm_row_forward(r, y, &rstd, x, w, D, eps); });
#pragma once
#include <array>
#include <barrier>
#include <cstring>
#include <thread>
#include <vector>

namespace moe::test {

class Lanes;

class LaneRow {
 public:
  LaneRow(Lanes* g, int lane) : g_(g), lane_(lane) {}
  int lane() const { return lane_; }
  int width() const;
  bool leader() const { return lane_ == 0; }
  void sync();
  template <class T>
  T sum(T v) { return combine(v, [](T a, T b) { return a + b; }); }
  float max(float v) { return combine(v, [](float a, float b) { return a > b ? a : b; }); }
  template <class T>
  T exclusive_scan(T v, T* total);

 private:
  template <class T, class Op>
  T combine(T v, Op op);
  template <class T>
  void put(T v);
  template <class T>
  T get(int lane) const;

  Lanes* g_;
  int lane_;
};

class Lanes {
 public:
  explicit Lanes(int width) : width_(width), bar_(width), slots_(size_t(width)) {}
  // f(LaneRow&) on every lane at once; returns when all lanes are done.
  template <class F>
  void run(F f) {
    std::vector<std::thread> ts;
    for (int l = 0; l < width_; ++l)
      ts.emplace_back([this, &f, l] {
        LaneRow r(this, l);
        f(r);
      });
    for (auto& t : ts) t.join();
  }
  int width() const { return width_; }

 private:
  friend class LaneRow;
  int width_;
  std::barrier<> bar_;
  std::vector<std::array<unsigned char, 8>> slots_;
};

inline int LaneRow::width() const { return g_->width_; }
inline void LaneRow::sync() { g_->bar_.arrive_and_wait(); }

template <class T>
void LaneRow::put(T v) {
  static_assert(sizeof(T) <= 8);
  std::memcpy(g_->slots_[size_t(lane_)].data(), &v, sizeof(T));
}

template <class T>
T LaneRow::get(int lane) const {
  T v;
  std::memcpy(&v, g_->slots_[size_t(lane)].data(), sizeof(T));
  return v;
}

// Every lane combines all lanes' values in lane order (as BlockRow combines its warps).
template <class T, class Op>
T LaneRow::combine(T v, Op op) {
  put(v);
  sync();
  T r = get<T>(0);
  for (int j = 1; j < width(); ++j) r = op(r, get<T>(j));
  sync();
  return r;
}

template <class T>
T LaneRow::exclusive_scan(T v, T* total) {
  put(v);
  sync();
  T before = T(0), all = T(0);
  for (int j = 0; j < width(); ++j) {
    const T x = get<T>(j);
    if (j < lane_) before += x;
    all += x;
  }
  sync();
  *total = all;
  return before;
}

}  // namespace moe::test
