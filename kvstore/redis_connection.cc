// File: kvstore/redis_connection.cc
// Socket and OpenSSL I/O under hiredis's command formatter and reply reader.
#include "kvstore/redis_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace dapq::kvstore {

void RedisReplyDeleter::operator()(redisReply* reply) const { freeReplyObject(reply); }

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The text of an errno value from a socket call; EAGAIN is SO_RCVTIMEO/SO_SNDTIMEO expiring.
std::string ErrnoText(int err) {
  if (err == EAGAIN || err == EWOULDBLOCK) return "timed out";
  if (err == 0) return "connection closed by the server";
  return std::strerror(err);
}

BioPtr MemBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// OpenSSL's reasons for the last failure (its error queue, oldest first), else the socket's.
std::string SslFailure(SSL* ssl, int ret, int saved_errno) {
  const int kind = SSL_get_error(ssl, ret);
  std::string reason;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    const char* r = ERR_reason_error_string(e);
    absl::StrAppend(&reason, reason.empty() ? "" : "; ", r != nullptr ? r : "unknown error");
  }
  if (reason.empty()) {
    reason = kind == SSL_ERROR_ZERO_RETURN ? "connection closed by the server (TLS close)"
                                           : ErrnoText(saved_errno);
  }
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    absl::StrAppend(&reason, " (", X509_verify_cert_error_string(verify), ")");
  }
  return reason;
}

// The socket calls of both paths (plaintext, and the TLS BIO below), retried on EINTR. Sends use
// MSG_NOSIGNAL: a write to a connection the server reset would otherwise raise SIGPIPE and kill
// the process.
ssize_t SendNoSignal(int fd, const char* data, size_t len) {
  ssize_t n;
  do {
    n = ::send(fd, data, len, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

ssize_t Receive(int fd, char* data, size_t len) {
  ssize_t n;
  do {
    n = ::recv(fd, data, len, 0);
  } while (n < 0 && errno == EINTR);
  return n;
}

// A socket BIO over SendNoSignal / Receive: OpenSSL's own socket BIO write()s (SIGPIPE).
int BioFd(BIO* bio) { return *static_cast<const int*>(BIO_get_data(bio)); }

int BioWrite(BIO* bio, const char* data, int len) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = SendNoSignal(BioFd(bio), data, static_cast<size_t>(len));
  return n < 0 ? -1 : static_cast<int>(n);
}

int BioRead(BIO* bio, char* data, int len) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = Receive(BioFd(bio), data, static_cast<size_t>(len));
  return n < 0 ? -1 : static_cast<int>(n);
}

int BioPuts(BIO* bio, const char* s) { return BioWrite(bio, s, static_cast<int>(std::strlen(s))); }

long BioCtrl(BIO* /*bio*/, int cmd, long /*num*/, void* /*ptr*/) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;  // unbuffered: nothing to flush
}

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// Created once and kept for the life of the process (thread-safe static initialisation).
const BIO_METHOD* SocketBioMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "dapq redis socket");
    if (m != nullptr) {
      BIO_meth_set_write(m, BioWrite);
      BIO_meth_set_read(m, BioRead);
      BIO_meth_set_puts(m, BioPuts);
      BIO_meth_set_ctrl(m, BioCtrl);
      BIO_meth_set_create(m, BioCreate);
    }
    return m;
  }();
  return method;
}

