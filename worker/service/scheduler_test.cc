// File: worker/service/scheduler_test.cc
// The continuous-batching scheduler over an in-process stories260K engine (TP 1 and 2): requests
// with mixed prompt lengths, mixed compression methods and budgets, arriving at seeded random
// steps, give exactly the tokens each gives alone (Engine::Generate, greedy); a capped pool
// preempts by recompute or by swap to the KV store and still gives the same tokens; cancel and
// deadline of one request leave the others' tokens unchanged; a request that can never fit is
// ResourceExhausted naming the limit; questions over one shared document prefill it once
// (prefix reuse), and sequences swapped out over it store it once; the pool (and the store) are
// empty after every run.
#include "worker/service/scheduler.h"

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/kv_store.h"
#include "tests/util/status_matchers.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/tokenizer.h"

namespace dapq::worker::service {
namespace {

using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::shared_ptr<const ModelWeights> Stories() { return dapq::testing::SharedStories260K(); }

struct Case {
  std::vector<int> prompt;
  GenerateOptions options;
};

// Twelve requests: six prompts, each plain and with one of the compression methods.
std::vector<Case> Cases(const ModelConfig& config) {
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), config.vocab_size);
  EXPECT_TRUE(tok.ok()) << tok.status();
  const char* texts[] = {
      "Once upon a time",
      "Lily saw a big red ball in the park and she wanted to play with it very much",
      "The dog",
      "One day, a little boy named Tom went to the zoo with his mom. He saw a lion and a bear",
      "She was happy",
      "The sun was hot and the children went to the lake to swim and play in the water"};
  const compress::Method methods[] = {compress::Method::kDapq, compress::Method::kSnapKv,
                                      compress::Method::kStreamingLlm, compress::Method::kH2o};
  std::vector<Case> cases;
  int i = 0;
  for (const char* text : texts) {
    for (bool compressed : {false, true}) {
      Case c;
      c.prompt = tok->Encode(text, /*add_bos=*/true, /*add_eos=*/false);
      c.options.max_new_tokens = 12 + 5 * (i % 4);
      c.options.stop_at_stop_tokens = false;
      if (compressed) {
        c.options.compression.method = methods[i % 4];
        c.options.compression.budget_tokens = 6 + 2 * (i % 3);
      }
      cases.push_back(c);
      ++i;
    }
  }
  return cases;
}

std::vector<std::vector<int>> Alone(Engine& engine, const std::vector<Case>& cases) {
  std::vector<std::vector<int>> out;
  for (const Case& c : cases) {
    auto r = engine.Generate(c.prompt, c.options);
    EXPECT_TRUE(r.ok()) << r.status();
    out.push_back(r->tokens);
  }
  return out;
}

// Queues case i under id i.
void AddCase(Scheduler& scheduler, const std::vector<Case>& cases, size_t i) {
  ScheduledRequest r;
  r.id = i;
  r.prompt = cases[i].prompt;
  r.options = cases[i].options;
  EXPECT_THAT(scheduler.Add(std::move(r)), IsOk());
}

// Every case finished, well, with the tokens it gives alone.
void ExpectAlone(const std::map<uint64_t, FinishedRequest>& results,
                 const std::vector<std::vector<int>>& alone) {
  EXPECT_EQ(results.size(), alone.size());
  for (const auto& [i, f] : results) {
    EXPECT_TRUE(f.result.ok()) << f.result.status();
    if (f.result.ok()) {
      EXPECT_EQ(f.result->tokens, alone[i]) << "request " << i;
    }
  }
}

// Runs every case through a scheduler, adding case i at step arrival[i]; returns the results by
// id (= case index).
std::map<uint64_t, FinishedRequest> RunArrivals(Engine& engine, const std::vector<Case>& cases,
                                                const SchedulerOptions& options,
                                                const std::vector<int>& arrival) {
  Scheduler scheduler(&engine, options);
  std::map<uint64_t, FinishedRequest> results;
  for (int step = 0; step < 5000 && results.size() < cases.size(); ++step) {
    for (size_t i = 0; i < cases.size(); ++i) {
      if (arrival[i] == step) AddCase(scheduler, cases, i);
    }
    for (FinishedRequest& f : scheduler.RunStep()) results[f.id] = std::move(f);
  }
  EXPECT_TRUE(scheduler.idle());
  return results;
}

