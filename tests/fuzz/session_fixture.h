// File: tests/fuzz/session_fixture.h
// What session_manifest_fuzzer and make_seeds share: the stories260K engine (TP=1, fp32 KV, one
// kernel thread), a memory-only KV store, and a real session "fz" saved in it (blocks and
// manifest), so that a fuzzed manifest put over "fz.m" is read against blocks that exist.
// Session "fy" has no blocks. Built once per process.
#ifndef DAPQ_TESTS_FUZZ_SESSION_FIXTURE_H_
#define DAPQ_TESTS_FUZZ_SESSION_FIXTURE_H_

#include <memory>
#include <string>
#include <vector>

#include "kvstore/block_codec.h"
#include "kvstore/kv_store.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/engine.h"
#include "worker/llama2c_loader.h"
#include "worker/session_store.h"

namespace dapq::fuzz {

struct SessionFixture {
  std::unique_ptr<worker::Engine> engine;
  std::unique_ptr<kvstore::KvStore> store;
  uint64_t model_fingerprint = 0;  // session_store.cc's: Fingerprint of the config's DebugString
  std::vector<int32_t> manifest_words;  // the real manifest header of "fz" (its positions)
  std::string record_block;             // the real first turn record of "fz" ("fz.t0")
  std::vector<int32_t> record_words;    // ... and its positions

  static SessionFixture& Get() {
    static SessionFixture* fixture = [] {
      auto* f = new SessionFixture;
      absl::StatusOr<worker::ModelWeights> weights =
          worker::LoadLlama2cModel(SharedModelPath("stories260K.bin"));
      FUZZ_CHECK(weights.ok());
      worker::EngineOptions options;
      options.tp = 1;
      options.cpu_threads = 1;
      absl::StatusOr<std::unique_ptr<worker::Engine>> engine = worker::Engine::Create(
          std::make_shared<const worker::ModelWeights>(*std::move(weights)), options);
      FUZZ_CHECK(engine.ok());
      f->engine = *std::move(engine);
      f->model_fingerprint = kvstore::Fingerprint(f->engine->config().DebugString());
      kvstore::KvStoreOptions store_options;
      store_options.background = false;
      absl::StatusOr<std::unique_ptr<kvstore::KvStore>> store =
          kvstore::KvStore::Open(store_options);
      FUZZ_CHECK(store.ok());
      f->store = *std::move(store);
      std::unique_ptr<worker::Sequence> seq = f->engine->NewSequence();
      const std::vector<int> prompt = {1,   403, 407, 261, 378, 426, 267, 280, 293, 300,
                                       311, 325, 330, 345, 350, 362, 371, 380, 399, 410};
      worker::GenerateOptions generate;
      generate.max_new_tokens = 5;
      FUZZ_CHECK(f->engine->Continue(*seq, prompt, generate).ok());
      FUZZ_CHECK(worker::SaveSession(*f->engine, *seq, "fz", *f->store).ok());
      absl::StatusOr<std::string> manifest = f->store->Get("fz.m");
      FUZZ_CHECK(manifest.ok());
      absl::StatusOr<kvstore::DecodedBlock> block = kvstore::DecodeBlock(*manifest);
      FUZZ_CHECK(block.ok());
      f->manifest_words = block->positions;
      absl::StatusOr<std::string> record = f->store->Get("fz.t0");
      FUZZ_CHECK(record.ok());
      f->record_block = *record;
      absl::StatusOr<kvstore::DecodedBlock> record_block = kvstore::DecodeBlock(*record);
      FUZZ_CHECK(record_block.ok());
      f->record_words = record_block->positions;
      return f;
    }();
    return *fixture;
  }
};

}  // namespace dapq::fuzz

#endif  // DAPQ_TESTS_FUZZ_SESSION_FIXTURE_H_
