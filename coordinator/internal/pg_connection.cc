// File: coordinator/internal/pg_connection.cc
// URL checking and redaction, connecting, parameterized statements and error classification
// over libpq.
#include "coordinator/internal/pg_connection.h"

#include <endian.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace dapq::coordinator::internal {
namespace {

// Type OIDs (pg_type.dat): stable across PostgreSQL versions.
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kInt8ArrayOid = 1016;
constexpr Oid kByteaArrayOid = 1001;
constexpr int kMinServerVersion = 130000;  // pg_current_xact_id_if_assigned

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = absl::ascii_tolower(static_cast<unsigned char>(c));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// %XX decoded; malformed escapes are kept as they are (this only feeds redaction).
std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The password spellings in a URL before libpq parses it: user info and `password=` values.
std::vector<std::string> RawSecrets(absl::string_view url) {
  std::vector<std::string> secrets;
  const size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return secrets;
  absl::string_view rest = url.substr(scheme_end + 3);
  const absl::string_view authority = rest.substr(0, rest.find_first_of("/?"));
  if (const size_t at = authority.rfind('@'); at != absl::string_view::npos) {
    const absl::string_view userinfo = authority.substr(0, at);
    if (const size_t colon = userinfo.find(':'); colon != absl::string_view::npos) {
      secrets.emplace_back(userinfo.substr(colon + 1));
    }
  }
  if (const size_t q = rest.find('?'); q != absl::string_view::npos) {
    for (absl::string_view kv : absl::StrSplit(rest.substr(q + 1), '&')) {
      if (absl::StartsWith(kv, "password=")) secrets.emplace_back(kv.substr(9));
    }
  }
  return secrets;
}

uint64_t LoadBigEndian(const char* p, int len) {
  uint64_t v = 0;
  for (int i = 0; i < len; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void AppendBigEndian32(std::string* out, uint32_t v) {
  const uint32_t be = htobe32(v);
  out->append(reinterpret_cast<const char*>(&be), sizeof(be));
}

// One line: libpq messages end in a newline and may carry indented DETAIL/HINT lines.
std::string OneLine(const char* message) {
  std::string s = message == nullptr ? "" : message;
  std::replace_if(
      s.begin(), s.end(), [](char c) { return c == '\n' || c == '\t' || c == '\r'; }, ' ');
  absl::RemoveExtraAsciiWhitespace(&s);
  return s;
}

}  // namespace

absl::StatusOr<PgUrl> PgUrl::Parse(const std::string& url) {
  PgUrl u;
  u.url_ = url;
  u.secrets_ = RawSecrets(url);
  for (size_t i = 0, n = u.secrets_.size(); i < n; ++i) {
    u.secrets_.push_back(PercentDecode(u.secrets_[i]));
  }
  u.redacted_ = u.Redact(url);
  if (!absl::StartsWith(url, "postgres://") && !absl::StartsWith(url, "postgresql://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch store URL '", u.redacted_, "' must start with postgres:// or postgresql://"));
  }
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    const std::string why = error != nullptr ? OneLine(error) : "out of memory";
    if (error != nullptr) PQfreemem(error);
    return absl::InvalidArgumentError(
        absl::StrCat("invalid batch store URL '", u.redacted_, "': ", u.Redact(why)));
  }
  std::string host, hostaddr, port, dbname;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const absl::string_view key = o->keyword;
    if (key == "host") host = o->val;
    if (key == "hostaddr") hostaddr = o->val;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
    if (key == "password" && *o->val != '\0') u.secrets_.emplace_back(o->val);
  }
  PQconninfoFree(options);
  u.redacted_ = u.Redact(url);
  for (absl::string_view p : absl::StrSplit(port, ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(p, &n) || n < 1 || n > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("invalid batch store URL '", u.redacted_,
                                                     "': invalid port '", u.Redact(std::string(p)),
                                                     "'"));
    }
  }
  if (host.empty()) host = hostaddr.empty() ? "localhost" : hostaddr;
  u.where_ = u.Redact(
      absl::StrCat(host, ":", port.empty() ? "5432" : port, dbname.empty() ? "" : "/", dbname));
  return u;
}

std::string PgUrl::Redact(std::string message) const {
  for (const std::string& secret : secrets_) {
    if (!secret.empty()) absl::StrReplaceAll({{secret, "***"}}, &message);
  }
  return message;
}

PgParam PgParam::Int(int64_t v) { return PgParam{kInt8Oid, std::to_string(v), false}; }

PgParam PgParam::Text(std::string_view v) { return PgParam{kTextOid, std::string(v), false}; }

PgParam PgParam::Bytes(std::string_view v) { return PgParam{kByteaOid, std::string(v), true}; }

PgParam PgParam::NullBytes() { return PgParam{kByteaOid, "", true, true}; }

PgParam PgParam::IntArray(const std::vector<int64_t>& v) {
  return PgParam{kInt8ArrayOid, absl::StrCat("{", absl::StrJoin(v, ","), "}"), false};
}

PgParam PgParam::BytesArray(const std::vector<std::string>& v, size_t begin, size_t end) {
  // Binary array: ndim, has-nulls flag, element type, then (size, lower bound) per dimension,
  // then (length, bytes) per element; all integers big-endian.
  std::string out;
  AppendBigEndian32(&out, 1);
  AppendBigEndian32(&out, 0);
  AppendBigEndian32(&out, kByteaOid);
  AppendBigEndian32(&out, static_cast<uint32_t>(end - begin));
  AppendBigEndian32(&out, 1);
  for (size_t i = begin; i < end; ++i) {
    AppendBigEndian32(&out, static_cast<uint32_t>(v[i].size()));
    out.append(v[i]);
  }
  return PgParam{kByteaArrayOid, std::move(out), true};
}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    PQclear(result_);
    result_ = other.result_;
    other.result_ = nullptr;
  }
  return *this;
}

