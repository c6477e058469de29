// File: cluster/etcd_client.cc
// EtcdClient: JSON bodies built and parsed with nlohmann-json, sent with cpp-httplib (one
// connection per call), failover across endpoints on connection errors only.
#include "cluster/etcd_client.h"

#include <httplib.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cluster/internal/etcd_json.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dapq::cluster {
namespace {

using Json = nlohmann::json;
using internal::Base64;
using internal::JsonInt;
using internal::ParseJson;
using internal::ParseKeyValue;

absl::Status CheckKey(std::string_view key, const char* what) {
  if (key.empty()) return absl::InvalidArgumentError(absl::StrCat("etcd ", what, ": empty key"));
  return absl::OkStatus();
}

Json RangeRequest(std::string_view key, bool prefix) {
  Json j = {{"key", Base64(key)}};
  if (prefix) j["range_end"] = Base64(EtcdPrefixRangeEnd(key));
  return j;
}

const char* TargetName(EtcdCompare::Target t) {
  switch (t) {
    case EtcdCompare::Target::kVersion:
      return "VERSION";
    case EtcdCompare::Target::kCreateRevision:
      return "CREATE";
    case EtcdCompare::Target::kModRevision:
      return "MOD";
    case EtcdCompare::Target::kValue:
      return "VALUE";
  }
  return "MOD";
}

const char* ResultName(EtcdCompare::Result r) {
  switch (r) {
    case EtcdCompare::Result::kEqual:
      return "EQUAL";
    case EtcdCompare::Result::kNotEqual:
      return "NOT_EQUAL";
    case EtcdCompare::Result::kGreater:
      return "GREATER";
    case EtcdCompare::Result::kLess:
      return "LESS";
  }
  return "EQUAL";
}

Json CompareJson(const EtcdCompare& c) {
  Json j = {
      {"key", Base64(c.key)}, {"target", TargetName(c.target)}, {"result", ResultName(c.result)}};
  switch (c.target) {
    case EtcdCompare::Target::kVersion:
      j["version"] = std::to_string(c.number);
      break;
    case EtcdCompare::Target::kCreateRevision:
      j["create_revision"] = std::to_string(c.number);
      break;
    case EtcdCompare::Target::kModRevision:
      j["mod_revision"] = std::to_string(c.number);
      break;
    case EtcdCompare::Target::kValue:
      j["value"] = Base64(c.value);
      break;
  }
  return j;
}

Json OpJson(const EtcdOp& op) {
  switch (op.kind) {
    case EtcdOp::Kind::kPut: {
      Json put = {{"key", Base64(op.key)}, {"value", Base64(op.value)}};
      if (op.lease != 0) put["lease"] = std::to_string(op.lease);
      return Json{{"request_put", put}};
    }
    case EtcdOp::Kind::kDelete:
      return Json{{"request_delete_range", RangeRequest(op.key, op.prefix)}};
    case EtcdOp::Kind::kGet:
      return Json{{"request_range", RangeRequest(op.key, op.prefix)}};
  }
  return Json::object();
}

absl::Status CheckOps(const std::vector<EtcdOp>& ops) {
  for (const EtcdOp& op : ops) {
    if (op.key.empty() && !op.prefix) DAPQ_RETURN_IF_ERROR(CheckKey(op.key, "txn op"));
  }
  return absl::OkStatus();
}

// etcd answers an error with {"error": "...", "code": <grpc code>, "message": "..."} (unary) or
// {"error": {"grpc_code": .., "http_code": .., "message": ..}} (inside a stream).
absl::Status StatusFromErrorJson(const Json& j, int http_status, const std::string& context) {
  int code = 0;
  std::string message;
  if (j.contains("error") && j["error"].is_object()) {
    const Json& e = j["error"];
    code = static_cast<int>(JsonInt(e, "grpc_code"));
    if (e.contains("message") && e["message"].is_string()) message = e["message"];
  } else {
    code = static_cast<int>(JsonInt(j, "code"));
    if (j.contains("message") && j["message"].is_string()) message = j["message"];
    if (message.empty() && j.contains("error") && j["error"].is_string()) message = j["error"];
  }
  if (code <= 0 || code > 16) {
    code = static_cast<int>(http_status == 404   ? absl::StatusCode::kNotFound
                            : http_status == 400 ? absl::StatusCode::kInvalidArgument
                            : http_status == 503 ? absl::StatusCode::kUnavailable
                                                 : absl::StatusCode::kUnknown);
  }
  if (message.empty()) message = absl::StrCat("HTTP ", http_status);
  return absl::Status(static_cast<absl::StatusCode>(code), absl::StrCat(context, message));
}

absl::StatusOr<Json> ParseReply(const std::string& text, const char* path) {
  absl::StatusOr<Json> j = ParseJson(text);
  if (!j.ok()) return absl::InternalError(absl::StrCat("etcd ", path, ": ", j.status().message()));
  if (j->contains("error") && !(*j)["error"].is_null() &&
      !((*j)["error"].is_string() && (*j)["error"].get<std::string>().empty())) {
    return StatusFromErrorJson(*j, 200, absl::StrCat("etcd ", path, ": "));
  }
  return j;
}

}  // namespace

