// File: coordinator/internal/pg_connection.h
// A thin RAII layer over one libpq connection (PGconn) for the PostgreSQL batch store:
//   PgUrl: a postgres:// or postgresql:// URL, checked with PQconninfoParse (InvalidArgument
//     when malformed). It keeps the URL (which may hold a password) private and offers where()
//     ("host:port/dbname") and Redact() for messages: no message built here ever carries the
//     password, neither from the URL's user info nor from a `password=` query parameter.
//   PgConnection: connects (one attempt, libpq's connect_timeout; TCP keepalives and a TCP user
//     timeout so a dead server is noticed) and runs parameterized statements only
//     (PQexecParams: values never go into SQL text), with binary results. ExecScript runs
//     fixed SQL text with no values (BEGIN, COMMIT, the schema's DDL).
//   PgResult: owns a PGresult; binary-format column accessors.
// Errors: "postgres <host:port/db>: <step>: <PQerrorMessage>", with codes:
//   Unavailable: the connection is gone (CONNECTION_BAD, SQLSTATE class 08, 57P01-57P03 server
//     shutting down or starting up); broken() is then true and the connection is useless.
//   Aborted: serialization failure or deadlock (40001, 40P01): the transaction can be re-run.
//   Internal: any other SQL error; FailedPrecondition: a server older than PostgreSQL 13.
// Thread-safety: none; a PgConnection belongs to one thread at a time (the owner's mutex).
#ifndef DAPQ_COORDINATOR_INTERNAL_PG_CONNECTION_H_
#define DAPQ_COORDINATOR_INTERNAL_PG_CONNECTION_H_

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dapq::coordinator::internal {

class PgUrl {
 public:
  static absl::StatusOr<PgUrl> Parse(const std::string& url);

  // The URL as given, password included: only for libpq, never for messages.
  const std::string& secret_url() const { return url_; }
  // "127.0.0.1:5432/dapq" (host list and port as given; libpq's defaults when absent).
  const std::string& where() const { return where_; }
  // The URL with its password replaced by "***".
  const std::string& redacted() const { return redacted_; }
  // `message` with every occurrence of the password replaced by "***".
  std::string Redact(std::string message) const;

 private:
  PgUrl() = default;
  std::string url_;
  std::string where_;
  std::string redacted_;
  std::vector<std::string> secrets_;  // the password, raw and percent-decoded
};

// One statement parameter. Integers and text travel as text, bytes as binary bytea.
struct PgParam {
  static PgParam Int(int64_t v);
  static PgParam Text(std::string_view v);  // valid UTF-8 without NUL
  static PgParam Bytes(std::string_view v);
  static PgParam NullBytes();  // SQL NULL of type bytea
  // int8[] / bytea[] (binary array format), for set-based statements.
  static PgParam IntArray(const std::vector<int64_t>& v);
  static PgParam BytesArray(const std::vector<std::string>& v, size_t begin, size_t end);

  Oid type = 0;
  std::string value;
  bool binary = false;
  bool null = false;
};

class PgResult {
 public:
  explicit PgResult(PGresult* result) : result_(result) {}
  PgResult(PgResult&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;
  ~PgResult();

  int rows() const;
  bool IsNull(int row, int col) const;
  // The raw bytes of a binary-format value (bytea and text as they are).
  std::string Bytes(int row, int col) const;
  // smallint / integer / bigint / boolean (binary, network order); DataLoss otherwise.
  absl::StatusOr<int64_t> Int(int row, int col) const;

 private:
  PGresult* result_;
};

class PgConnection {
 public:
  // One connection attempt, waiting at most about `timeout` (libpq counts whole seconds, at
  // least 2). Unavailable with where() and libpq's message (redacted) when it fails.
  static absl::StatusOr<std::unique_ptr<PgConnection>> Connect(const PgUrl& url,
                                                               std::chrono::milliseconds timeout);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // The connection is lost (or a statement reported it lost): reconnect before using it.
  bool broken() const;
  const PgUrl& url() const { return url_; }
  // The server session of this connection: its process id and start time
  // (pg_stat_activity.pid and backend_start::text), which together name it uniquely, also
  // across server restarts.
  int backend_pid() const;
  const std::string& backend_start() const { return backend_start_; }

  // Runs one statement with `params` ($1, $2, ...); `step` names it in errors.
  absl::StatusOr<PgResult> Query(std::string_view step, const char* sql,
                                 std::initializer_list<PgParam> params = {});
  absl::Status Exec(std::string_view step, const char* sql,
                    std::initializer_list<PgParam> params = {});
  // Runs fixed SQL text (may be several statements) that contains no values.
  absl::Status ExecScript(std::string_view step, const char* sql);

 private:
  PgConnection(const PgUrl& url, PGconn* conn) : url_(url), conn_(conn) {}
  // The error of `result` (or of the connection when null), classified as described above.
  absl::Status Error(std::string_view step, const PGresult* result);

  const PgUrl url_;
  PGconn* const conn_;
  std::string backend_start_;
  bool broken_ = false;
};

}  // namespace dapq::coordinator::internal

#endif  // DAPQ_COORDINATOR_INTERNAL_PG_CONNECTION_H_
