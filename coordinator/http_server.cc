// File: coordinator/http_server.cc
// HttpServer: routes, one generation thread per request feeding the handler through a queue
// (so a request that fails before its first token still gets a proper HTTP status), and
// server-sent events for streams.
#include "coordinator/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <deque>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "common/tls.h"
#include "coordinator/inference_service.h"
#include "coordinator/openai_protocol.h"
#include "nlohmann/json.hpp"

namespace dapq::coordinator {
namespace {

// One request running on the worker groups, on a thread of its own; the HTTP handler pops its
// messages. Destroying it cancels the request and waits for the thread.
class Generation {
 public:
  Generation(RequestRouter* router, CoordinatorMetrics* metrics, dapq::v1::GenerateRequest request,
             std::chrono::system_clock::time_point deadline)
      : thread_([this, router, metrics, request = std::move(request), deadline] {
          RunInfo info;
          grpc::Status status = RunWithMetrics(
              router, metrics, request, deadline, [this] { return cancelled_.load(); },
              [this](const dapq::v1::GenerateResponse& r) {
                MutexLock lock(&mu_);
                queue_.push_back(r);
                cv_.SignalAll();
                return !cancelled_.load();
              },
              &info);
          MutexLock lock(&mu_);
          status_ = std::move(status);
          retry_after_ms_ = info.retry_after_ms;
          done_ = true;
          cv_.SignalAll();
        }) {}
  ~Generation() {
    Cancel();
    thread_.join();
  }
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // The next message (true), or false at the end (then status() is final).
  bool Next(dapq::v1::GenerateResponse* out) {
    MutexLock lock(&mu_);
    cv_.Wait(&mu_, [&] { return !queue_.empty() || done_; });
    if (queue_.empty()) return false;
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  void Cancel() { cancelled_.store(true); }
  grpc::Status status() {
    MutexLock lock(&mu_);
    return status_;
  }
  std::string retry_after_ms() {
    MutexLock lock(&mu_);
    return retry_after_ms_;
  }

 private:
  std::atomic<bool> cancelled_{false};
  Mutex mu_;
  CondVar cv_;
  std::deque<dapq::v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  std::string retry_after_ms_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once the members above exist
};

void ReplyJson(httplib::Response& res, int http_status, const std::string& body) {
  res.status = http_status;
  res.set_content(body, "application/json");
}

void ReplyError(httplib::Response& res, const OpenAiError& e,
                const std::string& retry_after_ms = "") {
  if (!retry_after_ms.empty()) {
    int ms = 0;
    if (absl::SimpleAtoi(retry_after_ms, &ms)) {
      res.set_header("Retry-After", std::to_string(std::max(1, (ms + 999) / 1000)));
      res.set_header("retry-after-ms", retry_after_ms);
    }
  }
  ReplyJson(res, e.http_status, e.ToJson());
}

std::chrono::system_clock::time_point DeadlineOf(const httplib::Request& req) {
  int64_t ms = 0;
  if (req.has_header("X-Request-Timeout-Ms") &&
      absl::SimpleAtoi(req.get_header_value("X-Request-Timeout-Ms"), &ms) && ms > 0) {
    return std::chrono::system_clock::now() + std::chrono::milliseconds(ms);
  }
  return std::chrono::system_clock::time_point::max();
}

std::set<std::string> ServedModels(const GroupRegistry& registry) {
  std::set<std::string> models;
  for (const dapq::v1::GroupStatus& g : registry.Snapshot()) {
    if (g.healthy() && !g.model().empty()) models.insert(g.model());
  }
  return models;
}

bool WriteEvent(httplib::DataSink& sink, const std::string& payload) {
  const std::string event = absl::StrCat("data: ", payload, "\n\n");
  return sink.write(event.data(), event.size());
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, RequestRouter* router, GroupRegistry* registry,
    CoordinatorMetrics* metrics, const TenantAuth* auth, TenantLimiter* limiter) {
  std::unique_ptr<HttpServer> s(new HttpServer());
  if (!options.tls_cert.empty()) {
    auto tls =
        std::make_unique<httplib::SSLServer>(options.tls_cert.c_str(), options.tls_key.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HTTP API: cannot use --tls_cert ", options.tls_cert, " / --tls_key ", options.tls_key));
    }
    s->server_ = std::move(tls);
  } else {
    if (!options.allow_plaintext && !IsLoopbackAddress(options.host + ":0")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "plain HTTP on ", options.host,
          " (not a loopback address): give --tls_cert and --tls_key, or --allow_plaintext"));
    }
    s->server_ = std::make_unique<httplib::Server>();
  }
  s->router_ = router;
  s->registry_ = registry;
  s->metrics_ = metrics;
  s->auth_ = auth;
  s->limiter_ = limiter;
  const int threads = std::max(4, options.max_threads);
  s->server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s->Routes();
  s->port_ = options.port == 0
                 ? s->server_->bind_to_any_port(options.host)
                 : (s->server_->bind_to_port(options.host, options.port) ? options.port : -1);
  if (s->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("HTTP API: could not listen on ", options.host, ":", options.port));
  }
  HttpServer* raw = s.get();
  s->thread_ = std::thread([raw] { raw->server_->listen_after_bind(); });
  return s;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::optional<std::string> HttpServer::Authorized(const httplib::Request& req,
                                                  httplib::Response& res) const {
  if (auth_ == nullptr) return std::string();
  absl::StatusOr<std::string> tenant = auth_->Authenticate(req.get_header_value("Authorization"));
  if (tenant.ok()) return *std::move(tenant);
  OpenAiError e;
  e.http_status = 401;
  e.code = "invalid_api_key";
  e.message = std::string(tenant.status().message());
  res.set_header("WWW-Authenticate", "Bearer");
  ReplyError(res, e);
  return std::nullopt;
}

void HttpServer::Routes() {
  httplib::Server& svr = *server_;
  // Larger than the gRPC request limit so an oversized prompt gets the rules' clear message.
  svr.set_payload_max_length(16 << 20);
  svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    if (metrics_ != nullptr) metrics_->OnHttpResponse(req.path, res.status);
  });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    OpenAiError e;
    e.http_status = res.status;
    e.message = res.status == 404   ? absl::StrCat("no route ", req.method, " ", req.path)
                : res.status == 413 ? "the request body is too large"
                                    : absl::StrCat("HTTP ", res.status);
    res.set_content(e.ToJson(), "application/json");
  });
  svr.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        OpenAiError e;
        e.http_status = 500;
        e.type = "server_error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& x) {
          e.message = x.what();
        } catch (...) {
          e.message = "internal error";
        }
        ReplyJson(res, 500, e.ToJson());
      });

  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const int healthy = registry_->healthy_groups();
    nlohmann::json j = {{"status", healthy > 0 ? "ok" : "unavailable"},
                        {"healthy_groups", healthy},
                        {"known_groups", registry_->known_groups()},
                        {"in_flight", router_->in_flight()}};
    ReplyJson(res, healthy > 0 ? 200 : 503, j.dump());
  });

  svr.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Authorized(req, res)) return;
    nlohmann::json data = nlohmann::json::array();
    for (const std::string& m : ServedModels(*registry_)) {
      data.push_back({{"id", m}, {"object", "model"}, {"created", 0}, {"owned_by", "dapq"}});
    }
    ReplyJson(res, 200, nlohmann::json({{"object", "list"}, {"data", data}}).dump());
  });

  auto generation = [this](OpenAiEndpoint endpoint) {
    return [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      const std::optional<std::string> tenant = Authorized(req, res);
      if (!tenant) return;
      OpenAiRequest r;
      if (std::optional<OpenAiError> e = ParseOpenAiRequest(req.body, endpoint, &r)) {
        return ReplyError(res, *e);
      }
      const std::set<std::string> models = ServedModels(*registry_);
      if (models.empty()) {
        return ReplyError(res, ErrorFromStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                                            "no healthy worker group")));
      }
      if (!r.model.empty() && models.count(r.model) == 0) {
        OpenAiError e;
        e.http_status = 404;
        e.param = "model";
        e.code = "model_not_found";
        e.message = absl::StrCat("The model '", r.model,
                                 "' does not exist (served: ", *models.begin(), ")");
        return ReplyError(res, e);
      }
      const std::string model = r.model.empty() ? *models.begin() : r.model;
      // The tenant's share of the coordinator, held until the response is complete (a
      // stream's provider keeps it).
      auto slot = std::make_shared<TenantLimiter::Slot>();
      if (limiter_ != nullptr) {
        if (absl::Status s = limiter_->Acquire(*tenant, slot.get()); !s.ok()) {
          return ReplyError(res,
                            ErrorFromStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                                         std::string(s.message()))),
                            "200");
        }
      }
      auto gen = std::make_shared<Generation>(router_, metrics_, r.request, DeadlineOf(req));
      auto first = std::make_shared<dapq::v1::GenerateResponse>();
      if (!gen->Next(first.get()) && !gen->status().ok()) {
        return ReplyError(res, ErrorFromStatus(gen->status()), gen->retry_after_ms());
      }
      auto builder = std::make_shared<OpenAiResponseBuilder>(r, model, std::time(nullptr));
      if (!r.stream) {
        std::string text;
        dapq::v1::GenerationSummary summary;
        dapq::v1::GenerateResponse part = *first;
        do {
          text += builder->Delta(part);
          if (part.has_summary()) summary = part.summary();
        } while (gen->Next(&part));
        if (!gen->status().ok()) return ReplyError(res, ErrorFromStatus(gen->status()));
        text += builder->Tail();
        return ReplyJson(res, 200, builder->ResponseJson(text, summary));
      }
      const bool include_usage = r.include_usage;
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [gen, first, builder, endpoint, include_usage, slot](size_t, httplib::DataSink& sink) {
            if (endpoint == OpenAiEndpoint::kChatCompletions &&
                !WriteEvent(sink, builder->RoleChunkJson())) {
              gen->Cancel();
              return false;
            }
            dapq::v1::GenerationSummary summary;
            dapq::v1::GenerateResponse part = *first;
            do {
              const std::string delta = builder->Delta(part);
              if (part.has_summary()) summary = part.summary();
              if (!delta.empty() && !WriteEvent(sink, builder->ChunkJson(delta))) {
                gen->Cancel();  // the client went away: the group stops generating
                return false;
              }
            } while (gen->Next(&part));
            if (!gen->status().ok()) {
              WriteEvent(sink, ErrorFromStatus(gen->status()).ToJson());
            } else {
              const std::string tail = builder->Tail();
              if (!tail.empty()) WriteEvent(sink, builder->ChunkJson(tail));
              WriteEvent(sink, builder->FinishChunkJson(summary));
              if (include_usage) WriteEvent(sink, builder->UsageChunkJson(summary));
            }
            WriteEvent(sink, "[DONE]");
            sink.done();
            return true;
          });
    };
  };
  svr.Post("/v1/completions", generation(OpenAiEndpoint::kCompletions));
  svr.Post("/v1/chat/completions", generation(OpenAiEndpoint::kChatCompletions));
}

}  // namespace dapq::coordinator