EtcdCompare EtcdCompare::KeyMissing(std::string key) {
  EtcdCompare c;
  c.key = std::move(key);
  c.target = Target::kCreateRevision;
  c.result = Result::kEqual;
  c.number = 0;
  return c;
}

EtcdCompare EtcdCompare::KeyExists(std::string key) {
  EtcdCompare c = KeyMissing(std::move(key));
  c.result = Result::kGreater;
  return c;
}

EtcdCompare EtcdCompare::ModRevisionIs(std::string key, int64_t mod_revision) {
  EtcdCompare c;
  c.key = std::move(key);
  c.target = Target::kModRevision;
  c.number = mod_revision;
  return c;
}

EtcdCompare EtcdCompare::ValueIs(std::string key, std::string value) {
  EtcdCompare c;
  c.key = std::move(key);
  c.target = Target::kValue;
  c.value = std::move(value);
  return c;
}

EtcdOp EtcdOp::Put(std::string key, std::string value, int64_t lease) {
  EtcdOp op;
  op.kind = Kind::kPut;
  op.key = std::move(key);
  op.value = std::move(value);
  op.lease = lease;
  return op;
}

EtcdOp EtcdOp::Delete(std::string key) {
  EtcdOp op;
  op.kind = Kind::kDelete;
  op.key = std::move(key);
  return op;
}

EtcdOp EtcdOp::Get(std::string key) {
  EtcdOp op;
  op.kind = Kind::kGet;
  op.key = std::move(key);
  return op;
}

std::string EtcdPrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    const unsigned char last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(EtcdClientOptions options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("etcd client: no endpoints");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "etcd client: timeout=", absl::FormatDuration(options.timeout), " must be > 0"));
  }
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(options)));
}

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::FromUrl(std::string_view url,
                                                                absl::Duration timeout) {
  DAPQ_ASSIGN_OR_RETURN(EtcdUrl parsed, ParseEtcdUrl(url));
  EtcdClientOptions options;
  options.endpoints = std::move(parsed.endpoints);
  options.timeout = timeout;
  return Create(std::move(options));
}

