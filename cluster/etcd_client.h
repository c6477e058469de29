// File: cluster/etcd_client.h
// A small etcd v3 client over etcd's JSON gRPC-gateway (HTTP/1.1 POST /v3/kv/range, /v3/kv/put,
// /v3/kv/deleterange, /v3/kv/txn, /v3/lease/grant|keepalive|revoke), for the registrations,
// watches and rendezvous of cluster/. Keys and values are arbitrary bytes (base64 on the wire);
// etcd's int64 fields arrive as JSON strings and are parsed here.
//
// Contract:
//  - Every call has a deadline: the `timeout` argument, or the client's default when it is
//    zero. It bounds connecting to an endpoint and each read of the reply (so one call takes at
//    most about twice the timeout in the worst case, when connecting uses most of it).
//  - Failover: a call starts at the endpoint that last answered and moves on to the next one
//    only when connecting fails (the request was then never sent, so moving on is safe even for
//    a transaction that is not idempotent). A failure after the request was sent is returned,
//    never retried: it may have been applied.
//  - Each call opens its own connection (no pooling): these are control-plane calls, a few per
//    second at most, and a fresh connection never trips over a stale keep-alive socket after
//    etcd restarted.
//  - Plaintext HTTP only: no TLS to etcd yet (ParseEtcdUrl refuses etcds://). Keep etcd's client
//    port on a trusted network. TODO(#17): TLS and etcd authentication.
//
// Errors: Unavailable naming the endpoint(s) when none can be reached or a reply breaks off;
// DeadlineExceeded naming the endpoint when the deadline passes; an error etcd reports keeps its
// gRPC code (same numbers as absl) and message (e.g. NotFound "etcdserver: requested lease not
// found"); Internal for a reply that is not the JSON expected; InvalidArgument for bad
// arguments (empty key, ttl < 1, no endpoints).
//
// Thread-safety: thread-safe; every method may be called from any thread concurrently. The
// client holds no connection between calls.
#ifndef DAPQ_CLUSTER_ETCD_CLIENT_H_
#define DAPQ_CLUSTER_ETCD_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/etcd_url.h"

namespace dapq::cluster {

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;  // number of puts since creation (1 after the first)
  int64_t lease = 0;    // 0: not attached to a lease
};

// A range read: the keys found (sorted by key) and the store's revision at the read.
struct EtcdRange {
  std::vector<EtcdKeyValue> kvs;
  int64_t revision = 0;
};

// One condition of a transaction, on one key. A key that does not exist has create_revision,
// mod_revision and version 0 (etcd's rule), so KeyMissing is "create_revision == 0".
struct EtcdCompare {
  enum class Target { kVersion, kCreateRevision, kModRevision, kValue };
  enum class Result { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kModRevision;
  Result result = Result::kEqual;
  int64_t number = 0;  // for the revision and version targets
  std::string value;   // for kValue

  static EtcdCompare KeyMissing(std::string key);
  static EtcdCompare KeyExists(std::string key);
  static EtcdCompare ModRevisionIs(std::string key, int64_t mod_revision);
  static EtcdCompare ValueIs(std::string key, std::string value);
};

// One operation of a transaction branch.
struct EtcdOp {
  enum class Kind { kPut, kDelete, kGet };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;    // kPut
  int64_t lease = 0;    // kPut
  bool prefix = false;  // kDelete / kGet: every key starting with `key`

  static EtcdOp Put(std::string key, std::string value, int64_t lease = 0);
  static EtcdOp Delete(std::string key);
  static EtcdOp Get(std::string key);
};

struct EtcdTxnResult {
  bool succeeded = false;  // every compare held: the success branch ran (else the failure one)
  int64_t revision = 0;
  std::vector<EtcdKeyValue> kvs;  // what the kGet ops of the branch that ran read, in order
};

struct EtcdClientOptions {
  std::vector<EtcdEndpoint> endpoints;        // tried in order, starting at the last good one
  absl::Duration timeout = absl::Seconds(5);  // default per-call deadline
};

class EtcdClient {
 public:
  // InvalidArgument for no endpoints or timeout <= 0. Connects to nothing yet.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(EtcdClientOptions options);
  // Endpoints from ParseEtcdUrl (the URL's prefix is the caller's business).
  static absl::StatusOr<std::unique_ptr<EtcdClient>> FromUrl(
      std::string_view url, absl::Duration timeout = absl::Seconds(5));

  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  const std::vector<EtcdEndpoint>& endpoints() const { return options_.endpoints; }