// RunArrivals with arrival steps drawn from `seed`.
std::map<uint64_t, FinishedRequest> RunScheduled(Engine& engine, const std::vector<Case>& cases,
                                                 const SchedulerOptions& options, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> arrival(cases.size());
  for (int& a : arrival) a = static_cast<int>(rng() % 8);
  return RunArrivals(engine, cases, options, arrival);
}

class SchedulerTest : public ::testing::TestWithParam<int> {};

TEST_P(SchedulerTest, MixedRequestsGiveTheTokensTheyGiveAlone) {
  EngineOptions eo;
  eo.tp = GetParam();
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), eo));
  const std::vector<Case> cases = Cases(engine->config());
  const std::vector<std::vector<int>> alone = Alone(*engine, cases);
  for (uint64_t seed : {11u, 12u}) {
    for (int step_tokens : {5, 64}) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " step tokens " << step_tokens);
      SchedulerOptions so;
      so.max_step_tokens = step_tokens;
      const auto results = RunScheduled(*engine, cases, so, seed);
      ASSERT_EQ(results.size(), cases.size());
      for (size_t i = 0; i < cases.size(); ++i) {
        const FinishedRequest& f = results.at(i);
        ASSERT_TRUE(f.result.ok()) << "request " << i << ": " << f.result.status();
        EXPECT_EQ(f.result->tokens, alone[i]) << "request " << i;
      }
      EXPECT_EQ(engine->kv_pool(0).blocks_in_use(), 0);
    }
  }
}

// Questions over one document (a ~90% common prefix): the later ones take the document's blocks
// from the prefix cache and prefill only their question, full-cache and DapQ-compressed side by
// side, with the tokens each gives alone on an engine without reuse. They arrive after the first
// has prefilled the document, or all at once (then they wait one step for its blocks).
void RunSharedDocument(int tp, bool together) {
  EngineOptions plain;
  plain.tp = tp;
  plain.prefix_cache = false;
  ASSERT_OK_AND_ASSIGN(auto reference, Engine::Create(Stories(), plain));
  EngineOptions eo = plain;
  eo.prefix_cache = true;
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), eo));
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), engine->config().vocab_size);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string document = dapq::testing::kStoryDocument;
  std::vector<Case> cases;
  for (const char* question : {" What did Lily find?", " Who is Max?", " Where did they walk?",
                               " Was the stone red?", " Who smiled?", " Where was the house?"}) {
    Case c;
    c.prompt = tok->Encode(document + question, /*add_bos=*/true, /*add_eos=*/false);
    c.options.max_new_tokens = 10;
    c.options.stop_at_stop_tokens = false;
    if (cases.size() % 2 == 1) {
      c.options.compression.method = compress::Method::kDapq;
      c.options.compression.budget_tokens = 40;
    }
    cases.push_back(c);
  }
  const std::vector<std::vector<int>> alone = Alone(*reference, cases);
  size_t shared = cases[0].prompt.size();  // tokens every prompt starts with
  for (const Case& c : cases) {
    size_t n = 0;
    while (n < shared && n < c.prompt.size() && c.prompt[n] == cases[0].prompt[n]) ++n;
    shared = n;
  }
  ASSERT_GE(shared * 10, cases[0].prompt.size() * 8);

  // The first request at step 0, the others once its prompt is in (one 256-token step), or with
  // it.
  std::vector<int> arrival(cases.size(), together ? 0 : 2);
  arrival[0] = 0;
  const auto results = RunArrivals(*engine, cases, SchedulerOptions{}, arrival);
  ASSERT_EQ(results.size(), cases.size());
  int64_t prompt_tokens = 0, reused = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const FinishedRequest& f = results.at(i);
    ASSERT_TRUE(f.result.ok()) << "request " << i << ": " << f.result.status();
    EXPECT_EQ(f.result->tokens, alone[i]) << "request " << i;
    if (i == 0) {
      EXPECT_EQ(f.result->reused_prompt_tokens, 0);
    } else {
      // The document's whole blocks, less the scorer's query window (prefilled) for DapQ.
      EXPECT_GE(f.result->reused_prompt_tokens, static_cast<int>(shared) - 48) << "request " << i;
      EXPECT_LE(f.result->reused_prompt_tokens, static_cast<int>(shared)) << "request " << i;
    }
    prompt_tokens += static_cast<int64_t>(cases[i].prompt.size());
    reused += f.result->reused_prompt_tokens;
  }
  EXPECT_EQ(engine->prefix_reused_tokens(), reused);
  // What ran: the prompts less what was reused, and every generated token but the last.
  EXPECT_EQ(engine->forwarded_tokens(), prompt_tokens - reused + 6 * (10 - 1));
  EXPECT_EQ(engine->kv_pool(0).blocks_in_use(), 0);
}