absl::StatusOr<std::string> EtcdClient::Call(const char* path, const std::string& body,
                                             absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) timeout = options_.timeout;
  const absl::Time deadline = absl::Now() + timeout;
  const size_t n = options_.endpoints.size();
  const size_t first = preferred_.load(std::memory_order_relaxed) % n;
  std::vector<std::string> unreachable;
  for (size_t i = 0; i < n; ++i) {
    const size_t index = (first + i) % n;
    const EtcdEndpoint& endpoint = options_.endpoints[index];
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    httplib::Client client(endpoint.host, endpoint.port);
    client.set_keep_alive(false);
    const std::chrono::microseconds io_timeout =
        std::max(absl::ToChronoMicroseconds(left), std::chrono::microseconds(1000));
    client.set_connection_timeout(io_timeout);
    client.set_read_timeout(io_timeout);
    client.set_write_timeout(io_timeout);
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body;
    req.set_header("Content-Type", "application/json");
    std::string reply;
    req.content_receiver = [&reply](const char* data, size_t length, uint64_t, uint64_t) {
      reply.append(data, length);
      return true;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    const absl::Time sent = absl::Now();
    bool ok = client.send(req, res, err);
    // etcd's gateway ends its error replies with an HTTP trailer, which httplib 0.11 cannot
    // parse after the last chunk (Error::Read). The body has arrived complete by then: a reply
    // whose status line came and whose body is whole JSON is a reply.
    if (!ok && err == httplib::Error::Read && res.status > 0 && ParseJson(reply).ok()) ok = true;
    if (!ok) {
      const std::string what =
          absl::StrCat(endpoint.ToString(), " (", httplib::to_string(err), ")");
      if (err == httplib::Error::Connection || err == httplib::Error::ConnectionTimeout) {
        unreachable.push_back(what);  // never sent: the next endpoint may take it
        continue;
      }
      // A read that timed out used up the time left (httplib reports it as a plain Read error).
      if (absl::Now() >= deadline || absl::Now() - sent >= left - absl::Milliseconds(5)) {
        return absl::DeadlineExceededError(absl::StrCat(
            "etcd ", path, " at ", what, ": no reply in ", absl::FormatDuration(timeout)));
      }
      return absl::UnavailableError(absl::StrCat("etcd ", path, " at ", what, ": reply broke off"));
    }
    preferred_.store(index, std::memory_order_relaxed);
    if (res.status == 200) return reply;
    absl::StatusOr<Json> j = ParseJson(reply);
    return StatusFromErrorJson(j.ok() ? *j : Json::object(), res.status,
                               absl::StrCat("etcd ", path, " at ", endpoint.ToString(), ": "));
  }
  if (unreachable.empty()) {
    return absl::DeadlineExceededError(absl::StrCat("etcd ", path, ": deadline of ",
                                                    absl::FormatDuration(timeout),
                                                    " passed before any reply"));
  }
  if (absl::Now() >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat("etcd ", path, ": deadline of ",
                                                    absl::FormatDuration(timeout), " passed; ",
                                                    absl::StrJoin(unreachable, ", ")));
  }
  return absl::UnavailableError(
      absl::StrCat("etcd ", path, ": cannot reach ", absl::StrJoin(unreachable, ", ")));
}

absl::StatusOr<int64_t> EtcdClient::Put(std::string_view key, std::string_view value, int64_t lease,
                                        absl::Duration timeout) {
  DAPQ_RETURN_IF_ERROR(CheckKey(key, "put"));
  Json body = {{"key", Base64(key)}, {"value", Base64(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  DAPQ_ASSIGN_OR_RETURN(std::string text, Call("/v3/kv/put", body.dump(), timeout));
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text, "/v3/kv/put"));
  return JsonInt(reply.value("header", Json::object()), "revision");
}

absl::StatusOr<std::optional<EtcdKeyValue>> EtcdClient::Get(std::string_view key,
                                                            absl::Duration timeout) {
  DAPQ_RETURN_IF_ERROR(CheckKey(key, "get"));
  DAPQ_ASSIGN_OR_RETURN(std::string text,
                        Call("/v3/kv/range", RangeRequest(key, false).dump(), timeout));
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text, "/v3/kv/range"));
  if (!reply.contains("kvs") || !reply["kvs"].is_array() || reply["kvs"].empty()) {
    return std::optional<EtcdKeyValue>();
  }
  DAPQ_ASSIGN_OR_RETURN(EtcdKeyValue kv, ParseKeyValue(reply["kvs"][0]));
  return std::optional<EtcdKeyValue>(std::move(kv));
}

