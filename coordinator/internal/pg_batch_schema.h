// File: coordinator/internal/pg_batch_schema.h
// Schema of the PostgreSQL batch store, shared by every coordinator using one database.
//   EnsurePgBatchSchema: inside the caller's open transaction, takes a transaction-scoped
//     advisory lock (pg_advisory_xact_lock, so coordinators starting together create or migrate
//     the schema one at a time), creates dapq_schema if missing, reads the batch store's
//     version row, FailedPrecondition when it is newer than this build, then applies each
//     missing migration step and records the new version; the caller commits.
// Tables (version 1); byte strings are BYTEA (opaque, may hold NUL or invalid UTF-8):
//   dapq_schema(component PRIMARY KEY -- 'batch_store', version)
//   dapq_jobs(seq BIGSERIAL PRIMARY KEY -- "job-%06d": a sequence, monotonic, never reused;
//             name, options, output_path, tenant, max_attempts, state, created_unix_ms,
//             finished_unix_ms (0 = open), total), index (tenant, seq)
//   dapq_items(job_seq -> dapq_jobs.seq, idx, state, attempts, owner (the coordinator running
//              it, while running), request, result, error; PRIMARY KEY (job_seq, idx)),
//              index (state, job_seq, idx) for claims and counts, partial index (owner) of
//              running items for reclaiming a dead coordinator's items
//   dapq_owners(id PRIMARY KEY, started, last_seen): coordinators' heartbeats, by the
//              server's clock
//   dapq_commits(token PRIMARY KEY, created): a random token written by each transaction that
//              changes anything, so that a client that lost the answer to its COMMIT can tell
//              afterwards whether it committed (transaction ids cannot: after a crash the server
//              may hand a lost transaction's id to a new one)
// States are stored as the integers of JobState / ItemState.
// Thread-safety: none; runs on the caller's connection.
#ifndef DAPQ_COORDINATOR_INTERNAL_PG_BATCH_SCHEMA_H_
#define DAPQ_COORDINATOR_INTERNAL_PG_BATCH_SCHEMA_H_

#include "absl/status/status.h"
#include "coordinator/internal/pg_connection.h"

namespace dapq::coordinator::internal {

inline constexpr int kPgBatchSchemaVersion = 1;

// REQUIRES: a transaction is open on `conn`.
absl::Status EnsurePgBatchSchema(PgConnection* conn);

}  // namespace dapq::coordinator::internal

#endif  // DAPQ_COORDINATOR_INTERNAL_PG_BATCH_SCHEMA_H_