PgResult::~PgResult() { PQclear(result_); }

int PgResult::rows() const { return PQntuples(result_); }

bool PgResult::IsNull(int row, int col) const { return PQgetisnull(result_, row, col) != 0; }

std::string PgResult::Bytes(int row, int col) const {
  return std::string(PQgetvalue(result_, row, col),
                     static_cast<size_t>(PQgetlength(result_, row, col)));
}

absl::StatusOr<int64_t> PgResult::Int(int row, int col) const {
  const char* p = PQgetvalue(result_, row, col);
  const int len = PQgetlength(result_, row, col);
  switch (len) {
    case 1:
      return static_cast<int64_t>(static_cast<unsigned char>(p[0]));
    case 2:
      return static_cast<int64_t>(static_cast<int16_t>(LoadBigEndian(p, 2)));
    case 4:
      return static_cast<int64_t>(static_cast<int32_t>(LoadBigEndian(p, 4)));
    case 8:
      return static_cast<int64_t>(LoadBigEndian(p, 8));
  }
  return absl::DataLossError(absl::StrCat("postgres: column ", PQfname(result_, col), " is ",
                                          PQgetisnull(result_, row, col) ? "NULL" : "not",
                                          " an integer (", len, " bytes)"));
}

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::Connect(
    const PgUrl& url, std::chrono::milliseconds timeout) {
  const int64_t seconds = std::clamp<int64_t>((timeout.count() + 999) / 1000, 2, 30);
  const std::string connect_timeout = std::to_string(seconds);
  // Our defaults come before dbname (the URL), so the URL's own settings override them.
  const char* keys[] = {"connect_timeout",
                        "keepalives",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "tcp_user_timeout",
                        "fallback_application_name",
                        "options",
                        "dbname",
                        nullptr};
  const char* values[] = {connect_timeout.c_str(), "1", "10", "5", "3", "15000", "dapq-coordinator",
                          // A stalled client must not hold row locks forever.
                          "-c idle_in_transaction_session_timeout=60000", url.secret_url().c_str(),
                          nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("postgres ", url.where(), ": connect: out of memory"));
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    const std::string why = url.Redact(OneLine(PQerrorMessage(conn)));
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("postgres ", url.where(), ": connect: ", why));
  }
  // Server notices (e.g. "relation already exists, skipping") are not errors: drop them
  // instead of libpq's default of printing them to stderr.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  if (PQserverVersion(conn) < kMinServerVersion) {
    const int version = PQserverVersion(conn);
    PQfinish(conn);
    return absl::FailedPreconditionError(absl::StrCat("postgres ", url.where(), ": server version ",
                                                      version, " is older than PostgreSQL 13"));
  }
  auto connection = std::unique_ptr<PgConnection>(new PgConnection(url, conn));
  absl::StatusOr<PgResult> session = connection->Query("connect: session", R"sql(
SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid())sql");
  if (!session.ok()) return session.status();
  if (session->rows() == 1 && !session->IsNull(0, 0)) {
    connection->backend_start_ = session->Bytes(0, 0);
  }
  return connection;
}

PgConnection::~PgConnection() { PQfinish(conn_); }

int PgConnection::backend_pid() const { return PQbackendPID(conn_); }

bool PgConnection::broken() const { return broken_ || PQstatus(conn_) != CONNECTION_OK; }

absl::Status PgConnection::Error(std::string_view step, const PGresult* result) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const absl::string_view sqlstate = state != nullptr ? state : "";
  const std::string why = url_.Redact(
      OneLine(result != nullptr ? PQresultErrorMessage(result) : PQerrorMessage(conn_)));
  const std::string message = absl::StrCat("postgres ", url_.where(), ": ", Sv(step), ": ", why);
  if (PQstatus(conn_) != CONNECTION_OK || absl::StartsWith(sqlstate, "08") || sqlstate == "57P01" ||
      sqlstate == "57P02" || sqlstate == "57P03" || (result == nullptr && sqlstate.empty())) {
    broken_ = true;
    return absl::UnavailableError(message);
  }
  if (sqlstate == "40001" || sqlstate == "40P01") return absl::AbortedError(message);
  if (sqlstate.empty() && PQresultStatus(result) == PGRES_FATAL_ERROR) {
    // A client-side failure (lost connection, out of memory) has no SQLSTATE.
    broken_ = true;
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

absl::StatusOr<PgResult> PgConnection::Query(std::string_view step, const char* sql,
                                             std::initializer_list<PgParam> params) {
  std::vector<Oid> types;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const PgParam& p : params) {
    types.push_back(p.type);
    values.push_back(p.null ? nullptr : p.value.data());
    lengths.push_back(static_cast<int>(p.value.size()));
    formats.push_back(p.binary ? 1 : 0);
  }
  // Null only when out of memory or the connection cannot send.
  PGresult* raw = PQexecParams(conn_, sql, static_cast<int>(params.size()), types.data(),
                               values.data(), lengths.data(), formats.data(),
                               /*resultFormat=*/1);
  const ExecStatusType status = raw != nullptr ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) return PgResult(raw);
  absl::Status error = Error(step, raw);
  PQclear(raw);
  return error;
}

absl::Status PgConnection::Exec(std::string_view step, const char* sql,
                                std::initializer_list<PgParam> params) {
  return Query(step, sql, params).status();
}

absl::Status PgConnection::ExecScript(std::string_view step, const char* sql) {
  PGresult* raw = PQexec(conn_, sql);
  const ExecStatusType status = raw != nullptr ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  absl::Status result =
      status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK ? absl::OkStatus() : Error(step, raw);
  PQclear(raw);
  return result;
}

}  // namespace dapq::coordinator::internal