TEST_P(SchedulerTest, SharedDocumentIsPrefilledOnceInTheBatch) {
  RunSharedDocument(GetParam(), /*together=*/false);
}

TEST_P(SchedulerTest, SharedDocumentArrivingTogetherIsPrefilledOnce) {
  RunSharedDocument(GetParam(), /*together=*/true);
}

INSTANTIATE_TEST_SUITE_P(Tp, SchedulerTest, ::testing::Values(1, 2));

TEST(SchedulerPoolTest, ACappedPoolAdmitsWhatFitsAndGivesTheSameTokens) {
  EngineOptions eo;
  eo.kv_tokens_per_block = 16;
  // 5 layers x 4 KV heads x 6 blocks: two or three requests' whole lengths at a time.
  eo.kv_max_blocks = 5 * 4 * 6;
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), eo));
  const std::vector<Case> cases = Cases(engine->config());
  const std::vector<std::vector<int>> alone = Alone(*engine, cases);
  SchedulerOptions so;
  so.max_step_tokens = 16;
  const auto results = RunScheduled(*engine, cases, so, 5);
  ASSERT_EQ(results.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(results.at(i).result.ok()) << results.at(i).result.status();
    EXPECT_EQ(results.at(i).result->tokens, alone[i]) << "request " << i;
  }
  EXPECT_EQ(engine->kv_pool(0).blocks_in_use(), 0);
}

TEST(SchedulerPoolTest, AStreamedPromptReservesItsBudgetPlusAChunkNotItsLength) {
  EngineOptions eo;
  eo.kv_tokens_per_block = 16;
  eo.kv_max_blocks = 5 * 4 * 6;  // 96 slots per (layer, KV head): a fifth of the prompt
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), eo));
  std::vector<int> prompt = {1};
  for (int i = 1; i < 480; ++i) prompt.push_back(260 + (i * 37) % 200);
  GenerateOptions options;
  options.max_new_tokens = 8;
  options.stop_at_stop_tokens = false;
  options.compression.method = compress::Method::kDapq;
  options.compression.budget_tokens = 32;
  options.compression.streaming_chunk = 32;
  ASSERT_OK_AND_ASSIGN(GenerateResult alone, engine->Generate(prompt, options));
  SchedulerOptions so;
  so.free_block_watermark = 0;
  {
    Scheduler scheduler(engine.get(), so);
    ScheduledRequest r;
    r.prompt = prompt;
    r.options = options;
    ASSERT_THAT(scheduler.Add(std::move(r)), IsOk());
    std::vector<FinishedRequest> finished;
    for (int step = 0; step < 100 && finished.empty(); ++step) finished = scheduler.RunStep();
    ASSERT_EQ(finished.size(), 1u);
    ASSERT_TRUE(finished[0].result.ok()) << finished[0].result.status();
    EXPECT_EQ(finished[0].result->tokens, alone.tokens);
    EXPECT_LE(engine->kv_pool(0).peak_blocks_referenced(), 5 * 4 * 6);
  }
  // Compressed once at the end, the whole prompt must fit first: refused up front.
  Scheduler scheduler(engine.get(), so);
  ScheduledRequest whole;
  whole.prompt = prompt;
  whole.options = options;
  whole.options.compression.streaming_chunk = 0;
  EXPECT_THAT(scheduler.Add(std::move(whole)),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("kv_pool")));
  // A streamed request whose budget alone exceeds the pool names its streamed figure.
  ScheduledRequest big;
  big.prompt = prompt;
  big.options = options;
  big.options.compression.budget_tokens = 200;
  EXPECT_THAT(scheduler.Add(std::move(big)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::HasSubstr("streamed: 232 slots per KV head")));
}

