// File: coordinator/internal/pg_batch_schema.cc
// The PostgreSQL batch store's migration list, applied under an advisory lock.
#include "coordinator/internal/pg_batch_schema.h"

#include <cstdint>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dapq::coordinator::internal {
namespace {

// The advisory lock that serialises schema changes: "DapQ" and 1 (the batch store).
constexpr int64_t kSchemaLockKey = (int64_t{0x44617051} << 32) | 1;
constexpr char kComponent[] = "batch_store";

// kMigrations[v] takes the schema from version v to v + 1. Append only; never edit a step
// that has shipped. IF NOT EXISTS: a database where someone created these by hand still works.
constexpr const char* kMigrations[] = {
    // 0 -> 1: jobs, items, coordinators.
    R"sql(
CREATE TABLE IF NOT EXISTS dapq_jobs (
  seq BIGSERIAL PRIMARY KEY,
  name BYTEA NOT NULL,
  options BYTEA NOT NULL,
  output_path BYTEA NOT NULL,
  tenant BYTEA NOT NULL DEFAULT '',
  max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
  state SMALLINT NOT NULL CHECK (state BETWEEN 0 AND 4),
  created_unix_ms BIGINT NOT NULL,
  finished_unix_ms BIGINT NOT NULL DEFAULT 0,
  total INTEGER NOT NULL CHECK (total >= 1)
);
CREATE INDEX IF NOT EXISTS dapq_jobs_by_tenant ON dapq_jobs (tenant, seq);
CREATE TABLE IF NOT EXISTS dapq_items (
  job_seq BIGINT NOT NULL REFERENCES dapq_jobs (seq) ON DELETE CASCADE,
  idx INTEGER NOT NULL CHECK (idx >= 0),
  state SMALLINT NOT NULL CHECK (state BETWEEN 0 AND 4),
  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  owner TEXT,
  request BYTEA NOT NULL,
  result BYTEA NOT NULL DEFAULT '',
  error BYTEA NOT NULL DEFAULT '',
  PRIMARY KEY (job_seq, idx)
);
CREATE INDEX IF NOT EXISTS dapq_items_by_state ON dapq_items (state, job_seq, idx);
CREATE INDEX IF NOT EXISTS dapq_items_running ON dapq_items (owner) WHERE state = 1;
CREATE TABLE IF NOT EXISTS dapq_owners (
  id TEXT PRIMARY KEY,
  started TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS dapq_commits (
  token TEXT PRIMARY KEY,
  created TIMESTAMPTZ NOT NULL DEFAULT now()
);
)sql",
};
static_assert(std::size(kMigrations) == kPgBatchSchemaVersion);

}  // namespace

absl::Status EnsurePgBatchSchema(PgConnection* conn) {
  DAPQ_RETURN_IF_ERROR(conn->Exec("schema: lock", "SELECT pg_advisory_xact_lock($1)",
                                  {PgParam::Int(kSchemaLockKey)}));
  DAPQ_RETURN_IF_ERROR(conn->ExecScript("schema: create dapq_schema", R"sql(
CREATE TABLE IF NOT EXISTS dapq_schema (
  component TEXT PRIMARY KEY,
  version INTEGER NOT NULL CHECK (version >= 0)
))sql"));
  DAPQ_ASSIGN_OR_RETURN(
      PgResult row,
      conn->Query("schema: read version", "SELECT version FROM dapq_schema WHERE component = $1",
                  {PgParam::Text(kComponent)}));
  int64_t version = 0;
  if (row.rows() > 0) {
    DAPQ_ASSIGN_OR_RETURN(version, row.Int(0, 0));
  }
  if (version > kPgBatchSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("postgres ", conn->url().where(), ": batch store schema version ", version,
                     " is newer than this build supports (", kPgBatchSchemaVersion, ")"));
  }
  if (version == kPgBatchSchemaVersion) return absl::OkStatus();
  for (int64_t v = version; v < kPgBatchSchemaVersion; ++v) {
    DAPQ_RETURN_IF_ERROR(
        conn->ExecScript(absl::StrCat("schema: migrate to version ", v + 1), kMigrations[v]));
  }
  return conn->Exec("schema: record version", R"sql(
INSERT INTO dapq_schema (component, version) VALUES ($1, $2)
ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version)sql",
                    {PgParam::Text(kComponent), PgParam::Int(kPgBatchSchemaVersion)});
}

}  // namespace dapq::coordinator::internal
