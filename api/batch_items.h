// File: api/batch_items.h
// The batch JSONL item schema, parsed in one place for `dapq batch submit --file` (the CLI
// reads the file and sends the items inline) and for SubmitBatch's jsonl_path (the coordinator
// reads a file of its own). One JSON object per line; blank lines are skipped:
//   "prompt": string              the prompt as text (tokenized by the worker), or
//   "token_ids": [int, ...]       the prompt as token ids (exactly one of the two)
//   "max_new_tokens": int         0 or absent = the request default
//   "session_id": string          continue / start this session
//   "sampling": {...}             dapq.v1.SamplingOptions as JSON: temperature, top_p, seed
//   "compression": {...}          dapq.v1.CompressionOptions as JSON: method, budget_tokens, ...
//   "ignore_stop_tokens": bool
// An unknown or mistyped field is InvalidArgument naming the line and the field (never dropped
// silently). Parsing checks the schema only; api::ValidateGenerateRequest checks the values.
// Thread-safe (pure functions).
#ifndef DAPQ_API_BATCH_ITEMS_H_
#define DAPQ_API_BATCH_ITEMS_H_

#include <functional>
#include <istream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::api {

// Items one job may hold.
inline constexpr int kMaxBatchItems = 100000;

// One line -> a request. `where` names the line in errors (e.g. "jobs.jsonl line 3").
absl::StatusOr<dapq::v1::GenerateRequest> ParseBatchItem(absl::string_view line,
                                                         absl::string_view where);

// Every item of a JSONL stream, in order; `source` names the stream in errors ("<source> line
// N: ..."). InvalidArgument beyond kMaxBatchItems items; an empty stream gives no items.
absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> ReadBatchItems(std::istream& in,
                                                                      absl::string_view source);

// Merges `defaults` under every item (an item's own fields win) and validates each with
// api::ValidateGenerateRequest, naming a bad item with where(i) (e.g. "items[3]."). The
// coordinator runs this on every submitted job and the CLI before sending one, so both reject
// the same items with the same message. `defaults` may not carry a prompt.
absl::Status ApplyBatchDefaults(const dapq::v1::GenerateRequest& defaults, int max_seq_len,
                                const std::function<std::string(size_t)>& where,
                                std::vector<dapq::v1::GenerateRequest>& items);

}  // namespace dapq::api

#endif  // DAPQ_API_BATCH_ITEMS_H_
