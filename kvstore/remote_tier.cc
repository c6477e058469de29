// File: kvstore/remote_tier.cc
// OpenRemoteTier: URL parsing, the plaintext policy and the two remote tiers.
#include "kvstore/remote_tier.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvstore/grpc_peer_tier.h"
#include "kvstore/redis_tier.h"

namespace dapq::kvstore {
namespace {

constexpr absl::string_view kUrlForms =
    "' must be rediss://HOST:PORT, redis://HOST:PORT or grpc://HOST:PORT";

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> ParseHostPort(const std::string& url, absl::string_view rest) {
  const size_t colon = rest.rfind(':');
  HostPort hp;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(rest.substr(colon + 1), &hp.port) || hp.port <= 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("kv_remote: '", url, kUrlForms));
  }
  hp.host = std::string(rest.substr(0, colon));
  if (hp.host.size() > 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);  // [v6]
  }
  return hp;
}

absl::StatusOr<std::unique_ptr<Tier>> OpenRedis(const RemoteTierOptions& options,
                                                const TierOptions& tier, bool tls,
                                                const HostPort& hp) {
  const std::string address = absl::StrCat(hp.host, ":", hp.port);
  RedisTierOptions r;
  r.tier = tier;
  r.host = hp.host;
  r.port = hp.port;
  r.timeout_ms = options.timeout_ms;
  r.key_prefix =
      options.key_prefix.empty() ? "dapq:" : absl::StrCat("dapq:", options.key_prefix, ":");
  if (tls) {
    if (!options.tls.enabled()) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv_remote: '", options.url,
                       "' is Redis over TLS: it needs --tls_ca (the CA of the Redis server's "
                       "certificate) with --tls_cert and --tls_key (presented to the server)"));
    }
    DAPQ_ASSIGN_OR_RETURN(TlsPem pem, LoadTlsPem(options.tls));
    r.tls.ca_pem = std::move(pem.ca);
    r.tls.cert_pem = std::move(pem.cert);
    r.tls.key_pem = std::move(pem.key);
    r.tls.server_name = options.tls.server_name;
  } else if (!options.allow_plaintext && !IsLoopbackAddress(hp.host)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "kv_remote: plaintext Redis on ", address,
        " (not a loopback address): use rediss:// with --tls_cert, --tls_key and --tls_ca, or "
        "--allow_plaintext on a network you trust"));
  }
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<RedisTier> redis, RedisTier::Connect(r));
  return std::unique_ptr<Tier>(std::move(redis));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tier>> OpenRemoteTier(const RemoteTierOptions& options) {
  const std::string& url = options.url;
  const TierOptions tier{"remote", options.capacity_bytes, 0.95, 0.9};
  for (const absl::string_view scheme : {"rediss://", "redis://"}) {
    if (absl::StartsWith(url, scheme)) {
      DAPQ_ASSIGN_OR_RETURN(const HostPort hp,
                            ParseHostPort(url, absl::string_view(url).substr(scheme.size())));
      return OpenRedis(options, tier, /*tls=*/scheme == "rediss://", hp);
    }
  }
  if (absl::StartsWith(url, "grpc://")) {
    DAPQ_ASSIGN_OR_RETURN(const HostPort hp, ParseHostPort(url, absl::string_view(url).substr(7)));
    GrpcPeerTierOptions g;
    g.tier = tier;
    g.address = absl::StrCat(hp.host, ":", hp.port);
    g.key_prefix = options.key_prefix.empty() ? "" : options.key_prefix + ".";
    DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<GrpcPeerTier> peer, GrpcPeerTier::Create(g));
    return std::unique_ptr<Tier>(std::move(peer));
  }
  return absl::InvalidArgumentError(absl::StrCat("kv_remote: '", url, kUrlForms));
}

}  // namespace dapq::kvstore
