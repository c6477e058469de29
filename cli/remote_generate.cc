// File: cli/remote_generate.cc
// RunRemoteGenerate and the flags -> request mapping.
#include "cli/remote_generate.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "api/request_rules.h"
#include "common/auth_token.h"
#include "common/grpc_status.h"
#include "common/tls.h"
#include "dapq/v1/inference.grpc.pb.h"

namespace dapq::cli {

absl::StatusOr<dapq::v1::GenerateRequest> ToGenerateRequest(const GenerateCommandOptions& o,
                                                            const CompressionFlags& f) {
  dapq::v1::GenerateRequest r;
  if (o.prompt_tokens > 0) {
    std::mt19937_64 rng(o.seed);
    r.mutable_token_ids()->add_ids(1);  // BOS
    // The vocabulary is the worker's: random ids stay below the smallest (llama2.c's 512).
    while (r.token_ids().ids_size() < o.prompt_tokens) {
      r.mutable_token_ids()->add_ids(static_cast<int>(rng() % 512));
    }
  } else if (!o.prompt.empty()) {
    r.set_text(o.prompt);
  } else {
    r.mutable_token_ids()->add_ids(1);  // BOS alone
  }
  r.set_max_new_tokens(o.steps);
  r.mutable_sampling()->set_temperature(o.temperature);
  r.mutable_sampling()->set_top_p(o.top_p);
  r.mutable_sampling()->set_seed(o.seed);
  r.set_session_id(o.session_remote);
  dapq::v1::CompressionOptions& c = *r.mutable_compression();
  const worker::compress::CompressionConfig& n = f.numeric;
  c.set_method(f.method);
  c.set_budget_tokens(n.budget_tokens);
  c.set_budget_ratio(n.budget_ratio);
  if (n.window >= 0) c.set_window(n.window);
  if (n.sinks >= 0) c.set_sinks(n.sinks);
  if (n.pool_kernel >= 0) c.set_pool_kernel(n.pool_kernel);
  if (n.query_window >= 0) c.set_query_window(n.query_window);
  c.set_content(f.content);
  c.set_positions(f.positions);
  c.set_pool(f.pool);
  c.set_allocator(f.allocator);
  c.set_storage(f.storage);
  c.set_mode(f.mode);
  c.set_seed(n.seed);
  c.set_streaming_chunk(n.streaming_chunk);
  c.set_every_turn(n.every_turn);
  return r;
}

absl::Status RunRemoteGenerate(const std::string& coordinator, const GenerateCommandOptions& o,
                               const CompressionFlags& f) {
  absl::StatusOr<dapq::v1::GenerateRequest> request = ToGenerateRequest(o, f);
  if (!request.ok()) return request.status();
  // The coordinator's rules, checked before the request leaves (the same verdict either way).
  if (absl::Status s = api::ValidateGenerateRequest(*request); !s.ok()) return s;
  auto stub = dapq::v1::Inference::NewStub(ClientChannel(coordinator));
  grpc::ClientContext context;
  AttachClientToken(&context);
  if (o.timeout_s > 0) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.timeout_s));
  }
  const auto start = std::chrono::steady_clock::now();
  double first_token_s = -1;
  auto reader = stub->Generate(&context, *request);
  dapq::v1::GenerateResponse response;
  dapq::v1::GenerationSummary summary;
  if (request->has_text()) std::printf("%s", request->text().c_str());
  while (reader->Read(&response)) {
    if (response.token_ids_size() > 0 && first_token_s < 0) {
      first_token_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    if (o.print_ids || response.text().empty()) {
      for (int id : response.token_ids()) std::printf("%d ", id);
    } else {
      std::printf("%s", response.text().c_str());
    }
    std::fflush(stdout);
    if (response.has_summary()) summary = response.summary();
  }
  std::printf("\n");
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  const double kept = summary.kv_full_slots() > 0
                          ? 100.0 * summary.kv_kept_slots() / summary.kv_full_slots()
                          : 100.0;
  std::fprintf(
      stderr,
      "served by group %s: prompt=%d tokens, generated=%d (%s)\n"
      "time to first token: %.1f ms at the client (%.1f ms in the worker, %.1f ms "
      "queued)\n"
      "decode: %.1f ms (%.1f tokens/s)\n"
      "kv cache: kept %ld of %ld prompt KV slots (%.1f%%), %.1f KiB at the end%s%s\n",
      summary.group_id().c_str(), summary.prompt_tokens(), summary.generated_tokens(),
      summary.finish_reason().c_str(), first_token_s * 1e3, summary.ttft_seconds() * 1e3,
      summary.queue_seconds() * 1e3, summary.decode_seconds() * 1e3,
      summary.generated_tokens() > 1
          ? (summary.generated_tokens() - 1) / std::max(summary.decode_seconds(), 1e-9)
          : 0.0,
      static_cast<long>(summary.kv_kept_slots()), static_cast<long>(summary.kv_full_slots()), kept,
      summary.kv_bytes() / 1024.0,
      summary.compression().empty() ? "" : "\ncompression: ", summary.compression().c_str());
  return absl::OkStatus();
}

}  // namespace dapq::cli