absl::StatusOr<EtcdRange> EtcdClient::GetPrefix(std::string_view prefix, absl::Duration timeout) {
  DAPQ_ASSIGN_OR_RETURN(std::string text,
                        Call("/v3/kv/range", RangeRequest(prefix, true).dump(), timeout));
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text, "/v3/kv/range"));
  EtcdRange range;
  range.revision = JsonInt(reply.value("header", Json::object()), "revision");
  if (reply.contains("kvs") && reply["kvs"].is_array()) {
    for (const Json& item : reply["kvs"]) {
      DAPQ_ASSIGN_OR_RETURN(EtcdKeyValue kv, ParseKeyValue(item));
      range.kvs.push_back(std::move(kv));
    }
  }
  return range;
}

absl::StatusOr<int64_t> EtcdClient::Delete(std::string_view key, absl::Duration timeout) {
  DAPQ_RETURN_IF_ERROR(CheckKey(key, "delete"));
  DAPQ_ASSIGN_OR_RETURN(std::string text,
                        Call("/v3/kv/deleterange", RangeRequest(key, false).dump(), timeout));
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text, "/v3/kv/deleterange"));
  return JsonInt(reply, "deleted");
}

absl::StatusOr<int64_t> EtcdClient::DeletePrefix(std::string_view prefix, absl::Duration timeout) {
  DAPQ_RETURN_IF_ERROR(CheckKey(prefix, "delete prefix"));  // never "delete everything"
  DAPQ_ASSIGN_OR_RETURN(std::string text,
                        Call("/v3/kv/deleterange", RangeRequest(prefix, true).dump(), timeout));
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text, "/v3/kv/deleterange"));
  return JsonInt(reply, "deleted");
}

absl::StatusOr<EtcdTxnResult> EtcdClient::Txn(const std::vector<EtcdCompare>& compares,
                                              const std::vector<EtcdOp>& success,
                                              const std::vector<EtcdOp>& failure,
                                              absl::Duration timeout) {
  for (const EtcdCompare& c : compares) DAPQ_RETURN_IF_ERROR(CheckKey(c.key, "txn compare"));
  DAPQ_RETURN_IF_ERROR(CheckOps(success));
  DAPQ_RETURN_IF_ERROR(CheckOps(failure));
  Json body = {{"compare", Json::array()}, {"success", Json::array()}, {"failure", Json::array()}};
  for (const EtcdCompare& c : compares) body["compare"].push_back(CompareJson(c));
  for (const EtcdOp& op : success) body["success"].push_back(OpJson(op));
  for (const EtcdOp& op : failure) body["failure"].push_back(OpJson(op));
  DAPQ_ASSIGN_OR_RETURN(std::string text, Call("/v3/kv/txn", body.dump(), timeout));
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text, "/v3/kv/txn"));
  EtcdTxnResult result;
  result.succeeded = reply.value("succeeded", false);
  result.revision = JsonInt(reply.value("header", Json::object()), "revision");
  if (reply.contains("responses") && reply["responses"].is_array()) {
    for (const Json& r : reply["responses"]) {
      if (!r.contains("response_range")) continue;
      const Json& range = r["response_range"];
      if (!range.contains("kvs") || !range["kvs"].is_array()) continue;
      for (const Json& item : range["kvs"]) {
        DAPQ_ASSIGN_OR_RETURN(EtcdKeyValue kv, ParseKeyValue(item));
        result.kvs.push_back(std::move(kv));
      }
    }
  }
  return result;
}

absl::StatusOr<bool> EtcdClient::CreateIfAbsent(std::string_view key, std::string_view value,
                                                int64_t lease, absl::Duration timeout) {
  DAPQ_ASSIGN_OR_RETURN(
      EtcdTxnResult r,
      Txn({EtcdCompare::KeyMissing(std::string(key))},
          {EtcdOp::Put(std::string(key), std::string(value), lease)}, {}, timeout));
  return r.succeeded;
}

