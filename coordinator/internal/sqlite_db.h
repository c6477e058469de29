// File: coordinator/internal/sqlite_db.h
// A thin RAII layer over the SQLite C API that reports every failure as absl::Status:
//   SqliteDb (one connection), Statement (one prepared statement), Transaction (BEGIN IMMEDIATE,
//   rolled back unless committed). Error messages name the database path, the SQL step and
//   sqlite3_errmsg; codes: BUSY/LOCKED -> Unavailable, CORRUPT/NOTADB -> DataLoss,
//   FULL/NOMEM -> ResourceExhausted, READONLY/PERM/AUTH -> PermissionDenied,
//   CANTOPEN/IOERR -> Unavailable, TOOBIG/RANGE -> InvalidArgument, anything else -> Internal.
// Text and blobs are bound and read as raw bytes (embedded NULs survive).
// Thread-safety: none. The owner serialises every use of a connection and of its statements.
// Ownership: a Statement or Transaction must not outlive the SqliteDb it came from.
#ifndef DAPQ_COORDINATOR_INTERNAL_SQLITE_DB_H_
#define DAPQ_COORDINATOR_INTERNAL_SQLITE_DB_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace dapq::coordinator::internal {

class SqliteDb;

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based. A failed bind is reported by the next Step()/Run().
  Statement& BindInt(int i, int64_t v);
  Statement& BindBlob(int i, absl::string_view bytes);  // stored as a BLOB
  Statement& BindText(int i, absl::string_view text);   // stored as TEXT

  // true: a row is available; false: done.
  absl::StatusOr<bool> Step();
  // Steps to completion; a returned row is an error (use Step for queries).
  absl::Status Run();
  // Makes the statement reusable (bindings are kept unless rebound).
  void Reset();

  // Columns are 0-based; valid only after Step() returned true.
  int64_t ColumnInt(int i) const;
  std::string ColumnBytes(int i) const;  // TEXT or BLOB, "" for NULL
  bool ColumnIsNull(int i) const;

 private:
  friend class SqliteDb;
  Statement(SqliteDb* db, sqlite3_stmt* stmt, absl::string_view sql);
  void NoteBind(int rc, int i);

  SqliteDb* db_;
  sqlite3_stmt* stmt_;
  std::string sql_;  // for error messages
  absl::Status bind_status_;
};

class SqliteDb {
 public:
  // Opens (creating if missing) the database file. Nothing is read yet: a file that is not an
  // SQLite database is reported by the first statement that touches it.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  // Runs one or more statements that return no rows of interest.
  absl::Status Exec(absl::string_view sql);
  // Runs a PRAGMA (or any query) and returns the first column of its first row as text
  // ("" when there is no row).
  absl::StatusOr<std::string> QueryString(absl::string_view sql);
  absl::StatusOr<int64_t> QueryInt(absl::string_view sql);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  int64_t Changes() const;
  // Rowid of the last row INSERTed on this connection.
  int64_t LastInsertRowId() const;
  // Whether a transaction is open on this connection.
  bool InTransaction() const;

  const std::string& path() const { return path_; }
  // The Status for a failed call that returned `rc`, naming `step` and sqlite3_errmsg.
  absl::Status Error(int rc, absl::string_view step) const;

 private:
  SqliteDb(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  sqlite3* db_;
  const std::string path_;
};

// BEGIN IMMEDIATE ... COMMIT; the destructor rolls back a transaction that was not committed.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(SqliteDb* db);
  Transaction(Transaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  ~Transaction();

  absl::Status Commit();

 private:
  explicit Transaction(SqliteDb* db) : db_(db) {}
  SqliteDb* db_;  // nullptr once committed or rolled back
};

}  // namespace dapq::coordinator::internal

#endif  // DAPQ_COORDINATOR_INTERNAL_SQLITE_DB_H_
