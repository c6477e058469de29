// File: kvstore/redis_connection.h
// One connection to a Redis server, plaintext (redis://) or TLS (rediss://), for RedisTier.
// The Redis protocol stays in hiredis (commands formatted with redisFormatCommandArgv, replies
// parsed by its redisReader); only the I/O is ours: a TCP socket connected with a timeout, with
// SO_RCVTIMEO/SO_SNDTIMEO so a silent peer is an error rather than a hang, and optionally an
// OpenSSL session on it. With TLS the server's certificate must chain to `tls.ca_pem` and name
// `tls.server_name` (or, when that is empty, the host dialled: a DNS name or an IP SAN); the
// client presents `tls.cert_pem`/`tls.key_pem` (mutual TLS, e.g. `--tls-auth-clients yes`).
// Errors are Unavailable with the cause (errno text, "timed out", OpenSSL's reason and the
// certificate check's reason); after any error the connection is broken (later commands fail)
// and must be dropped.
// Writes never raise SIGPIPE (MSG_NOSIGNAL, also under TLS).
// Thread-safety: not thread-safe; the owner serialises calls (RedisTier holds its mutex).
#ifndef DAPQ_KVSTORE_REDIS_CONNECTION_H_
#define DAPQ_KVSTORE_REDIS_CONNECTION_H_

#include <initializer_list>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct redisReply;   // hiredis
struct redisReader;  // hiredis
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace dapq::kvstore {

// TLS for a Redis connection, as PEM contents (not paths). Empty ca_pem = plaintext.
struct RedisTlsOptions {
  std::string ca_pem;       // the server's certificate must chain to one of these
  std::string cert_pem;     // presented to the server (with key_pem); may hold a chain
  std::string key_pem;      // private key of cert_pem
  std::string server_name;  // checked in the server's certificate; "" = the host dialled
  bool enabled() const { return !ca_pem.empty(); }
};

struct RedisConnectionOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int timeout_ms = 2000;  // connect, and each read or write
  RedisTlsOptions tls;
};

// A reply of hiredis's reader (freeReplyObject on destruction).
struct RedisReplyDeleter {
  void operator()(redisReply* reply) const;
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

class RedisConnection {
 public:
  // Resolves, connects and (with TLS) completes the handshake. Unavailable with the cause:
  // "connect: Connection refused", "TLS handshake: certificate verify failed (...)", ...
  // InvalidArgument for unusable PEM in `options.tls`.
  static absl::StatusOr<std::unique_ptr<RedisConnection>> Open(
      const RedisConnectionOptions& options);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends one command (binary-safe arguments) and reads its reply. A Redis error reply
  // (REDIS_REPLY_ERROR) is a reply, not a failure; Unavailable is I/O or protocol failure.
  absl::StatusOr<RedisReply> Command(std::initializer_list<absl::string_view> args);

 private:
  RedisConnection() = default;
  absl::Status Connect(const RedisConnectionOptions& options);
  absl::Status StartTls(const RedisConnectionOptions& options);
  absl::Status WriteAll(absl::string_view bytes);
  // Reads what is there (at least one byte) into buf; Unavailable on EOF, timeout or error.
  absl::StatusOr<size_t> ReadSome(char* buf, size_t size);

  int fd_ = -1;
  SSL_CTX* ssl_ctx_ = nullptr;
  SSL* ssl_ = nullptr;  // null for plaintext
  redisReader* reader_ = nullptr;
  bool broken_ = false;  // an I/O, TLS or protocol error happened: no further commands
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_REDIS_CONNECTION_H_