absl::StatusOr<bool> EtcdClient::CompareAndPut(std::string_view key, int64_t expected_mod_revision,
                                               std::string_view value, int64_t lease,
                                               absl::Duration timeout) {
  DAPQ_ASSIGN_OR_RETURN(
      EtcdTxnResult r,
      Txn({EtcdCompare::ModRevisionIs(std::string(key), expected_mod_revision)},
          {EtcdOp::Put(std::string(key), std::string(value), lease)}, {}, timeout));
  return r.succeeded;
}

absl::StatusOr<int64_t> EtcdClient::Increment(std::string_view key, absl::Duration timeout) {
  DAPQ_RETURN_IF_ERROR(CheckKey(key, "increment"));
  if (timeout <= absl::ZeroDuration()) timeout = options_.timeout;
  const absl::Time deadline = absl::Now() + timeout;
  DAPQ_ASSIGN_OR_RETURN(std::optional<EtcdKeyValue> current, Get(key, timeout));
  for (;;) {
    int64_t value = 0;
    int64_t mod_revision = 0;
    if (current.has_value()) {
      mod_revision = current->mod_revision;
      if (!absl::SimpleAtoi(current->value, &value)) {
        return absl::InvalidArgumentError(absl::StrCat("etcd increment: key ", std::string(key),
                                                       " holds '", current->value,
                                                       "', not a decimal int64"));
      }
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("etcd increment of ", std::string(key),
                                                      ": still contended after ",
                                                      absl::FormatDuration(timeout)));
    }
    // On a lost race the failure branch reads the key back, so the next try needs no Get.
    DAPQ_ASSIGN_OR_RETURN(EtcdTxnResult r,
                          Txn({EtcdCompare::ModRevisionIs(std::string(key), mod_revision)},
                              {EtcdOp::Put(std::string(key), std::to_string(value + 1))},
                              {EtcdOp::Get(std::string(key))}, left));
    if (r.succeeded) return value + 1;
    current.reset();
    if (!r.kvs.empty()) current = std::move(r.kvs[0]);
  }
}

absl::StatusOr<int64_t> EtcdClient::LeaseGrant(int64_t ttl_s, absl::Duration timeout) {
  if (ttl_s < 1) {
    return absl::InvalidArgumentError(absl::StrCat("etcd lease grant: ttl=", ttl_s, " < 1"));
  }
  const Json body = {{"TTL", std::to_string(ttl_s)}};
  DAPQ_ASSIGN_OR_RETURN(std::string text, Call("/v3/lease/grant", body.dump(), timeout));
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text, "/v3/lease/grant"));
  const int64_t id = JsonInt(reply, "ID");
  if (id == 0) return absl::InternalError(absl::StrCat("etcd lease grant: no ID in ", text));
  return id;
}

absl::StatusOr<int64_t> EtcdClient::LeaseKeepAliveOnce(int64_t lease, absl::Duration timeout) {
  const Json body = {{"ID", std::to_string(lease)}};
  DAPQ_ASSIGN_OR_RETURN(std::string text, Call("/v3/lease/keepalive", body.dump(), timeout));
  // A stream of one message: {"result": {"ID": .., "TTL": ..}} (TTL absent once expired).
  const size_t newline = text.find('\n');
  DAPQ_ASSIGN_OR_RETURN(Json reply, ParseReply(text.substr(0, newline), "/v3/lease/keepalive"));
  const Json result = reply.value("result", Json::object());
  const int64_t ttl = JsonInt(result, "TTL");
  if (ttl <= 0) {
    return absl::NotFoundError(
        absl::StrCat("etcd lease keepalive: lease ", lease, " expired or was revoked"));
  }
  return ttl;
}

absl::Status EtcdClient::LeaseRevoke(int64_t lease, absl::Duration timeout) {
  const Json body = {{"ID", std::to_string(lease)}};
  DAPQ_ASSIGN_OR_RETURN(std::string text, Call("/v3/lease/revoke", body.dump(), timeout));
  return ParseReply(text, "/v3/lease/revoke").status();
}

}  // namespace dapq::cluster
