// File: tests/fuzz/request_proto_fuzzer.cc
// The public request protos through the validation layer: the input's bytes parsed as a
// dapq.v1.GenerateRequest or SubmitBatchRequest, then api::ValidateGenerateRequest (and
// ApplyBatchDefaults for batches) and the worker's conversions (worker/service/
// request_options.h: ToGenerateOptions, ToCompressionConfig, PromptTokens with the tok512
// tokenizer and a chat template, CheckContext). Input: one selector byte (bit 0: batch; bits
// 1-2: chat family llama3/llama2/mistral/chatml; bit 3: a continuing session turn), then the
// serialised message. Invariants: every rejection is InvalidArgument or OutOfRange; a request
// the shared rules accept is accepted by the worker's conversion too (the same verdict
// everywhere), and its prompt tokens lie inside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "api/batch_items.h"
#include "api/request_rules.h"
#include "dapq/v1/batch.pb.h"
#include "dapq/v1/inference.pb.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/chat_template.h"
#include "worker/service/request_options.h"
#include "worker/tokenizer.h"

namespace {

namespace service = dapq::worker::service;
constexpr int kVocab = 512;
constexpr int kMaxSeqLen = 512;

void CheckCode(const absl::Status& s) {
  FUZZ_CHECK(s.ok() || s.code() == absl::StatusCode::kInvalidArgument ||
             s.code() == absl::StatusCode::kOutOfRange);
}

const dapq::worker::Tokenizer& Tok512() {
  static const dapq::worker::Tokenizer* tok = [] {
    absl::StatusOr<dapq::worker::Tokenizer> t =
        dapq::worker::Tokenizer::Load(dapq::fuzz::SharedModelPath("tok512.bin"), kVocab);
    FUZZ_CHECK(t.ok());
    return new dapq::worker::Tokenizer(*std::move(t));
  }();
  return *tok;
}

const dapq::worker::ChatTemplate& Template(int family) {
  static const std::vector<dapq::worker::ChatTemplate>* templates = [] {
    auto* v = new std::vector<dapq::worker::ChatTemplate>;
    for (const char* name : {"llama3", "llama2", "mistral", "chatml"}) {
      absl::StatusOr<dapq::worker::ChatTemplate> t = dapq::worker::ChatTemplate::ForFamily(name);
      FUZZ_CHECK(t.ok());
      v->push_back(*t);
    }
    return v;
  }();
  return (*templates)[family];
}

// The worker's side of one request the shared rules have ruled on (`valid`).
void WorkerSide(const dapq::v1::GenerateRequest& request, bool valid, int family, bool continuing) {
  const absl::StatusOr<dapq::worker::GenerateOptions> options = service::ToGenerateOptions(request);
  CheckCode(options.status());
  FUZZ_CHECK(options.ok() == valid);
  const absl::StatusOr<dapq::worker::compress::CompressionConfig> compression =
      service::ToCompressionConfig(request.compression());
  CheckCode(compression.status());
  if (valid) FUZZ_CHECK(compression.ok());
  const service::PromptCodec codec{&Tok512(), &Template(family)};
  const absl::StatusOr<std::vector<int>> tokens =
      service::PromptTokens(request, codec, kVocab, continuing);
  CheckCode(tokens.status());
  if (!tokens.ok()) return;
  FUZZ_CHECK(!tokens->empty());
  for (const int id : *tokens) FUZZ_CHECK(id >= 0 && id < kVocab);
  if (options.ok()) {
    CheckCode(service::CheckContext(tokens->size(), options->max_new_tokens, continuing ? 100 : 0,
                                    kMaxSeqLen));
  }
  // Without a tokenizer or template, text and chat prompts are refused, token ids still pass.
  CheckCode(service::PromptTokens(request, {}, kVocab, continuing).status());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  const int family = (selector >> 1) & 3;
  const bool continuing = (selector & 8) != 0;
  const absl::string_view bytes = dapq::fuzz::AsView(data + 1, size - 1);
  if ((selector & 1) == 0) {
    dapq::v1::GenerateRequest request;
    if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return 0;
    const absl::Status valid = dapq::api::ValidateGenerateRequest(request, kMaxSeqLen, "req.");
    CheckCode(valid);
    CheckCode(dapq::api::ValidateGenerateRequest(request));
    WorkerSide(request, dapq::api::ValidateGenerateRequest(request).ok(), family, continuing);
    return 0;
  }
  dapq::v1::SubmitBatchRequest batch;
  if (!batch.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return 0;
  std::vector<dapq::v1::GenerateRequest> items(batch.items().begin(), batch.items().end());
  const absl::Status applied = dapq::api::ApplyBatchDefaults(
      batch.defaults(), kMaxSeqLen, [](size_t i) { return absl::StrCat("items[", i, "]."); },
      items);
  CheckCode(applied);
  if (!applied.ok()) return 0;
  for (const dapq::v1::GenerateRequest& item : items) WorkerSide(item, true, family, continuing);
  return 0;
}
