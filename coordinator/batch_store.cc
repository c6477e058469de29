// File: coordinator/batch_store.cc
// What every batch store shares: state names, job ids, the JSONL export, and Open's choice of
// implementation by the form of its argument.
#include "coordinator/batch_store.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "coordinator/internal/posix_files.h"
#include "coordinator/postgres_batch_store.h"
#include "coordinator/sqlite_batch_store.h"
#include "nlohmann/json.hpp"

namespace dapq::coordinator {
namespace {

constexpr int kExportPageItems = 1024;

// Debian's Abseil has its own string_view type, which StrCat needs.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string ResultLine(std::string result) {
  // Raw CR/LF can only be whitespace in valid JSON text: a space keeps it one line and equal.
  for (char& c : result) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return result;
}

std::string UnfinishedLine(const ItemRecord& item) {
  nlohmann::ordered_json line;
  line["index"] = item.index;
  line["state"] = ItemStateName(item.state);
  line["error"] = item.error;
  // Invalid UTF-8 in an error becomes U+FFFD instead of throwing.
  return line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

std::string FormatJobId(int64_t seq) { return absl::StrFormat("job-%06d", seq); }

absl::StatusOr<int64_t> ParseJobId(std::string_view id) {
  const absl::string_view sv = Sv(id);
  int64_t seq = 0;
  if (!absl::StartsWith(sv, "job-") || !absl::SimpleAtoi(sv.substr(4), &seq) || seq <= 0 ||
      FormatJobId(seq) != sv) {
    return absl::NotFoundError(absl::StrCat("job ", sv, " not found (not a job id)"));
  }
  return seq;
}

absl::Status JobNotFoundError(std::string_view id) {
  return absl::NotFoundError(absl::StrCat("job ", Sv(id), " not found"));
}

bool IsPostgresUrl(std::string_view path_or_url) {
  const absl::string_view sv = Sv(path_or_url);
  return absl::StartsWith(sv, "postgres://") || absl::StartsWith(sv, "postgresql://");
}

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

std::string_view ItemStateName(ItemState state) {
  switch (state) {
    case ItemState::kPending:
      return "pending";
    case ItemState::kRunning:
      return "running";
    case ItemState::kSucceeded:
      return "succeeded";
    case ItemState::kFailed:
      return "failed";
    case ItemState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

BatchStore::AttemptEnd BatchStore::EndOfAttempt(Outcome outcome, bool retryable, int64_t attempts,
                                                int64_t max_attempts, bool job_cancelled) {
  const ItemState requeue = job_cancelled ? ItemState::kCancelled : ItemState::kPending;
  switch (outcome) {
    case Outcome::kComplete:
      return {ItemState::kSucceeded, attempts};
    case Outcome::kFail:
      return {retryable && attempts < max_attempts ? requeue : ItemState::kFailed, attempts};
    case Outcome::kRelease:
      return {requeue, attempts - 1};
  }
  return {ItemState::kFailed, attempts};
}

absl::StatusOr<std::unique_ptr<BatchStore>> BatchStore::Open(const std::string& path_or_url) {
  if (IsPostgresUrl(path_or_url)) return OpenPostgresBatchStore(path_or_url);
  return SqliteBatchStore::Open(path_or_url);
}

absl::Status BatchStore::ExportResultsJsonl(std::string_view job_id, const std::string& path) {
  DAPQ_ASSIGN_OR_RETURN(JobInfo job, GetJob(job_id));
  if (!job.finished()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", Sv(job_id), " is ",
                                                      Sv(JobStateName(job.state)),
                                                      ": only a finished job can be exported"));
  }
  // A finished job's items no longer change, so reading it page by page (without holding mu_
  // across the file I/O) sees one consistent state.
  DAPQ_ASSIGN_OR_RETURN(internal::AtomicFileWriter out, internal::AtomicFileWriter::Create(path));
  for (int from = 0;;) {
    DAPQ_ASSIGN_OR_RETURN(std::vector<ItemRecord> page, ListItems(job_id, from, kExportPageItems));
    for (ItemRecord& item : page) {
      std::string line = item.state == ItemState::kSucceeded ? ResultLine(std::move(item.result))
                                                             : UnfinishedLine(item);
      line.push_back('\n');
      DAPQ_RETURN_IF_ERROR(out.Append(line));
    }
    if (static_cast<int>(page.size()) < kExportPageItems) break;
    from = page.back().index + 1;
  }
  return out.Commit();
}

absl::StatusOr<std::vector<JobInfo>> BatchStore::ListJobs(int limit) {
  if (limit < 0) return absl::InvalidArgumentError(absl::StrCat("ListJobs: limit ", limit));
  return ListJobsWhere(limit, nullptr);
}

absl::StatusOr<std::vector<JobInfo>> BatchStore::ListTenantJobs(int limit,
                                                                std::string_view tenant) {
  if (limit < 0) return absl::InvalidArgumentError(absl::StrCat("ListJobs: limit ", limit));
  const std::string t(tenant);
  return ListJobsWhere(limit, &t);
}

}  // namespace dapq::coordinator
