// File: worker/engine.cc
// Engine: rank threads, chunked prefill, decode loop, sampling and timing.
#include "worker/engine.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/comm/in_process_communicator.h"

namespace dapq::worker {
namespace {
double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

absl::Status EngineOptions::Validate(const ModelConfig& config) const {
  if (prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk=", prefill_chunk, " must be >= 1"));
  }
  return MakeRankShard(config, 0, tp).status();
}

absl::Status GenerateOptions::Validate() const {
  if (max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens=", max_new_tokens, " must be >= 0"));
  }
  return sampling.Validate();
}

size_t Sequence::kv_bytes() const {
  size_t total = 0;
  for (const KvCache& c : caches_) total += c.bytes();
  return total;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::shared_ptr<const ModelWeights> model,
                                                       const EngineOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("engine: no model");
  DAPQ_RETURN_IF_ERROR(model->config.Validate());
  DAPQ_RETURN_IF_ERROR(options.Validate(model->config));
  std::unique_ptr<Engine> engine(new Engine(model, options));
  DAPQ_ASSIGN_OR_RETURN(engine->comms_, CreateInProcessGroup(options.tp));
  for (int r = 0; r < options.tp; ++r) {
    DAPQ_ASSIGN_OR_RETURN(RankShard shard, MakeRankShard(model->config, r, options.tp));
    engine->ranks_.push_back(std::make_unique<RankModel>(*model, shard, engine->comms_[r].get()));
  }
  return engine;
}

Engine::Engine(std::shared_ptr<const ModelWeights> model, const EngineOptions& options)
    : model_(std::move(model)), options_(options) {}

Engine::~Engine() = default;

std::unique_ptr<Sequence> Engine::NewSequence() const {
  auto seq = std::make_unique<Sequence>();
  for (const auto& r : ranks_) seq->caches_.push_back(r->NewCache());
  return seq;
}

absl::Status Engine::RunOnRanks(const std::function<absl::Status(int)>& fn) {
  if (ranks_.size() == 1) return fn(0);
  std::vector<absl::Status> results(ranks_.size());
  std::vector<std::thread> threads;
  auto run = [&](int r) {
    results[r] = fn(r);
    if (!results[r].ok()) comms_[r]->Abort();
  };
  for (int r = 1; r < static_cast<int>(ranks_.size()); ++r) threads.emplace_back(run, r);
  run(0);
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) {
    if (!s.ok() && !absl::IsAborted(s)) return s;
  }
  for (const absl::Status& s : results) DAPQ_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

absl::Status Engine::ForwardChunk(Sequence& seq, std::span<const int> tokens,
                                  std::span<const int32_t> positions, std::span<float> logits,
                                  bool all_logits) {
  return RunOnRanks([&](int r) {
    return ranks_[r]->Forward(tokens, positions, seq.caches_[r],
                              r == 0 ? logits : std::span<float>(), all_logits);
  });
}

absl::Status Engine::Forward(Sequence& seq, std::span<const int> tokens,
                             std::span<const int32_t> positions, std::vector<float>* logits) {
  if (logits != nullptr) logits->assign(config().vocab_size, 0.0f);
  DAPQ_RETURN_IF_ERROR(ForwardChunk(
      seq, tokens, positions, logits ? std::span<float>(*logits) : std::span<float>(), false));
  for (int32_t p : positions) seq.next_position_ = std::max(seq.next_position_, p + 1);
  return absl::OkStatus();
}

absl::Status Engine::Prefill(Sequence& seq, std::span<const int> tokens,
                             std::vector<float>* logits) {
  if (tokens.empty()) return absl::InvalidArgumentError("prefill: no tokens");
  const long end = static_cast<long>(seq.next_position_) + static_cast<long>(tokens.size());
  if (end > config().max_seq_len) {
    return absl::OutOfRangeError(absl::StrCat("prefill: ", tokens.size(), " tokens from position ",
                                              seq.next_position_, " exceed the context limit ",
                                              config().max_seq_len));
  }
  std::vector<int32_t> positions;
  for (size_t begin = 0; begin < tokens.size(); begin += options_.prefill_chunk) {
    const size_t n = std::min(tokens.size() - begin, static_cast<size_t>(options_.prefill_chunk));
    positions.resize(n);
    for (size_t i = 0; i < n; ++i) positions[i] = seq.next_position_ + static_cast<int32_t>(i);
    const bool last = begin + n == tokens.size();
    DAPQ_RETURN_IF_ERROR(
        Forward(seq, tokens.subspan(begin, n), positions, last ? logits : nullptr));
  }
  return absl::OkStatus();
}

absl::Status Engine::PrefillAllLogits(Sequence& seq, std::span<const int> tokens,
                                      std::vector<float>* logits) {
  if (tokens.empty()) return absl::InvalidArgumentError("prefill: no tokens");
  const long end = static_cast<long>(seq.next_position_) + static_cast<long>(tokens.size());
  if (end > config().max_seq_len) {
    return absl::OutOfRangeError(absl::StrCat("prefill: ", tokens.size(), " tokens from position ",
                                              seq.next_position_, " exceed the context limit ",
                                              config().max_seq_len));
  }
  std::vector<int32_t> positions(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    positions[i] = seq.next_position_ + static_cast<int32_t>(i);
  logits->assign(tokens.size() * config().vocab_size, 0.0f);
  DAPQ_RETURN_IF_ERROR(ForwardChunk(seq, tokens, positions, *logits, true));
  seq.next_position_ = positions.back() + 1;
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> Engine::Generate(std::span<const int> prompt,
                                                const GenerateOptions& options,
                                                const std::function<bool(int)>& on_token) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  if (prompt.empty()) return absl::InvalidArgumentError("generate: empty prompt");
  const long total = static_cast<long>(prompt.size()) + options.max_new_tokens;
  if (total > config().max_seq_len) {
    return absl::OutOfRangeError(absl::StrCat("generate: prompt of ", prompt.size(),
                                              " tokens + max_new_tokens=", options.max_new_tokens,
                                              " exceeds the context limit ", config().max_seq_len));
  }
  GenerateResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  if (options.max_new_tokens == 0) return result;
  auto seq = NewSequence();
  Sampler sampler(options.sampling);
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  DAPQ_RETURN_IF_ERROR(Prefill(*seq, prompt, &logits));
  int token = sampler.Sample(logits);
  result.prefill_seconds = SecondsSince(t0);
  const auto t1 = std::chrono::steady_clock::now();
  const auto& stops = config().stop_token_ids;
  while (true) {
    result.tokens.push_back(token);
    const bool keep_going = on_token ? on_token(token) : true;
    if (options.stop_at_stop_tokens &&
        std::find(stops.begin(), stops.end(), token) != stops.end()) {
      result.stopped_at_stop_token = true;
      break;
    }
    if (!keep_going || static_cast<int>(result.tokens.size()) >= options.max_new_tokens) break;
    const int32_t pos = seq->next_position();
    DAPQ_RETURN_IF_ERROR(
        Forward(*seq, std::span<const int>(&token, 1), std::span<const int32_t>(&pos, 1), &logits));
    token = sampler.Sample(logits);
  }
  result.decode_seconds = SecondsSince(t1);
  result.cached_tokens = seq->cached_tokens();
  result.kv_bytes = seq->kv_bytes();
  return result;
}

}  // namespace dapq::worker
