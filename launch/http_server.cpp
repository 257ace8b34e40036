// Threading: one io_context on one thread runs every connection asynchronously. The work per
// connection is small (parse a request, copy tokens to a socket); the expensive part, decoding,
// is on the DecoderLoop's thread, which posts each request's events back to this thread. One
// thread therefore keeps up with many clients, needs no locks around session state, and idle or
// slow clients cost a socket and a timer rather than a thread each.
#include "launch/http_server.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <optional>
#include <sstream>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "framework/error.h"
#include "serve_page.h"  // generated from launch/serve_page.html (launch/CMakeLists.txt)

namespace moe {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using nlohmann::json;

namespace {

constexpr auto kReadTimeout = std::chrono::seconds(30);  // a request's headers and body; keep-alive idle
constexpr int64_t kMaxConnections = 512;                  // past this: 503 and close

struct Shared {
  ServerOptions opt;
  DecoderLoop* decoder = nullptr;
  const Tokenizer* tok = nullptr;
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> next_completion{0};
};

std::string chunk(const std::string& data) {
  char size[24];
  snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Shared& shared) : stream_(std::move(socket)), sh_(shared) { ++sh_.connections; }
  ~Session() { --sh_.connections; }

  void start() {
    if (sh_.connections > kMaxConnections) {
      keep_alive_ = false;
      send_json(503, error_body(ApiError(503, "too many connections", "", "server_error")));
      return;
    }
    read_request();
  }

