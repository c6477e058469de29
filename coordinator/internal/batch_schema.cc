// File: coordinator/internal/batch_schema.cc
// Pragmas, schema creation and the migration list of the batch store.
#include "coordinator/internal/batch_schema.h"

#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace dapq::coordinator::internal {
namespace {

// kMigrations[v] takes the schema from version v to v + 1. Append only; never edit a step
// that has shipped.
constexpr absl::string_view kMigrations[] = {
    // 0 -> 1: jobs and items.
    R"sql(
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  options BLOB NOT NULL,
  output_path TEXT NOT NULL,
  max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),
  created_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL DEFAULT 0,
  total INTEGER NOT NULL CHECK (total >= 1)
);
CREATE TABLE items (
  job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
  idx INTEGER NOT NULL CHECK (idx >= 0),
  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),
  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  request BLOB NOT NULL,
  result BLOB NOT NULL DEFAULT x'',
  error TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (job_seq, idx)
);
CREATE INDEX items_by_state ON items (state, job_seq, idx);
)sql",
    // 1 -> 2: jobs belong to the tenant that submitted them ('' = anonymous).
    R"sql(
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_by_tenant ON jobs (tenant, seq);
)sql",
};
static_assert(std::size(kMigrations) == kBatchSchemaVersion);

// FailedPrecondition unless the file is empty or a batch store of a version this build knows.
// Only reads, so a foreign file is left exactly as it was.
absl::Status CheckIsBatchStore(SqliteDb* db) {
  DAPQ_ASSIGN_OR_RETURN(int64_t version, db->QueryInt("PRAGMA user_version"));
  DAPQ_ASSIGN_OR_RETURN(int64_t app_id, db->QueryInt("PRAGMA application_id"));
  DAPQ_ASSIGN_OR_RETURN(int64_t tables,
                        db->QueryInt("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'"));
  const bool empty_file = version == 0 && app_id == 0 && tables == 0;
  if (!empty_file && app_id != kBatchApplicationId) {
    return absl::FailedPreconditionError(
        absl::StrCat(db->path(), " is an SQLite database but not a DapQ batch store (",
                     "application_id ", app_id, ", user_version ", version, ")"));
  }
  if (version > kBatchSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(db->path(), ": batch store schema version ", version,
                     " is newer than this build supports (", kBatchSchemaVersion, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ConfigureConnection(SqliteDb* db) {
  DAPQ_RETURN_IF_ERROR(db->Exec(absl::StrCat("PRAGMA busy_timeout = ", kBusyTimeoutMs)));
  DAPQ_RETURN_IF_ERROR(CheckIsBatchStore(db));  // before any pragma that writes the file
  DAPQ_ASSIGN_OR_RETURN(std::string mode, db->QueryString("PRAGMA journal_mode = WAL"));
  if (absl::AsciiStrToLower(mode) != "wal") {
    return absl::FailedPreconditionError(
        absl::StrCat("sqlite ", db->path(), ": cannot enable WAL (journal_mode is ", mode, ")"));
  }
  DAPQ_RETURN_IF_ERROR(db->Exec("PRAGMA synchronous = FULL"));
  DAPQ_RETURN_IF_ERROR(db->Exec("PRAGMA foreign_keys = ON"));
  DAPQ_ASSIGN_OR_RETURN(int64_t fk, db->QueryInt("PRAGMA foreign_keys"));
  if (fk != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("sqlite ", db->path(), ": foreign keys are not supported by this SQLite"));
  }
  return absl::OkStatus();
}

absl::Status EnsureSchema(SqliteDb* db) {
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(db));
    DAPQ_RETURN_IF_ERROR(CheckIsBatchStore(db));
    DAPQ_ASSIGN_OR_RETURN(int64_t version, db->QueryInt("PRAGMA user_version"));
    if (version == kBatchSchemaVersion) return tx.Commit();
    DAPQ_RETURN_IF_ERROR(db->Exec(kMigrations[version]));
    DAPQ_RETURN_IF_ERROR(db->Exec(absl::StrCat("PRAGMA application_id = ", kBatchApplicationId)));
    DAPQ_RETURN_IF_ERROR(db->Exec(absl::StrCat("PRAGMA user_version = ", version + 1)));
    DAPQ_RETURN_IF_ERROR(tx.Commit());
  }
}

}  // namespace dapq::coordinator::internal