bool IsIpLiteral(const std::string& host) {
  in_addr v4;
  in6_addr v6;
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 || inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

// Connects one resolved address within timeout_ms; the socket (blocking again) or errno text.
absl::StatusOr<int> ConnectOne(const addrinfo& ai, int timeout_ms) {
  const int fd =
      ::socket(ai.ai_family, ai.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai.ai_protocol);
  if (fd < 0) return absl::UnavailableError(std::strerror(errno));
  int rc = ::connect(fd, ai.ai_addr, ai.ai_addrlen);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    do {
      rc = ::poll(&p, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) {
      ::close(fd);
      return absl::UnavailableError("timed out");
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (rc < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    errno = err;
    rc = err == 0 ? 0 : -1;
  }
  if (rc != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(std::strerror(err));
  }
  const int flags = ::fcntl(fd, F_GETFL, 0);
  const timeval tv{timeout_ms / 1000, static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
  const int one = 1;
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(std::strerror(err));
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisConnection>> RedisConnection::Open(
    const RedisConnectionOptions& options) {
  std::unique_ptr<RedisConnection> c(new RedisConnection());
  c->reader_ = redisReaderCreate();
  if (c->reader_ == nullptr) return absl::ResourceExhaustedError("redis: out of memory");
  if (absl::Status s = c->Connect(options); !s.ok()) return s;
  if (options.tls.enabled()) {
    if (absl::Status s = c->StartTls(options); !s.ok()) return s;
  }
  return c;
}

RedisConnection::~RedisConnection() {
  if (ssl_ != nullptr) {
    if (!broken_ && SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);  // close_notify, not awaited
    ERR_clear_error();
    SSL_free(ssl_);  // frees the BIO too
  }
  if (ssl_ctx_ != nullptr) SSL_CTX_free(ssl_ctx_);
  if (fd_ >= 0) ::close(fd_);
  if (reader_ != nullptr) redisReaderFree(reader_);
}

absl::Status RedisConnection::Connect(const RedisConnectionOptions& options) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int gai =
      ::getaddrinfo(options.host.c_str(), std::to_string(options.port).c_str(), &hints, &found);
  if (gai != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect: cannot resolve ", options.host, ": ", gai_strerror(gai)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(found, freeaddrinfo);
  std::string why = "no address";
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    absl::StatusOr<int> fd = ConnectOne(*ai, options.timeout_ms);
    if (fd.ok()) {
      fd_ = *fd;
      return absl::OkStatus();
    }
    why = std::string(fd.status().message());
  }
  return absl::UnavailableError(absl::StrCat("connect: ", why));
}

absl::Status RedisConnection::StartTls(const RedisConnectionOptions& options) {
  const RedisTlsOptions& tls = options.tls;
  ERR_clear_error();
  ssl_ctx_ = SSL_CTX_new(TLS_client_method());
  if (ssl_ctx_ == nullptr) return absl::ResourceExhaustedError("TLS: SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(ssl_ctx_, TLS1_2_VERSION);
  SSL_CTX_set_verify(ssl_ctx_, SSL_VERIFY_PEER, nullptr);

  // Trust exactly the given CA certificates (not the system store).
  X509_STORE* store = SSL_CTX_get_cert_store(ssl_ctx_);
  BioPtr ca_bio = MemBio(tls.ca_pem);
  int trusted = 0;
  while (X509Ptr ca = X509Ptr(PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr))) {
    if (X509_STORE_add_cert(store, ca.get()) == 1) ++trusted;
  }
  ERR_clear_error();  // the read that ended the loop leaves "no start line"
  if (trusted == 0) return absl::InvalidArgumentError("TLS: no certificate in the CA PEM");

  if (tls.cert_pem.empty() != tls.key_pem.empty()) {
    return absl::InvalidArgumentError("TLS: a client certificate needs its key and vice versa");
  }
  if (!tls.cert_pem.empty()) {
    BioPtr cert_bio = MemBio(tls.cert_pem);
    X509Ptr leaf(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    if (leaf == nullptr || SSL_CTX_use_certificate(ssl_ctx_, leaf.get()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError("TLS: no usable certificate in the client cert PEM");
    }
    // Any further certificates are the chain up to the CA.
    while (X509Ptr extra = X509Ptr(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr))) {
      if (SSL_CTX_add1_chain_cert(ssl_ctx_, extra.get()) != 1) break;
    }
    ERR_clear_error();
    BioPtr key_bio = MemBio(tls.key_pem);
    PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (key == nullptr || SSL_CTX_use_PrivateKey(ssl_ctx_, key.get()) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx_) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          "TLS: the client key is unreadable or does not match the certificate");
    }
  }

  ssl_ = SSL_new(ssl_ctx_);
  BIO* bio = SocketBioMethod() != nullptr ? BIO_new(SocketBioMethod()) : nullptr;
  if (ssl_ == nullptr || bio == nullptr) {
    if (bio != nullptr) BIO_free(bio);
    return absl::ResourceExhaustedError("TLS: SSL_new failed");
  }
  BIO_set_data(bio, &fd_);      // the connection outlives ssl_ and its BIO
  SSL_set_bio(ssl_, bio, bio);  // ssl_ owns it

  // The name the server's certificate must carry: a DNS SAN (also sent as SNI) or an IP SAN.
  const std::string& name = tls.server_name.empty() ? options.host : tls.server_name;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (IsIpLiteral(name)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("TLS: bad server address ", name));
    }
  } else if (X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size()) != 1 ||
             SSL_set_tlsext_host_name(ssl_, name.c_str()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("TLS: bad server name ", name));
  }

  ERR_clear_error();
  errno = 0;
  const int rc = SSL_connect(ssl_);
  if (rc != 1) {
    const int saved_errno = errno;
    broken_ = true;
    std::string why = SslFailure(ssl_, rc, saved_errno);
    if (why.find("wrong version number") != std::string::npos ||
        why.find("packet length too long") != std::string::npos || why == "timed out") {
      why += " (a plaintext server? then redis://)";  // no answer in TLS
    }
    return absl::UnavailableError(absl::StrCat("TLS handshake: ", why));
  }
  return absl::OkStatus();
}