 private:
  void read_request() {
    parser_.emplace();
    parser_->body_limit(uint64_t(sh_.opt.max_body_bytes));
    stream_.expires_after(kReadTimeout);
    http::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->on_read(ec);
      // curl sends "Expect: 100-continue" before a body over 1 kB and waits a second for it.
      auto expect = self->parser_->get()[http::field::expect];
      if (beast::iequals(expect, "100-continue")) self->write_raw("HTTP/1.1 100 Continue\r\n\r\n", false);
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](beast::error_code ec, size_t) { self->on_read(ec); });
    });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return send_error(ApiError(413, "the body is larger than the limit of " + std::to_string(sh_.opt.max_body_bytes) +
                                          " bytes (--max-body-bytes)"));
    }
    if (ec == http::error::header_limit) {
      keep_alive_ = false;
      return send_error(ApiError(431, "the request's headers are too large"));
    }
    if (ec == http::error::end_of_stream || ec == net::error::operation_aborted || ec == beast::error::timeout ||
        ec == net::error::connection_reset || ec == net::error::eof)
      return close();
    if (ec) {  // not HTTP
      keep_alive_ = false;
      return send_error(ApiError(400, "malformed HTTP request: " + ec.message()));
    }
    stream_.expires_never();
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    try {
      route(req);
    } catch (const ApiError& e) {
      send_error(e);
    } catch (const std::exception& e) {
      send_error(ApiError(500, std::string("internal error: ") + e.what(), "", "server_error"));
    }
  }

  void route(const http::request<http::string_body>& req) {
    std::string target(req.target());
    target = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get, post = req.method() == http::verb::post;
    auto only = [&](bool ok, const char* allow) {
      if (!ok) throw ApiError(405, "method " + std::string(req.method_string()) + " is not allowed on " + target +
                                        " (use " + allow + ")");
    };
    if (target == "/") {
      only(get, "GET");
      return send(200, "text/html; charset=utf-8", kServePage);
    }
    if (target == "/health") {
      only(get, "GET");
      DecoderLoop::Stats s = sh_.decoder->stats();
      return send_json(200, {{"status", "ok"}, {"active", s.active}, {"queued", s.queued}, {"steps", s.steps},
                             {"completed", s.completed}, {"max_batch_seen", s.max_batch_seen},
                             {"connections", sh_.connections.load()}});
    }
    if (target == "/info") {
      only(get, "GET");
      return send_json(200, sh_.opt.info);
    }
    if (target == "/v1/models") {
      only(get, "GET");
      return send_json(200, {{"object", "list"},
                             {"data", json::array({{{"id", sh_.opt.model_name}, {"object", "model"}, {"owned_by", "moe"}}})}});
    }
    if (target == "/v1/completions") {
      only(post, "POST");
      return start_completion(req.body());
    }
    throw ApiError(404, "no route " + target + " (try POST /v1/completions, GET /health, /info, /v1/models or /)", "",
                   "not_found_error");
  }

  void start_completion(const std::string& body) {
    CompletionRequest r = parse_completion_request(body, sh_.opt.api);
    check_prompt_fits(r.prompt, *sh_.tok, r.sampling.max_tokens, sh_.opt.max_prompt_tokens, sh_.opt.context);
    stream_mode_ = r.stream;
    ids_ = {"cmpl-" + std::to_string(sh_.next_completion++), int64_t(std::time(nullptr)), sh_.opt.model_name};
    text_.clear();
    // The listener runs on the decoder thread: it only posts the event to this session's thread.
    auto self = shared_from_this();
    ticket_ = sh_.decoder->submit(std::move(r.prompt), std::move(r.sampling),
                                  [self](const GenerationEvent& ev, const std::string* error) {
                                    std::string message = error ? *error : "";
                                    bool failed = error != nullptr;
                                    net::post(self->stream_.get_executor(), [self, ev, message, failed] {
                                      self->on_event(ev, failed ? &message : nullptr);
                                    });
                                  });
    generating_ = true;
    if (stream_mode_)
      write_raw("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                "Transfer-Encoding: chunked\r\nConnection: " + std::string(keep_alive_ ? "keep-alive" : "close") +
                "\r\n\r\n", false);
    watch_for_hangup();
  }

  // A client that goes away while its request decodes: the socket turns readable with nothing to
  // read (EOF or reset). Pipelined bytes of a next request also make it readable; then the check
  // stops (they stay unread in the socket for the next read), and only a failed write tells.
  void watch_for_hangup() {
    if (watching_) return;
    watching_ = true;
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      self->watching_ = false;
      if (ec || !self->generating_) return;
      beast::error_code avail_ec;
      if (self->stream_.socket().available(avail_ec) == 0 || avail_ec) self->client_gone();
    });
  }

  void client_gone() {
    if (generating_ && !cancelled_) {
      cancelled_ = true;
      sh_.decoder->cancel(ticket_);
    }
    close();
  }

  void on_event(const GenerationEvent& ev, const std::string* error) {
    if (!generating_) return;
    if (ev.finish != FinishReason::None) generating_ = false;
    if (cancelled_ || closed_) return;
    if (error) {
      ApiError e(500, *error, "", "server_error");
      if (!stream_mode_) return send_error(e);
      keep_alive_ = false;
      write_raw(chunk("data: " + dump_json(error_body(e)) + "\n\n") + chunk("data: [DONE]\n\n") + "0\r\n\r\n", true);
      return;
    }
    text_ += ev.text;
    if (!stream_mode_) {
      if (ev.finish != FinishReason::None)
        send_json(200, completion_response(ids_, text_, ev.finish, ev.prompt_tokens, ev.completion_tokens));
      return;
    }
    size_t n = ev.finish != FinishReason::None ? text_.size() : utf8_complete_prefix(text_);
    if (ev.finish == FinishReason::None) {
      if (n == 0) return;
      write_raw(chunk(completion_chunk_event(ids_, text_.substr(0, n), FinishReason::None, 0, 0)), false);
    } else {
      write_raw(chunk(completion_chunk_event(ids_, text_.substr(0, n), ev.finish, ev.prompt_tokens, ev.completion_tokens)) +
                    chunk("data: [DONE]\n\n") + "0\r\n\r\n",
                true);
    }
    text_.erase(0, n);
  }

  void send_error(const ApiError& e) { send_json(e.status, error_body(e)); }

  void send_json(int status, const json& body) { send(status, "application/json", dump_json(body) + "\n"); }

  void send(int status, const char* content_type, std::string body) {
    http::response<http::string_body> res{http::status(status), 11};
    res.set(http::field::server, "moe");
    res.set(http::field::content_type, content_type);
    if (status == 405) res.set(http::field::allow, "GET, POST");
    res.keep_alive(keep_alive_);
    res.body() = std::move(body);
    res.prepare_payload();
    std::ostringstream out;
    out << res;
    write_raw(out.str(), true);
  }

  // Writes go out one at a time in order; `ends_response`: after it, read the next request or close.
  void write_raw(std::string bytes, bool ends_response) {
    outbox_.push_back({std::move(bytes), ends_response});
    if (outbox_.size() == 1) write_next();
  }

  void write_next() {
    net::async_write(stream_, net::buffer(outbox_.front().bytes),
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    if (ec) return client_gone();  // a broken pipe mid-stream frees the request's slot
    bool ends = outbox_.front().ends_response;
    outbox_.pop_front();
    if (!outbox_.empty()) return write_next();
    if (!ends) return;
    if (keep_alive_) return read_request();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(2));
    drain();
  }

  // Closing a socket with unread bytes (the rest of an oversize body) sends a reset, which can
  // reach the client before the 413 it should read: read and drop what remains first (2 s at most).
  void drain() {
    stream_.async_read_some(net::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->drain();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  struct Out {
    std::string bytes;
    bool ends_response;
  };
  beast::tcp_stream stream_;
  Shared& sh_;
  beast::flat_buffer buffer_;
  std::array<char, 4096> scratch_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<Out> outbox_;
  bool keep_alive_ = true, closed_ = false;
  // The completion in flight on this connection.
  bool stream_mode_ = false, generating_ = false, cancelled_ = false, watching_ = false;
  int64_t ticket_ = -1;
  CompletionIds ids_;
  std::string text_;  // non-stream: the whole text; stream: the bytes held back (an incomplete UTF-8 character)
};

}  // namespace

