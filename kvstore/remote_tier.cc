// File: kvstore/remote_tier.cc
// OpenRemoteTier: URL parsing and the two remote tiers.
#include "kvstore/remote_tier.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvstore/grpc_peer_tier.h"
#include "kvstore/redis_tier.h"

namespace dapq::kvstore {
namespace {

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> ParseHostPort(const std::string& url, absl::string_view rest) {
  const size_t colon = rest.rfind(':');
  HostPort hp;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(rest.substr(colon + 1), &hp.port) || hp.port <= 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_remote: '", url, "' must be redis://HOST:PORT or grpc://HOST:PORT"));
  }
  hp.host = std::string(rest.substr(0, colon));
  return hp;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tier>> OpenRemoteTier(const RemoteTierOptions& options) {
  const std::string& url = options.url;
  const TierOptions tier{"remote", options.capacity_bytes, 0.95, 0.9};
  if (absl::StartsWith(url, "redis://")) {
    DAPQ_ASSIGN_OR_RETURN(const HostPort hp, ParseHostPort(url, absl::string_view(url).substr(8)));
    RedisTierOptions r;
    r.tier = tier;
    r.host = hp.host;
    r.port = hp.port;
    r.key_prefix =
        options.key_prefix.empty() ? "dapq:" : absl::StrCat("dapq:", options.key_prefix, ":");
    DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<RedisTier> redis, RedisTier::Connect(r));
    return std::unique_ptr<Tier>(std::move(redis));
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
  return absl::InvalidArgumentError(
      absl::StrCat("kv_remote: '", url, "' must be redis://HOST:PORT or grpc://HOST:PORT"));
}

}  // namespace dapq::kvstore
