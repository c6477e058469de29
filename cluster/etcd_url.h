// File: cluster/etcd_url.h
// Parses the etcd URL every DapQ component takes to find the cluster's etcd:
//   etcd://host:port[,host:port...][/prefix]
// into its client endpoints and the key prefix under which DapQ keeps all its keys. A host is a
// name, an IPv4 address or a bracketed IPv6 address ([::1]:2379); a missing port is etcd's
// client port 2379. The prefix defaults to "/dapq"; it is normalised to start with one '/', with
// repeated slashes collapsed and no trailing slash ("etcd://h:1/a//b/" -> "/a/b"; a bare "/" is
// the default). Only plaintext is implemented: "etcds://" (TLS to etcd) is Unimplemented.
//
// Thread-safety: pure functions. Errors: InvalidArgument naming the URL and what is wrong.
#ifndef DAPQ_CLUSTER_ETCD_URL_H_
#define DAPQ_CLUSTER_ETCD_URL_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dapq::cluster {

inline constexpr int kEtcdDefaultPort = 2379;
inline constexpr char kEtcdDefaultPrefix[] = "/dapq";

struct EtcdEndpoint {
  std::string host;  // without brackets for IPv6
  int port = kEtcdDefaultPort;
  // "host:port", "[v6]:port".
  std::string ToString() const;
  bool operator==(const EtcdEndpoint&) const = default;
};

struct EtcdUrl {
  std::vector<EtcdEndpoint> endpoints;  // at least one
  std::string prefix;                   // "/dapq" by default; never ends with '/'
};

// True when `url` names etcd (etcd:// or etcds://), so callers can tell it from a path.
bool IsEtcdUrl(std::string_view url);

// InvalidArgument for anything but a well-formed etcd:// URL (empty host, bad or out-of-range
// port, empty endpoint in the list, characters that do not belong in a key prefix such as
// whitespace, '?', '#', '%'); Unimplemented for etcds://.
absl::StatusOr<EtcdUrl> ParseEtcdUrl(std::string_view url);

}  // namespace dapq::cluster

#endif  // DAPQ_CLUSTER_ETCD_URL_H_