TEST(SchedulerPoolTest, ARequestThatCanNeverFitIsResourceExhaustedNamingTheLimit) {
  EngineOptions eo;
  eo.kv_max_blocks = 5 * 4 * 2;
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), eo));
  Scheduler scheduler(engine.get(), SchedulerOptions());
  ScheduledRequest r;
  r.prompt = std::vector<int>(40, 403);
  r.options.max_new_tokens = 8;
  EXPECT_THAT(scheduler.Add(std::move(r)),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("kv_pool")));
  ScheduledRequest past;
  past.prompt = std::vector<int>(engine->config().max_seq_len, 403);
  EXPECT_THAT(scheduler.Add(std::move(past)), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(scheduler.Add(ScheduledRequest()), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Preemption by recompute: admission reserves every request's whole length, so the test takes
// the pool's free blocks behind the scheduler's back (a sequence of its own) for a while; the
// steps that need a new block run out, the newest sequence is preempted, and it is recomputed
// once the blocks come back.
// Runs four requests on a pool that the test fills behind the scheduler's back between steps 3
// and 12; returns the scheduler's preemption counts.
struct PreemptionRun {
  int64_t preemptions = 0, swaps = 0;
};

PreemptionRun RunWithPreemption(Preemption preemption, kvstore::KvStore* store) {
  EngineOptions eo;
  eo.kv_tokens_per_block = 16;
  eo.kv_max_blocks = 5 * 4 * 8;
  auto engine = Engine::Create(Stories(), eo);
  EXPECT_TRUE(engine.ok()) << engine.status();
  const std::vector<Case> all = Cases((*engine)->config());
  const std::vector<Case> cases(all.begin(), all.begin() + 4);  // uncompressed and compressed
  const std::vector<std::vector<int>> alone = Alone(**engine, cases);
  LocalBatchOps ops(engine->get(), store);
  SchedulerOptions so;
  so.preemption = preemption;
  Scheduler scheduler(engine->get(), so, &ops);
  for (size_t i = 0; i < cases.size(); ++i) AddCase(scheduler, cases, i);
  std::map<uint64_t, FinishedRequest> results;
  std::unique_ptr<Sequence> squatter;
  for (int step = 0; step < 1000 && results.size() < cases.size(); ++step) {
    if (step == 3) {
      // Take every free block: the next step that needs a new block runs out.
      squatter = (*engine)->NewSequence();
      const std::vector<int> filler(16, 403);
      while ((*engine)->Prefill(*squatter, filler, nullptr).ok()) {
      }
    }
    if (step == 12) squatter.reset();  // room again: the preempted request comes back
    for (FinishedRequest& f : scheduler.RunStep()) results[f.id] = std::move(f);
  }
  ExpectAlone(results, alone);
  EXPECT_EQ((*engine)->kv_pool(0).blocks_in_use(), 0);
  EXPECT_EQ(ops.size(), 0u);
  return {scheduler.preemptions(), scheduler.swaps()};
}

// Preemption: admission reserves every request's whole length, so the test takes the pool's
// free blocks behind the scheduler's back for a while; the steps that need a new block run out,
// the newest sequence is preempted, and it comes back once the blocks do, with the same tokens.
TEST(SchedulerPoolTest, PreemptionByRecomputeGivesTheSameTokens) {
  const PreemptionRun run = RunWithPreemption(Preemption::kRecompute, nullptr);
  EXPECT_GT(run.preemptions, 0);
  EXPECT_EQ(run.swaps, 0);
}

TEST(SchedulerPoolTest, PreemptionBySwapGivesTheSameTokensAndLeavesNothingInTheStore) {
  kvstore::KvStoreOptions so;
  so.background = false;
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(so));
  const PreemptionRun run = RunWithPreemption(Preemption::kSwap, store.get());
  EXPECT_GT(run.swaps, 0);
  EXPECT_EQ(run.swaps, run.preemptions);
  for (const kvstore::TierStats& t : store->Stats()) EXPECT_EQ(t.blocks, 0) << t.name;
}

TEST(SchedulerPoolTest, SwapWithoutAStoreFallsBackToRecompute) {
  const PreemptionRun run = RunWithPreemption(Preemption::kSwap, nullptr);
  EXPECT_GT(run.preemptions, 0);
  EXPECT_EQ(run.swaps, 0);
}

// Optimistic admission (Admission::kOptimistic): every request of a wave is admitted while its
// prompt fits, and the pool fills as they decode, so preemption happens with nothing held behind
// the scheduler's back. Twelve requests (plain and compressed, 12-27 new tokens) on a pool of 4
// blocks per (layer, KV head): each alone fits, about two at a time do.
PreemptionRun RunOptimistic(Preemption preemption, kvstore::KvStore* store, int tp) {
  EngineOptions eo;
  eo.tp = tp;
  eo.kv_tokens_per_block = 16;
  eo.kv_max_blocks = 5 * (4 / tp) * 4;
  auto engine = Engine::Create(Stories(), eo);
  EXPECT_TRUE(engine.ok()) << engine.status();
  const std::vector<Case> cases = Cases((*engine)->config());
  const std::vector<std::vector<int>> alone = Alone(**engine, cases);
  LocalBatchOps ops(engine->get(), store);
  SchedulerOptions so;
  so.preemption = preemption;
  so.admission = Admission::kOptimistic;
  so.max_step_tokens = 32;
  Scheduler scheduler(engine->get(), so, &ops);
  for (size_t i = 0; i < cases.size(); ++i) AddCase(scheduler, cases, i);
  std::map<uint64_t, FinishedRequest> results;
  int most_running = 0;
  for (int step = 0; step < 5000 && results.size() < cases.size(); ++step) {
    for (FinishedRequest& f : scheduler.RunStep()) results[f.id] = std::move(f);
    most_running = std::max(most_running, scheduler.running());
  }
  ExpectAlone(results, alone);
  // More ran at once than whole lengths allow (at most 2 here), and nothing leaked.
  EXPECT_GT(most_running, 2);
  for (int r = 0; r < tp; ++r) EXPECT_EQ((*engine)->kv_pool(r).blocks_in_use(), 0) << "rank " << r;
  EXPECT_EQ(ops.size(), 0u);
  return {scheduler.preemptions(), scheduler.swaps()};
}

class SchedulerOptimisticTest : public ::testing::TestWithParam<int> {};

TEST_P(SchedulerOptimisticTest, PreemptionByRecomputeGivesTheSameTokens) {
  const PreemptionRun run = RunOptimistic(Preemption::kRecompute, nullptr, GetParam());
  EXPECT_GT(run.preemptions, 0);
  EXPECT_EQ(run.swaps, 0);
}

TEST_P(SchedulerOptimisticTest, PreemptionBySwapGivesTheSameTokensAndEmptiesTheStore) {
  kvstore::KvStoreOptions so;
  so.background = false;
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(so));
  const PreemptionRun run = RunOptimistic(Preemption::kSwap, store.get(), GetParam());
  EXPECT_GT(run.swaps, 0);
  EXPECT_EQ(run.swaps, run.preemptions);
  for (const kvstore::TierStats& t : store->Stats()) EXPECT_EQ(t.blocks, 0) << t.name;
}

