// File: common/tls_flags.h
// The TLS command-line flags of the server binaries (dapq-coordinator, dapq-worker), written
// once: --tls_cert, --tls_key, --tls_ca, --tls_server_name, --allow_plaintext (common/tls.h
// says what they do). Header-only (CLI11).
#ifndef DAPQ_COMMON_TLS_FLAGS_H_
#define DAPQ_COMMON_TLS_FLAGS_H_

#include "CLI/CLI.hpp"
#include "common/tls.h"

namespace dapq {

inline void AddServerTlsFlags(CLI::App& app, TlsFiles* tls, bool* allow_plaintext) {
  app.add_option("--tls_cert", tls->cert, "PEM certificate of this process (TLS on every port)");
  app.add_option("--tls_key", tls->key, "PEM private key of --tls_cert");
  app.add_option("--tls_ca", tls->ca,
                 "PEM CA of the cluster: the internal ports (Registry, a group's API, KvPeer) "
                 "accept only peers it signed");
  app.add_option("--tls_server_name", tls->server_name,
                 "check peers' certificates against this name instead of their address "
                 "(one cluster certificate for every process)");
  app.add_flag("--allow_plaintext", *allow_plaintext,
               "serve plaintext on a non-loopback address (a network you trust); without TLS "
               "files plaintext is otherwise allowed on loopback only");
}

}  // namespace dapq

#endif  // DAPQ_COMMON_TLS_FLAGS_H_
