// File: tests/fuzz/openai_request_fuzzer.cc
// The OpenAI HTTP API's request parser (coordinator/openai_protocol.h, ParseOpenAiRequest) for
// /v1/completions and /v1/chat/completions, on the same body. Invariants: an error has an HTTP
// status of 400 and serialises to JSON; a parsed request passes api::ValidateGenerateRequest
// (the parser runs it) and drives a response builder whose shown text (deltas, then the tail)
// is a prefix of the generated text, and all of it unless a stop sequence was generated.
#include <cstddef>
#include <cstdint>
#include <string>

#include "api/request_rules.h"
#include "coordinator/openai_protocol.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using dapq::coordinator::OpenAiEndpoint;

void Respond(const dapq::coordinator::OpenAiRequest& request) {
  dapq::coordinator::OpenAiResponseBuilder builder(request, "fuzz-model", 1700000000);
  static const char* const kParts[] = {"Hello",    " wor", "ld.\n", "\xE2\x9C",
                                       "\x93 The", " end", "\xFF",  "</s>"};
  std::string generated, shown;
  for (const char* part : kParts) {
    dapq::v1::GenerateResponse response;
    response.set_text(part);
    generated += part;
    const std::string delta = builder.Delta(response);
    builder.ChunkJson(delta);
    shown += delta;
  }
  shown += builder.Tail();
  FUZZ_CHECK(generated.compare(0, shown.size(), shown) == 0);
  if (!builder.stopped()) FUZZ_CHECK(shown == generated);
  dapq::v1::GenerationSummary summary;
  summary.set_prompt_tokens(3);
  summary.set_generated_tokens(8);
  summary.set_finish_reason(builder.stopped() ? "stop" : "length");
  builder.RoleChunkJson();
  builder.FinishChunkJson(summary);
  builder.UsageChunkJson(summary);
  builder.ResponseJson(shown, summary);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  for (const OpenAiEndpoint endpoint :
       {OpenAiEndpoint::kCompletions, OpenAiEndpoint::kChatCompletions}) {
    dapq::coordinator::OpenAiRequest request;
    const std::optional<dapq::coordinator::OpenAiError> error =
        dapq::coordinator::ParseOpenAiRequest(body, endpoint, &request);
    if (error.has_value()) {
      FUZZ_CHECK(error->http_status == 400);
      FUZZ_CHECK(!error->ToJson().empty());
      continue;
    }
    FUZZ_CHECK(request.endpoint == endpoint);
    FUZZ_CHECK(dapq::api::ValidateGenerateRequest(request.request).ok());
    Respond(request);
  }
  return 0;
}
