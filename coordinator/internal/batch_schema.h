// File: coordinator/internal/batch_schema.h
// Connection settings and schema of the batch store's SQLite file.
//   ConfigureConnection: busy_timeout; then, only reading, checks that the file is empty or a
//     batch store this build knows (a file that is not an SQLite database fails here with
//     DataLoss; one of another application, or of a newer schema, with FailedPrecondition),
//     and only then writes journal_mode=WAL (verified), synchronous=FULL, foreign_keys=ON.
//   EnsureSchema: PRAGMA user_version is the schema version and PRAGMA application_id marks a
//     DapQ batch store. Version 0 with no tables is a new file; each migration step
//     (version v -> v+1) runs in its own transaction together with the version bump.
// Tables (version 1):
//   jobs(seq INTEGER PRIMARY KEY AUTOINCREMENT -- "job-%06d", never reused
//        name, options, output_path, max_attempts, state, created_unix_ms, finished_unix_ms,
//        total)
//   items(job_seq -> jobs.seq, idx, state, attempts, request, result, error;
//         PRIMARY KEY (job_seq, idx)), index items_by_state(state, job_seq, idx) for claims,
//         per-job counts and the "anything left?" check.
// States are stored as the integers of JobState / ItemState.
// Thread-safety: none; called on a connection before it is shared.
#ifndef DAPQ_COORDINATOR_INTERNAL_BATCH_SCHEMA_H_
#define DAPQ_COORDINATOR_INTERNAL_BATCH_SCHEMA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "coordinator/internal/sqlite_db.h"

namespace dapq::coordinator::internal {

inline constexpr int kBatchSchemaVersion = 2;
inline constexpr int64_t kBatchApplicationId = 0x44617051;  // "DapQ"
inline constexpr int kBusyTimeoutMs = 5000;

absl::Status ConfigureConnection(SqliteDb* db);
absl::Status EnsureSchema(SqliteDb* db);

}  // namespace dapq::coordinator::internal

#endif  // DAPQ_COORDINATOR_INTERNAL_BATCH_SCHEMA_H_
