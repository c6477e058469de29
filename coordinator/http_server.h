// File: coordinator/http_server.h
// The OpenAI-compatible HTTP API of the coordinator (--http_port), on cpp-httplib:
//   GET  /health               200 {"status": "ok", ...} while a worker group is healthy, else 503
//   GET  /v1/models            the models the registered worker groups serve
//   POST /v1/completions       prompt as text or token ids; `stream` as server-sent events
//   POST /v1/chat/completions  messages through the worker group's chat template
// Requests take the same path as the gRPC API's (RequestRouter: admission, routing, retries;
// the same request rules; the coordinator's request and TTFT metrics). A streamed request is
// cancelled when its client closes the connection; any request may carry a deadline in the
// header `X-Request-Timeout-Ms`. JSON shapes and errors: coordinator/openai_protocol.h.
// Thread-safety: the server runs its own threads; Start/Stop from one thread.
#ifndef DAPQ_COORDINATOR_HTTP_SERVER_H_
#define DAPQ_COORDINATOR_HTTP_SERVER_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/group_registry.h"
#include "coordinator/request_router.h"
#include "coordinator/tenant_auth.h"
#include "coordinator/tenant_limiter.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace dapq::coordinator {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;          // 0 = any free port
  int max_threads = 64;  // connections served at once (a streamed request holds one)
  // HTTPS with these PEM files; without them plain HTTP, on loopback only unless
  // allow_plaintext.
  std::string tls_cert, tls_key;
  bool allow_plaintext = false;
};

class HttpServer {
 public:
  // Binds and starts serving; `metrics` may be null, so may `auth` (authentication off; else
  // every route but /health needs `Authorization: Bearer <token>`, 401 otherwise). All must
  // outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           RequestRouter* router,
                                                           GroupRegistry* registry,
                                                           CoordinatorMetrics* metrics,
                                                           const TenantAuth* auth = nullptr,
                                                           TenantLimiter* limiter = nullptr);
  ~HttpServer();  // Stop()
  void Stop();
  int port() const { return port_; }

 private:
  HttpServer() = default;
  void Routes();
  // The caller's tenant, or nullopt with the 401 answer written.
  std::optional<std::string> Authorized(const httplib::Request& req, httplib::Response& res) const;

  std::unique_ptr<httplib::Server> server_;
  RequestRouter* router_ = nullptr;
  GroupRegistry* registry_ = nullptr;
  CoordinatorMetrics* metrics_ = nullptr;
  const TenantAuth* auth_ = nullptr;
  TenantLimiter* limiter_ = nullptr;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_HTTP_SERVER_H_