absl::Status RedisConnection::WriteAll(absl::string_view bytes) {
  while (!bytes.empty()) {
    const int chunk = static_cast<int>(std::min<size_t>(bytes.size(), 1 << 30));
    if (ssl_ != nullptr) {
      ERR_clear_error();
      errno = 0;
      const int n = SSL_write(ssl_, bytes.data(), chunk);
      if (n <= 0) {
        const int saved_errno = errno;
        broken_ = true;
        std::string why = SslFailure(ssl_, n, saved_errno);
        if (saved_errno == ECONNRESET || saved_errno == EPIPE) {
          // A server that refuses our certificate (TLS 1.3: after our side of the handshake
          // ended) sends an alert and closes; our write can meet the reset first. The alert
          // is still queued: read it for the server's reason.
          char byte;
          ERR_clear_error();
          const int r = SSL_read(ssl_, &byte, 1);
          const std::string alert = r <= 0 ? SslFailure(ssl_, r, errno) : "";
          if (alert.find("alert") != std::string::npos) why = alert;
        }
        return absl::UnavailableError(why);
      }
      bytes.remove_prefix(static_cast<size_t>(n));
    } else {
      const ssize_t n = SendNoSignal(fd_, bytes.data(), static_cast<size_t>(chunk));
      if (n < 0) {
        broken_ = true;
        return absl::UnavailableError(ErrnoText(errno));
      }
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> RedisConnection::ReadSome(char* buf, size_t size) {
  if (ssl_ != nullptr) {
    ERR_clear_error();
    errno = 0;
    const int n = SSL_read(ssl_, buf, static_cast<int>(size));
    if (n <= 0) {
      const int saved_errno = errno;
      broken_ = true;
      return absl::UnavailableError(SslFailure(ssl_, n, saved_errno));
    }
    return static_cast<size_t>(n);
  }
  const ssize_t n = Receive(fd_, buf, size);
  if (n <= 0) {
    broken_ = true;
    return absl::UnavailableError(ErrnoText(n == 0 ? 0 : errno));
  }
  return static_cast<size_t>(n);
}

absl::StatusOr<RedisReply> RedisConnection::Command(std::initializer_list<absl::string_view> args) {
  if (broken_) return absl::UnavailableError("connection already failed");
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (absl::string_view a : args) {
    argv.push_back(a.empty() ? "" : a.data());
    lens.push_back(a.size());
  }
  char* formatted = nullptr;
  const int len =
      redisFormatCommandArgv(&formatted, static_cast<int>(argv.size()), argv.data(), lens.data());
  if (len < 0) return absl::ResourceExhaustedError("redis: out of memory formatting a command");
  std::unique_ptr<char, decltype(&redisFreeCommand)> owned(formatted, redisFreeCommand);
  if (absl::Status s = WriteAll(absl::string_view(formatted, static_cast<size_t>(len))); !s.ok()) {
    return s;
  }
  char buf[16384];
  while (true) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
      broken_ = true;
      return absl::UnavailableError(absl::StrCat("protocol error: ", reader_->errstr));
    }
    if (reply != nullptr) return RedisReply(static_cast<redisReply*>(reply));
    absl::StatusOr<size_t> n = ReadSome(buf, sizeof(buf));
    if (!n.ok()) return n.status();
    if (redisReaderFeed(reader_, buf, *n) != REDIS_OK) {
      broken_ = true;
      return absl::UnavailableError(absl::StrCat("protocol error: ", reader_->errstr));
    }
  }
}

}  // namespace dapq::kvstore
