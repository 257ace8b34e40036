#include "launch/decoder_loop.h"

#include <cstdio>
#include <algorithm>
#include <exception>

#include "launch/completion_api.h"

namespace moe {

DecoderLoop::DecoderLoop(Generator& gen, int64_t max_outstanding, FILE* log)
    : gen_(gen), max_outstanding_(max_outstanding), log_(log), thread_([this] { run(); }) {}

DecoderLoop::~DecoderLoop() { stop(); }

int64_t DecoderLoop::submit(std::string prompt, SamplingParams s, Listener on_event) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) throw ApiError(503, "the server is shutting down", "", "server_error");
  if (outstanding_ >= max_outstanding_)
    throw ApiError(429, "the server is busy: " + std::to_string(outstanding_) +
                            " requests are already decoding or queued; retry later", "", "rate_limit_error");
  ++outstanding_;
  ++stats_.queued;
  int64_t ticket = next_ticket_++;
  inbox_.push_back({ticket, std::move(prompt), std::move(s), std::move(on_event)});
  wake_.notify_one();
  return ticket;
}

void DecoderLoop::cancel(int64_t ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  cancel_inbox_.push_back(ticket);
  wake_.notify_one();
}

void DecoderLoop::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  running_.clear();  // drops the listeners (and whatever they keep alive) now, on this thread
  inbox_.clear();
}

DecoderLoop::Stats DecoderLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void DecoderLoop::take_inbox(std::vector<Pending>& submits, std::vector<int64_t>& cancels) {
  std::unique_lock<std::mutex> lock(mu_);
  // Only this thread touches gen_, so reading idle() under the inbox's lock is safe.
  wake_.wait(lock, [&] { return stopping_ || !inbox_.empty() || !cancel_inbox_.empty() || !gen_.idle(); });
  submits.swap(inbox_);
  cancels.swap(cancel_inbox_);
}

void DecoderLoop::run() {
  std::vector<Pending> submits;
  std::vector<int64_t> cancels;
  while (true) {
    submits.clear();
    cancels.clear();
    take_inbox(submits, cancels);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    for (Pending& p : submits) {
      try {
        int64_t id = gen_.submit(p.prompt, p.sampling);
        running_[id] = Running{p.ticket, std::move(p.listener)};
        ticket_ids_[p.ticket] = id;
      } catch (const std::exception& e) {
        // The HTTP side checked the request first; this is a rule only the generator knows.
        std::string message = e.what();
        GenerationEvent ev;
        ev.finish = FinishReason::Cancelled;
        p.listener(ev, &message);
        std::lock_guard<std::mutex> lock(mu_);
        --outstanding_;
        --stats_.queued;
      }
    }
    for (int64_t ticket : cancels) {
      auto it = ticket_ids_.find(ticket);
      if (it != ticket_ids_.end()) gen_.cancel(it->second);
    }
    std::vector<GenerationEvent> events;
    try {
      events = gen_.step();
    } catch (const std::exception& e) {
      // Out of memory or a bug: nothing in flight can be trusted, so every request fails and the
      // server keeps answering (with errors) rather than dying.
      fail_all(std::string("generation failed: ") + e.what());
      continue;
    }
    int64_t finished = 0;
    for (const GenerationEvent& ev : events) finished += ev.finish != FinishReason::None;
    // Sequences decoded in this step: those still in slots and those that just finished (a
    // cancelled queued request also finishes, hence the cap).
    deliver(events, std::min(gen_.active() + finished, gen_.options().max_batch));
  }
}

void DecoderLoop::deliver(const std::vector<GenerationEvent>& events, int64_t batch) {
  for (auto& [id, r] : running_) r.max_batch = std::max(r.max_batch, batch);
  int64_t done = 0;
  for (const GenerationEvent& ev : events) done += ev.finish != FinishReason::None && running_.count(ev.id);
  {
    // The counters first: a client that reads /health right after its answer sees itself gone.
    std::lock_guard<std::mutex> lock(mu_);
    outstanding_ -= done;
    stats_.completed += done;
    stats_.active = gen_.active();
    stats_.queued = gen_.queued() + int64_t(inbox_.size());
    stats_.steps += 1;
    stats_.max_batch_seen = std::max(stats_.max_batch_seen, batch);
  }
  for (const GenerationEvent& ev : events) {
    auto it = running_.find(ev.id);
    if (it == running_.end()) continue;
    it->second.listener(ev, nullptr);
    if (ev.finish == FinishReason::None) continue;
    if (log_) {
      fprintf(log_, "moe serve: request %lld: %lld prompt + %lld completion tokens, %s, decoded in batches of up to %lld\n",
              (long long)it->second.ticket, (long long)ev.prompt_tokens, (long long)ev.completion_tokens,
              finish_reason_name(ev.finish), (long long)it->second.max_batch);
      fflush(log_);
    }
    ticket_ids_.erase(it->second.ticket);
    running_.erase(it);
  }
}

void DecoderLoop::fail_all(const std::string& message) {
  if (log_) fprintf(log_, "moe serve: error: %s\n", message.c_str());
  for (auto& [id, r] : running_) {
    GenerationEvent ev;
    ev.id = id;
    ev.finish = FinishReason::Cancelled;
    r.listener(ev, &message);
    gen_.cancel(id);
  }
  // The generator drops the cancelled sequences on its next step; their events go nowhere.
  std::lock_guard<std::mutex> lock(mu_);
  outstanding_ -= int64_t(running_.size());
  running_.clear();
  ticket_ids_.clear();
}

}  // namespace moe
