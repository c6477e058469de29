// File: cluster/etcd_url.cc
// etcd:// URL parsing (see etcd_url.h for the grammar).
#include "cluster/etcd_url.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dapq::cluster {
namespace {

constexpr absl::string_view kScheme = "etcd://";
constexpr absl::string_view kTlsScheme = "etcds://";

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Bad(absl::string_view url, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("etcd url '", url, "': ", what));
}

absl::StatusOr<EtcdEndpoint> ParseEndpoint(absl::string_view url, absl::string_view text) {
  if (text.empty()) return Bad(url, "empty endpoint in the list");
  EtcdEndpoint endpoint;
  absl::string_view port_text;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == absl::string_view::npos) return Bad(url, absl::StrCat("unclosed '[' in ", text));
    endpoint.host = std::string(text.substr(1, close - 1));
    absl::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Bad(url, absl::StrCat("junk after ']' in ", text));
      port_text = rest.substr(1);
      if (port_text.empty()) return Bad(url, absl::StrCat("empty port in ", text));
    }
  } else {
    const size_t colon = text.find(':');
    if (colon != absl::string_view::npos && text.find(':', colon + 1) != absl::string_view::npos) {
      return Bad(url, absl::StrCat("IPv6 addresses need brackets ([::1]:2379): ", text));
    }
    endpoint.host = std::string(text.substr(0, colon));
    if (colon != absl::string_view::npos) {
      port_text = text.substr(colon + 1);
      if (port_text.empty()) return Bad(url, absl::StrCat("empty port in ", text));
    }
  }
  if (endpoint.host.empty()) return Bad(url, absl::StrCat("empty host in '", text, "'"));
  for (char c : endpoint.host) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '-' && c != '_' && c != ':') {
      return Bad(url, absl::StrCat("bad character '", std::string(1, c), "' in host ", text));
    }
  }
  if (!port_text.empty()) {
    int port = 0;
    if (!absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535 ||
        !absl::ascii_isdigit(port_text.front())) {
      return Bad(url, absl::StrCat("port '", port_text, "' is not in 1..65535"));
    }
    endpoint.port = port;
  }
  return endpoint;
}

}  // namespace

std::string EtcdEndpoint::ToString() const {
  if (absl::StrContains(host, ':')) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

bool IsEtcdUrl(std::string_view url_in) {
  const absl::string_view url = Absl(url_in);
  return absl::StartsWith(url, kScheme) || absl::StartsWith(url, kTlsScheme);
}

absl::StatusOr<EtcdUrl> ParseEtcdUrl(std::string_view url_in) {
  const absl::string_view url = Absl(url_in);
  if (absl::StartsWith(url, kTlsScheme)) {
    return absl::UnimplementedError(absl::StrCat(
        "etcd url '", url, "': TLS to etcd (etcds://) is not implemented; use etcd://"));
  }
  if (!absl::StartsWith(url, kScheme)) return Bad(url, "must start with etcd://");
  absl::string_view rest = url.substr(kScheme.size());
  const size_t slash = rest.find('/');
  const absl::string_view hosts = rest.substr(0, slash);
  const absl::string_view path =
      slash == absl::string_view::npos ? absl::string_view() : rest.substr(slash);
  if (hosts.empty()) return Bad(url, "no endpoint (etcd://host:port[,host:port...][/prefix])");
  EtcdUrl parsed;
  for (absl::string_view text : absl::StrSplit(hosts, ',')) {
    absl::StatusOr<EtcdEndpoint> endpoint = ParseEndpoint(url, text);
    if (!endpoint.ok()) return endpoint.status();
    parsed.endpoints.push_back(*std::move(endpoint));
  }
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    for (char c : part) {
      if (absl::ascii_isspace(c) || absl::ascii_iscntrl(c) || c == '?' || c == '#' || c == '%') {
        return Bad(url, absl::StrCat("bad character in the key prefix '", path, "'"));
      }
    }
    parts.push_back(part);
  }
  parsed.prefix = parts.empty() ? std::string(kEtcdDefaultPrefix)
                                : absl::StrCat("/", absl::StrJoin(parts, "/"));
  return parsed;
}

}  // namespace dapq::cluster
