// File: tests/fuzz/batch_items_fuzzer.cc
// Batch JSONL items (api/batch_items.h): the input as a JSONL stream (ReadBatchItems) and as
// one line (ParseBatchItem), then the items through ApplyBatchDefaults and
// api::ValidateGenerateRequest. Invariants: every error is InvalidArgument (or OutOfRange from
// the validation); a parsed item carries at most one prompt, and items that pass validation
// survive a serialise/parse round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "api/batch_items.h"
#include "api/request_rules.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void CheckCode(const absl::Status& s) {
  FUZZ_CHECK(s.ok() || s.code() == absl::StatusCode::kInvalidArgument ||
             s.code() == absl::StatusCode::kOutOfRange);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input = dapq::fuzz::AsView(data, size);
  const absl::StatusOr<dapq::v1::GenerateRequest> one =
      dapq::api::ParseBatchItem(input, "fuzz line 1");
  CheckCode(one.status());

  std::istringstream stream{std::string(input)};
  absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> items =
      dapq::api::ReadBatchItems(stream, "fuzz.jsonl");
  CheckCode(items.status());
  if (!items.ok()) return 0;
  for (size_t i = 0; i < items->size(); ++i) {
    const dapq::v1::GenerateRequest& item = (*items)[i];
    const absl::Status valid =
        dapq::api::ValidateGenerateRequest(item, 512, absl::StrCat("items[", i, "]."));
    CheckCode(valid);
    dapq::api::EffectiveMaxNewTokens(item);
    if (valid.ok()) {
      dapq::v1::GenerateRequest again;
      FUZZ_CHECK(again.ParseFromString(item.SerializeAsString()));
      FUZZ_CHECK(again.SerializeAsString() == item.SerializeAsString());
    }
  }
  dapq::v1::GenerateRequest defaults;
  defaults.set_max_new_tokens(8);
  defaults.mutable_sampling()->set_temperature(0.5f);
  CheckCode(dapq::api::ApplyBatchDefaults(
      defaults, 512, [](size_t i) { return absl::StrCat("items[", i, "]."); }, *items));
  return 0;
}
