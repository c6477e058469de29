// File: coordinator/internal/sqlite_db.cc
// SqliteDb / Statement / Transaction over the SQLite C API; SQLite result codes -> absl::Status.
#include "coordinator/internal/sqlite_db.h"

#include <sqlite3.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dapq::coordinator::internal {
namespace {

absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_PROTOCOL:
      return absl::StatusCode::kUnavailable;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::StatusCode::kPermissionDenied;
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

// The SQL text on one line, shortened, to name the failing step.
std::string StepName(absl::string_view sql) {
  std::string one_line =
      absl::StrJoin(absl::StrSplit(sql, absl::ByAnyChar(" \n\t"), absl::SkipEmpty()), " ");
  constexpr size_t kMax = 120;
  if (one_line.size() > kMax) one_line = one_line.substr(0, kMax) + "...";
  return one_line;
}

}  // namespace

Statement::Statement(SqliteDb* db, sqlite3_stmt* stmt, absl::string_view sql)
    : db_(db), stmt_(stmt), sql_(StepName(sql)) {}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      sql_(std::move(other.sql_)),
      bind_status_(std::move(other.bind_status_)) {}

Statement::~Statement() { sqlite3_finalize(stmt_); }  // no-op for nullptr

void Statement::NoteBind(int rc, int i) {
  if (rc != SQLITE_OK && bind_status_.ok()) {
    bind_status_ = db_->Error(rc, absl::StrCat(sql_, " (binding parameter ", i, ")"));
  }
}

Statement& Statement::BindInt(int i, int64_t v) {
  NoteBind(sqlite3_bind_int64(stmt_, i, v), i);
  return *this;
}

Statement& Statement::BindBlob(int i, absl::string_view bytes) {
  // A null pointer would bind NULL; "" keeps an empty value a zero-length blob.
  const char* data = bytes.empty() ? "" : bytes.data();
  NoteBind(sqlite3_bind_blob64(stmt_, i, data, bytes.size(), SQLITE_TRANSIENT), i);
  return *this;
}

Statement& Statement::BindText(int i, absl::string_view text) {
  const char* data = text.empty() ? "" : text.data();
  NoteBind(sqlite3_bind_text64(stmt_, i, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8), i);
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->Error(rc, sql_);
}

absl::Status Statement::Run() {
  absl::StatusOr<bool> row = Step();
  if (!row.ok()) return row.status();
  if (*row) return absl::InternalError(absl::StrCat("sqlite: ", sql_, ": unexpected result row"));
  return absl::OkStatus();
}

void Statement::Reset() { sqlite3_reset(stmt_); }

int64_t Statement::ColumnInt(int i) const { return sqlite3_column_int64(stmt_, i); }

std::string Statement::ColumnBytes(int i) const {
  const void* data = sqlite3_column_blob(stmt_, i);  // before column_bytes, as SQLite asks
  const int n = sqlite3_column_bytes(stmt_, i);
  if (data == nullptr || n <= 0) return std::string();
  return std::string(static_cast<const char*>(data), static_cast<size_t>(n));
}

bool Statement::ColumnIsNull(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    const std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::Status(CodeFor(rc), absl::StrCat("sqlite ", path, ": cannot open: ", msg));
  }
  return std::unique_ptr<SqliteDb>(new SqliteDb(db, path));
}

SqliteDb::~SqliteDb() { sqlite3_close_v2(db_); }

absl::Status SqliteDb::Error(int rc, absl::string_view step) const {
  return absl::Status(CodeFor(rc), absl::StrCat("sqlite ", path_, ": ", step, ": ",
                                                sqlite3_errmsg(db_), " (code ", rc, ")"));
}

absl::StatusOr<Statement> SqliteDb::Prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return Error(rc, StepName(sql));
  }
  return Statement(this, stmt, sql);
}

absl::Status SqliteDb::Exec(absl::string_view sql) {
  const std::string text(sql);  // sqlite3_exec needs a NUL-terminated string
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, StepName(sql));
  return absl::OkStatus();
}

absl::StatusOr<std::string> SqliteDb::QueryString(absl::string_view sql) {
  absl::StatusOr<Statement> stmt = Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  absl::StatusOr<bool> row = stmt->Step();
  if (!row.ok()) return row.status();
  return *row ? stmt->ColumnBytes(0) : std::string();
}

absl::StatusOr<int64_t> SqliteDb::QueryInt(absl::string_view sql) {
  absl::StatusOr<Statement> stmt = Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  absl::StatusOr<bool> row = stmt->Step();
  if (!row.ok()) return row.status();
  return *row ? stmt->ColumnInt(0) : 0;
}

int64_t SqliteDb::Changes() const { return sqlite3_changes64(db_); }

int64_t SqliteDb::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

bool SqliteDb::InTransaction() const { return sqlite3_get_autocommit(db_) == 0; }

absl::StatusOr<Transaction> Transaction::Begin(SqliteDb* db) {
  absl::Status s = db->Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  return Transaction(db);
}

Transaction::~Transaction() {
  // A failed COMMIT may already have rolled back; ROLLBACK only a transaction still open.
  if (db_ != nullptr && db_->InTransaction()) db_->Exec("ROLLBACK").IgnoreError();
}

absl::Status Transaction::Commit() {
  if (db_ == nullptr) return absl::FailedPreconditionError("sqlite: transaction already ended");
  absl::Status s = db_->Exec("COMMIT");
  if (s.ok()) db_ = nullptr;
  return s;
}

}  // namespace dapq::coordinator::internal
