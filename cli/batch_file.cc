// File: cli/batch_file.cc
// ReadBatchFile.
#include "cli/batch_file.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "api/batch_items.h"
#include "common/status_macros.h"

namespace dapq::cli {

absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> ReadBatchFile(
    const std::string& path, const dapq::v1::GenerateRequest& defaults) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--file: cannot open ", path));
  DAPQ_ASSIGN_OR_RETURN(std::vector<dapq::v1::GenerateRequest> items,
                        api::ReadBatchItems(in, path));
  if (items.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": holds no items"));
  DAPQ_RETURN_IF_ERROR(api::ApplyBatchDefaults(
      defaults, /*max_seq_len=*/0,
      [&path](size_t i) { return absl::StrCat(path, " item ", i + 1, ": "); }, items));
  return items;
}

}  // namespace dapq::cli