struct HttpServer::Impl {
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  Shared shared;

  void accept() {
    acceptor.async_accept(ioc, [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted) return;
      if (!ec) std::make_shared<Session>(std::move(socket), shared)->start();
      accept();  // a failed accept (out of file descriptors) must not stop the server
    });
  }
};

HttpServer::HttpServer(const std::string& host, int port) : impl_(std::make_unique<Impl>()) {
  if (port < 0 || port > 65535) throw error("--port: ", port, " (expected 0..65535; 0 = any free port)");
  beast::error_code ec;
  tcp::resolver resolver(impl_->ioc);
  auto endpoints = resolver.resolve(host, std::to_string(port), tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) throw error("--host: cannot resolve '", host, "': ", ec.message());
  tcp::endpoint ep = endpoints.begin()->endpoint();
  auto& acc = impl_->acceptor;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (ec == net::error::address_in_use)
    throw error("port ", port, " is in use on ", host, " (another server is listening there; pick another with --port)");
  if (ec) throw error("cannot listen on ", host, ":", port, ": ", ec.message());
  acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec == net::error::address_in_use)
    throw error("port ", port, " is in use on ", host, " (another server is listening there; pick another with --port)");
  if (ec) throw error("cannot listen on ", host, ":", port, ": ", ec.message());
}

HttpServer::~HttpServer() = default;

int HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void HttpServer::run(ServerOptions opt, DecoderLoop& decoder, const Tokenizer& tok) {
  impl_->shared.opt = std::move(opt);
  impl_->shared.decoder = &decoder;
  impl_->shared.tok = &tok;
  net::signal_set signals(impl_->ioc, SIGINT, SIGTERM);
  signals.async_wait([this](beast::error_code ec, int sig) {
    if (ec) return;
    fprintf(stderr, "moe serve: %s, shutting down\n", sig == SIGINT ? "interrupted" : "terminated");
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
    impl_->ioc.stop();
  });
  impl_->accept();
  impl_->ioc.run();
  // The decoder thread posts to this io_context: stop it before anything here goes away.
  decoder.stop();
}

}  // namespace moe
