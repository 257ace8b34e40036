// The decoder thread of `moe serve`: the one thread that owns the Generator (launch/generator.h),
// which is not thread-safe. HTTP handlers hand it requests and cancellations through a
// mutex-protected inbox and never wait for a decode step; it submits them between steps, so the
// requests of every client are decoded together in one batch, and passes each request's events
// to that request's listener.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "launch/generator.h"

namespace moe {

class DecoderLoop {
 public:
  // Called on the decoder thread, so it must only hand the event on (never block). `error` is
  // null, or a message when the request failed (the event then carries FinishReason::Cancelled).
  using Listener = std::function<void(const GenerationEvent& ev, const std::string* error)>;

  // max_outstanding: requests waiting or decoding at once; more are refused (ApiError 429).
  // `log` (may be null) gets one line per finished request.
  DecoderLoop(Generator& gen, int64_t max_outstanding, FILE* log);
  ~DecoderLoop();  // stop()

  // Queues a request; returns its ticket for cancel(). Throws ApiError 429 when full, 503 after stop().
  int64_t submit(std::string prompt, SamplingParams s, Listener on_event);
  // Ends the request (the client is gone); its listener still gets the final Cancelled event.
  void cancel(int64_t ticket);
  // Ends the thread; listeners of unfinished requests are dropped without a final event.
  void stop();

  struct Stats {
    int64_t active = 0;          // sequences being decoded
    int64_t queued = 0;          // waiting for a batch slot
    int64_t steps = 0;           // decode steps so far
    int64_t completed = 0;       // requests finished
    int64_t max_batch_seen = 0;  // most sequences ever decoded in one step
  };
  Stats stats() const;

 private:
  struct Pending {
    int64_t ticket;
    std::string prompt;
    SamplingParams sampling;
    Listener listener;
  };
  struct Running {
    int64_t ticket;
    Listener listener;
    int64_t max_batch = 0;  // for the log: the largest batch this request was decoded in
  };
  void run();
  void take_inbox(std::vector<Pending>& submits, std::vector<int64_t>& cancels);
  void deliver(const std::vector<GenerationEvent>& events, int64_t batch);
  void fail_all(const std::string& message);

  Generator& gen_;
  const int64_t max_outstanding_;
  FILE* log_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  // Guarded by mu_: the inbox, the counters /health reads, and the stop flag.
  std::vector<Pending> inbox_;
  std::vector<int64_t> cancel_inbox_;
  int64_t next_ticket_ = 0, outstanding_ = 0;
  Stats stats_;
  bool stopping_ = false;
  // Decoder thread only.
  std::map<int64_t, Running> running_;    // by generator id
  std::map<int64_t, int64_t> ticket_ids_;  // ticket -> generator id
  std::thread thread_;
};

}  // namespace moe