INSTANTIATE_TEST_SUITE_P(Tp, SchedulerOptimisticTest, ::testing::Values(1, 2));

// Requests that finish on admission (a compressed prompt whose one token comes from its own
// prefill, or max_new_tokens 0) still report their prompt length.
TEST(SchedulerStopTest, RequestsFinishedOnAdmissionReportTheirPrompt) {
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), EngineOptions()));
  const std::vector<Case> cases = Cases(engine->config());
  Scheduler scheduler(engine.get(), SchedulerOptions());
  for (int max_new : {1, 0}) {
    ScheduledRequest r;
    r.id = static_cast<uint64_t>(max_new);
    r.prompt = cases[1].prompt;  // compressed
    r.options = cases[1].options;
    r.options.max_new_tokens = max_new;
    ASSERT_THAT(scheduler.Add(std::move(r)), IsOk());
  }
  const std::vector<FinishedRequest> finished = scheduler.RunStep();
  ASSERT_EQ(finished.size(), 2u);
  for (const FinishedRequest& f : finished) {
    ASSERT_TRUE(f.result.ok()) << f.result.status();
    EXPECT_EQ(f.result->prompt_tokens, static_cast<int>(cases[1].prompt.size()));
    EXPECT_EQ(f.result->tokens.size(), f.id);
  }
  EXPECT_TRUE(scheduler.idle());
  EXPECT_EQ(engine->kv_pool(0).blocks_in_use(), 0);
}

