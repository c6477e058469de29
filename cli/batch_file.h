// File: cli/batch_file.h
// `dapq batch submit --file`: a local JSONL file of items (schema: api/batch_items.h) read and
// checked exactly as the coordinator would check it, so a bad item fails before anything is sent,
// naming the file and the line or item.
#ifndef DAPQ_CLI_BATCH_FILE_H_
#define DAPQ_CLI_BATCH_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::cli {

// The items of `path` with `defaults` merged under each (as SubmitBatch does), validated.
// NotFound when the file cannot be opened; InvalidArgument for a bad line or item, or no items.
absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> ReadBatchFile(
    const std::string& path, const dapq::v1::GenerateRequest& defaults);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_BATCH_FILE_H_