  // Returns the revision of the put. `lease` 0: the key lives until deleted.
  absl::StatusOr<int64_t> Put(std::string_view key, std::string_view value, int64_t lease = 0,
                              absl::Duration timeout = absl::ZeroDuration());
  // nullopt when the key does not exist.
  absl::StatusOr<std::optional<EtcdKeyValue>> Get(std::string_view key,
                                                  absl::Duration timeout = absl::ZeroDuration());
  // Every key starting with `prefix` (an empty prefix is every key), sorted by key.
  absl::StatusOr<EtcdRange> GetPrefix(std::string_view prefix,
                                      absl::Duration timeout = absl::ZeroDuration());
  // Returns the number of keys deleted (0 when absent).
  absl::StatusOr<int64_t> Delete(std::string_view key,
                                 absl::Duration timeout = absl::ZeroDuration());
  absl::StatusOr<int64_t> DeletePrefix(std::string_view prefix,
                                       absl::Duration timeout = absl::ZeroDuration());

  // An atomic transaction: if every compare holds, the `success` ops run, else the `failure`
  // ops, all at one revision.
  absl::StatusOr<EtcdTxnResult> Txn(const std::vector<EtcdCompare>& compares,
                                    const std::vector<EtcdOp>& success,
                                    const std::vector<EtcdOp>& failure = {},
                                    absl::Duration timeout = absl::ZeroDuration());
  // Puts only when the key does not exist. True when this call created it.
  absl::StatusOr<bool> CreateIfAbsent(std::string_view key, std::string_view value,
                                      int64_t lease = 0,
                                      absl::Duration timeout = absl::ZeroDuration());
  // Puts only when the key's mod_revision is still `expected_mod_revision` (0: the key must not
  // exist). True when this call wrote it.
  absl::StatusOr<bool> CompareAndPut(std::string_view key, int64_t expected_mod_revision,
                                     std::string_view value, int64_t lease = 0,
                                     absl::Duration timeout = absl::ZeroDuration());
  // Atomically adds one to the decimal counter at `key` (a missing key counts as 0) and returns
  // the new value; retries the compare-and-put while other writers race it. InvalidArgument
  // when the key holds something that is not a decimal int64. `timeout` bounds the whole loop.
  absl::StatusOr<int64_t> Increment(std::string_view key,
                                    absl::Duration timeout = absl::ZeroDuration());

  // Returns the lease id. etcd may raise a small ttl to its minimum (about 2 s).
  absl::StatusOr<int64_t> LeaseGrant(int64_t ttl_s, absl::Duration timeout = absl::ZeroDuration());
  // Refreshes the lease once; returns its TTL in seconds. NotFound when the lease expired or was
  // revoked (its keys are gone).
  absl::StatusOr<int64_t> LeaseKeepAliveOnce(int64_t lease,
                                             absl::Duration timeout = absl::ZeroDuration());
  // Deletes the lease and every key attached to it. NotFound when it no longer exists.
  absl::Status LeaseRevoke(int64_t lease, absl::Duration timeout = absl::ZeroDuration());

 private:
  explicit EtcdClient(EtcdClientOptions options) : options_(std::move(options)) {}

  // POSTs `body` (JSON text) to `path` and returns the reply's JSON text.
  absl::StatusOr<std::string> Call(const char* path, const std::string& body,
                                   absl::Duration timeout);

  const EtcdClientOptions options_;
  std::atomic<size_t> preferred_{0};  // index of the endpoint that answered last
};

// The range_end etcd uses for "every key with this prefix": the prefix with its last byte that
// is not 0xff incremented (trailing 0xff bytes dropped); "\0" (every key) for an empty or
// all-0xff prefix.
std::string EtcdPrefixRangeEnd(std::string_view prefix);

}  // namespace dapq::cluster

#endif  // DAPQ_CLUSTER_ETCD_CLIENT_H_