TEST(SchedulerStopTest, CancelAndDeadlineOfOneLeaveTheOthersUnchanged) {
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), EngineOptions()));
  const std::vector<Case> cases = Cases(engine->config());
  const std::vector<std::vector<int>> alone = Alone(*engine, cases);
  Scheduler scheduler(engine.get(), SchedulerOptions());
  for (size_t i = 0; i < cases.size(); ++i) {
    ScheduledRequest r;
    r.id = i;
    r.prompt = cases[i].prompt;
    r.options = cases[i].options;
    if (i == 1) {  // the client goes away after 3 tokens
      auto seen = std::make_shared<int>(0);
      r.on_token = [seen](int) { return ++*seen < 3; };
    }
    if (i == 2) r.deadline = std::chrono::steady_clock::now();  // already passed
    ASSERT_THAT(scheduler.Add(std::move(r)), IsOk());
  }
  std::map<uint64_t, FinishedRequest> results;
  for (int step = 0; step < 1000 && !scheduler.idle(); ++step) {
    for (FinishedRequest& f : scheduler.RunStep()) results[f.id] = std::move(f);
  }
  ASSERT_EQ(results.size(), cases.size());
  ASSERT_TRUE(results.at(1).result.ok());
  EXPECT_EQ(results.at(1).result->tokens, std::vector<int>(alone[1].begin(), alone[1].begin() + 3));
  EXPECT_THAT(results.at(2).result.status(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  for (size_t i = 0; i < cases.size(); ++i) {
    if (i == 1 || i == 2) continue;
    ASSERT_TRUE(results.at(i).result.ok()) << results.at(i).result.status();
    EXPECT_EQ(results.at(i).result->tokens, alone[i]) << "request " << i;
  }
  EXPECT_EQ(engine->kv_pool(0).blocks_in_use(), 0);
}

// Swap by the KV store over a shared document (issue #11): four sequences whose prompts reuse
// one document's blocks from the pool are swapped out; the store holds each document block
// once, held by every swapped-out sequence; each swaps back in with its tokens unchanged (the
// same as an engine without prefix reuse), and the store is empty afterwards.
TEST(SchedulerSwapTest, SwappedOutSequencesStoreTheirSharedPrefixOnce) {
  constexpr int kSequences = 4;
  EngineOptions eo;
  eo.kv_tokens_per_block = 16;
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), eo));
  eo.prefix_cache = false;
  ASSERT_OK_AND_ASSIGN(auto reference, Engine::Create(Stories(), eo));
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), engine->config().vocab_size);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<int> document =
      tok->Encode(dapq::testing::kStoryDocument, /*add_bos=*/true, /*add_eos=*/false);
  const std::vector<std::string> questions = {" What did Lily find?", " Who is Max?",
                                              " Where did they walk?", " Why was Lily happy?"};
  GenerateOptions plain;
  plain.max_new_tokens = 6;
  plain.stop_at_stop_tokens = false;
  const std::vector<int> next = tok->Encode(" Then", false, false);

  kvstore::KvStoreOptions so;
  so.background = false;
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(so));
  LocalBatchOps ops(engine.get(), store.get());
  std::vector<std::vector<int>> expected;  // the second turn's tokens, without reuse or swap
  for (int i = 0; i < kSequences; ++i) {
    std::vector<int> prompt = document;
    const std::vector<int> q = tok->Encode(questions[i], false, false);
    prompt.insert(prompt.end(), q.begin(), q.end());
    auto alone = reference->NewSequence();
    ASSERT_OK_AND_ASSIGN(GenerateResult a1, reference->Continue(*alone, prompt, plain));
    ASSERT_OK_AND_ASSIGN(GenerateResult a2, reference->Continue(*alone, next, plain));
    expected.push_back(a2.tokens);
    auto seq = engine->NewSequence();
    ASSERT_OK_AND_ASSIGN(GenerateResult r1, engine->Continue(*seq, prompt, plain));
    EXPECT_EQ(r1.tokens, a1.tokens);
    if (i > 0) {
      EXPECT_GE(seq->reused_tokens(), static_cast<int>(document.size()) / 16 * 16);
    }
    ops.Adopt(i, std::move(seq));
  }
  for (int i = 0; i < kSequences; ++i) ASSERT_THAT(ops.SwapOut(i), IsOk());
  EXPECT_EQ(ops.size(), 0u);

  // Each full document block of every (layer, KV head) once, held by all four.
  const ModelConfig& c = engine->config();
  const int document_blocks = c.n_layers * c.n_kv_heads * (static_cast<int>(document.size()) / 16);
  int held_by_all = 0;
  for (const std::string& key : store->SharedKeysOf(SwapKey(0))) {
    held_by_all += store->SharedHolders(key) == kSequences;
  }
  EXPECT_EQ(held_by_all, document_blocks);
  int blocks = 0, owned = 0;
  for (const kvstore::TierStats& t : store->Stats()) blocks += t.blocks;
  for (int i = 0; i < kSequences; ++i) owned += static_cast<int>(store->KeysOf(SwapKey(i)).size());
  EXPECT_EQ(blocks, owned + store->shared_blocks());
  EXPECT_LT(store->shared_blocks(), 2 * document_blocks);  // not one copy per sequence

  // Back in (the last one first): the same tokens as never swapped; each swap-in lets go of its
  // holds only.
  for (int i = kSequences - 1; i >= 0; --i) {
    ASSERT_THAT(ops.SwapIn(i, {}), IsOk());
    if (i > 0) {
      ASSERT_FALSE(store->SharedKeysOf(SwapKey(0)).empty());
      for (const std::string& key : store->SharedKeysOf(SwapKey(0))) {
        EXPECT_LE(store->SharedHolders(key), i);
      }
    }
  }
  EXPECT_TRUE(store->Sessions().empty());
  EXPECT_EQ(store->shared_blocks(), 0);
  for (const kvstore::TierStats& t : store->Stats()) {
    EXPECT_EQ(t.blocks, 0) << t.name;
    EXPECT_EQ(t.used_bytes, 0u) << t.name;
  }
  for (int i = 0; i < kSequences; ++i) {
    std::unique_ptr<Sequence> seq = ops.Take(i);
    ASSERT_NE(seq, nullptr);
    ASSERT_OK_AND_ASSIGN(GenerateResult r2, engine->Continue(*seq, next, plain));
    EXPECT_EQ(r2.tokens, expected[i]) << "sequence " << i;
  }
}

}  // namespace
}  // namespace dapq::worker::service
