// File: cli/generate_command.cc
// Implementation of `dapq generate`.
#include "cli/generate_command.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "api/request_rules.h"
#include "cli/command.h"
#include "cli/compression_flags.h"
#include "cli/remote_generate.h"
#include "common/status_macros.h"
#include "kernels/cpu_threads.h"
#include "kvstore/kv_store.h"
#include "worker/engine.h"
#include "worker/model_loader.h"
#include "worker/prompt_codec.h"
#include "worker/session_store.h"

namespace dapq::cli {

absl::Status GenerateCommandOptions::Validate() const {
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  if (prompt_tokens < 0) return absl::InvalidArgumentError("--prompt_tokens must be >= 0");
  if (steps < 0)
    return absl::InvalidArgumentError(absl::StrCat("--steps=", steps, " must be >= 0"));
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("--tp=", tp, " must be >= 1"));
  return absl::OkStatus();
}

absl::Status RunGenerate(const GenerateCommandOptions& o) {
  DAPQ_RETURN_IF_ERROR(o.Validate());
  const auto load_start = std::chrono::steady_clock::now();
  DAPQ_ASSIGN_OR_RETURN(worker::ModelWeights weights,
                        worker::LoadModelAs(o.model, o.weights_dtype));
  auto model = std::make_shared<const worker::ModelWeights>(std::move(weights));
  const worker::ModelConfig& config = model->config;
  std::fprintf(
      stderr, "model: %s (loaded in %.2f s)\n", config.DebugString().c_str(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());

  // --tokenizer, or the HF model directory's own tokenizer.json.
  DAPQ_ASSIGN_OR_RETURN(worker::LoadedPromptCodec codec,
                        worker::LoadPromptCodec(o.model, o.tokenizer, "", config.vocab_size));
  const tokenizer::TextTokenizer* tokenizer = codec.tokenizer.get();
  if (tokenizer == nullptr && o.prompt_tokens <= 0) {
    return absl::InvalidArgumentError(
        "--tokenizer is required unless --prompt_tokens is set (or --model is a Hugging Face "
        "directory holding tokenizer.json)");
  }
  worker::EngineOptions engine_options;
  engine_options.tp = o.tp;
  engine_options.prefill_chunk = o.prefill_chunk;
  DAPQ_ASSIGN_OR_RETURN(engine_options.kv_dtype, worker::ParseKvDtype(o.kv_dtype));
  engine_options.cpu_threads = o.threads;
  DAPQ_ASSIGN_OR_RETURN(auto engine, worker::Engine::Create(model, engine_options));
  std::fprintf(stderr, "kernels: %s; weights %s, KV cache %s\n",
               kernels::CpuKernelsSummary().c_str(), kernels::DTypeName(model->weights_dtype),
               kernels::DTypeName(engine_options.kv_dtype));

  // A session's earlier turns, from the KV store.
  std::unique_ptr<kvstore::KvStore> store;
  std::unique_ptr<worker::Sequence> seq;
  if (!o.session.empty()) {
    DAPQ_RETURN_IF_ERROR(api::ValidateSessionId(o.session));
    kvstore::KvStoreOptions so;
    so.disk_dir = o.store_dir;
    so.background = false;
    DAPQ_ASSIGN_OR_RETURN(store, kvstore::KvStore::Open(so));
    if (store->HasSession(o.session)) {
      DAPQ_ASSIGN_OR_RETURN(
          worker::LoadResult loaded,
          worker::LoadSession(*engine, o.session, *store,
                              o.fail_on_bad_block ? worker::FailedLoadPolicy::kFail
                                                  : worker::FailedLoadPolicy::kRecompute,
                              o.compression));
      seq = std::move(loaded.sequence);
      std::fprintf(stderr, "session %s: resumed at position %d (%d KV slots per head)%s\n",
                   o.session.c_str(), seq->next_position(), seq->cached_tokens(),
                   loaded.recomputed ? absl::StrCat(", recomputed: ", loaded.failure).c_str() : "");
    }
  }
  const bool resumed = seq != nullptr;
  if (!resumed) seq = engine->NewSequence();

  std::vector<int> prompt;
  if (resumed) {
    if (o.prompt.empty() || !tokenizer) {
      return absl::InvalidArgumentError(
          "--prompt (with --tokenizer) is required to continue a session");
    }
    prompt = tokenizer->Encode(o.prompt, /*add_special_tokens=*/false);
  } else if (o.prompt_tokens > 0) {
    std::mt19937_64 rng(o.seed);
    prompt.push_back(config.bos_token_id);
    while (static_cast<int>(prompt.size()) < o.prompt_tokens) {
      prompt.push_back(static_cast<int>(rng() % static_cast<uint64_t>(config.vocab_size)));
    }
  } else {
    prompt = tokenizer->Encode(o.prompt, /*add_special_tokens=*/true);
  }

  worker::GenerateOptions gen;
  gen.max_new_tokens = o.steps;
  gen.sampling.temperature = o.temperature;
  gen.sampling.top_p = o.top_p;
  gen.sampling.seed = o.seed;
  gen.compression = o.compression;

  // Echo the prompt, then stream generated text.
  if (tokenizer && !o.print_ids) {
    const int before = resumed ? seq->tokens().back() : prompt[0];
    const std::vector<int> shown(prompt.begin() + (resumed ? 0 : 1), prompt.end());
    std::printf("%s", tokenizer->DecodeAll(shown, before).c_str());
  }
  int prev = prompt.back();
  auto on_token = [&](int token) {
    if (tokenizer && !o.print_ids) {
      std::printf("%s", tokenizer->Decode(prev, token).c_str());
    } else {
      std::printf("%d ", token);
    }
    std::fflush(stdout);
    prev = token;
    return true;
  };
  DAPQ_ASSIGN_OR_RETURN(worker::GenerateResult r, engine->Continue(*seq, prompt, gen, on_token));
  std::printf("\n");
  std::fflush(stdout);
  if (store != nullptr && !r.tokens.empty()) {
    DAPQ_RETURN_IF_ERROR(worker::EndSessionTurn(*engine, *seq, r, o.session, store.get()).status());
    DAPQ_RETURN_IF_ERROR(store->PersistAll());
    std::fprintf(stderr, "session %s: saved at position %d under %s\n", o.session.c_str(),
                 seq->next_position(), o.store_dir.c_str());
  }
  const int decoded = static_cast<int>(r.tokens.size()) - 1;
  // Every position consumed so far (earlier turns of a session included) at full size, in the
  // cache's element type.
  const double full_kib = static_cast<double>(seq->next_position()) * config.kv_bytes_per_token() *
                          kernels::DTypeSize(engine_options.kv_dtype) / sizeof(float) / 1024.0;
  std::fprintf(stderr,
               "tp=%d prompt=%d tokens, generated=%zu tokens%s\n"
               "prefill: %.1f ms (%.1f tokens/s), time to first token %.1f ms\n"
               "decode:  %d tokens in %.1f ms (%.1f tokens/s)\n",
               o.tp, r.prompt_tokens, r.tokens.size(),
               r.stopped_at_stop_token ? " (stopped at a stop token)" : "", r.prefill_seconds * 1e3,
               r.prompt_tokens / std::max(r.prefill_seconds, 1e-9), r.prefill_seconds * 1e3,
               decoded, r.decode_seconds * 1e3,
               decoded > 0 ? decoded / std::max(r.decode_seconds, 1e-9) : 0.0);
  if (r.compression.compressed) {
    std::fprintf(stderr, "compression: %s\n  kept %ld of %ld prompt KV slots (%.1f%%) in %.1f ms\n",
                 r.compression.config.c_str(), r.compression.slots_after,
                 r.compression.slots_before, 100.0 * r.compression.kept_fraction(),
                 r.compression.seconds * 1e3);
  } else if (gen.compression.method != worker::compress::Method::kFull) {
    std::fprintf(stderr, "compression: prompt within the budget, nothing evicted\n");
  }
  std::fprintf(stderr,
               "kv cache (%s): %.1f KiB used vs %.1f KiB for the full cache (%.1f KiB reserved)\n",
               kernels::DTypeName(engine_options.kv_dtype), seq->kv_used_bytes() / 1024.0, full_kib,
               r.kv_allocated_bytes / 1024.0);
  return absl::OkStatus();
}

void AddGenerateCommand(CLI::App& app, CommandRunner& runner) {
  auto opts = std::make_shared<GenerateCommandOptions>();
  auto compression = std::make_shared<CompressionFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text with the in-process engine");
  cmd->add_option("--model", opts->model,
                  "llama2.c .bin, Hugging Face directory, or synthetic:<shape>[-<N>l][@seed] "
                  "(required unless --coordinator)");
  cmd->add_option("--coordinator", opts->coordinator,
                  "host:port of a cluster (dapq serve): generate there instead of in-process");
  cmd->add_option("--timeout_s", opts->timeout_s,
                  "with --coordinator: request deadline (0 = none)");
  cmd->add_option("--tokenizer", opts->tokenizer,
                  "llama2.c tokenizer.bin or a Hugging Face tokenizer.json (default: the HF "
                  "model directory's own)");
  cmd->add_option("--prompt", opts->prompt, "prompt text (default: BOS only)");
  cmd->add_option("--prompt_tokens", opts->prompt_tokens,
                  "use N seeded random token ids as the prompt (synthetic models)");
  cmd->add_option("--steps", opts->steps, "new tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", opts->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top_p", opts->top_p, "nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", opts->seed, "sampling and random-prompt seed")->capture_default_str();
  cmd->add_option("--tp", opts->tp, "tensor-parallel ranks (threads)")->capture_default_str();
  cmd->add_option("--threads", opts->threads,
                  "CPU threads for the kernels, shared by the tp ranks (0 = every core)")
      ->capture_default_str();
  cmd->add_option("--weights_dtype", opts->weights_dtype,
                  "fp32 | bf16: what the linear layers multiply with (bf16 reads half the bytes)")
      ->capture_default_str();
  cmd->add_option("--kv_dtype", opts->kv_dtype,
                  "fp32 | bf16 | fp16: element type of the KV cache (2-byte types halve it)")
      ->capture_default_str();
  cmd->add_option("--prefill_chunk", opts->prefill_chunk, "prompt tokens per forward pass")
      ->capture_default_str();
  cmd->add_flag("--print_ids", opts->print_ids, "print token ids instead of text");
  cmd->add_option("--session", opts->session,
                  "session id: continue this session's KV from the store and save it back");
  cmd->add_option("--store_dir", opts->store_dir, "directory of the KV store's disk tier")
      ->capture_default_str();
  cmd->add_flag("--fail_on_bad_block", opts->fail_on_bad_block,
                "a stored block that fails verification is an error (default: recompute)");
  compression->Register(cmd);
  runner.Add(cmd, WithAuthToken(cmd, [opts, compression]() -> absl::Status {
               DAPQ_ASSIGN_OR_RETURN(opts->compression, compression->ToConfig());
               if (!opts->coordinator.empty()) {
                 opts->session_remote = opts->session;
                 return RunRemoteGenerate(opts->coordinator, *opts, *compression);
               }
               return RunGenerate(*opts);
             }));
}

}  // namespace dapq::cli
