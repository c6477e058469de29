// File: kvstore/block_manager_test.cc
// BlockManager: bad options, exhaustion without side effects, copy-on-write after Fork, and a
// seeded random sequence of add/append/truncate/fork/free checked against a simple model of
// the store (token counts per table) and the pool's invariants after every step.
#include "kvstore/block_manager.h"

#include <map>
#include <random>
#include <set>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::unique_ptr<BlockManager> Make(int blocks, int tpb) {
  auto m = BlockManager::Create({blocks, tpb});
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

TEST(BlockManagerTest, RejectsBadOptions) {
  EXPECT_THAT(BlockManager::Create({0, 16}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BlockManager::Create({8, 12}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("power of two")));
}

TEST(BlockManagerTest, AllocateReturnsResourceExhaustedWhenFullAndChangesNothing) {
  auto m = Make(6, 4);
  ASSERT_THAT(m->AddSequence(1, 2, 4, TableLayout::kShared), IsOk());
  ASSERT_TRUE(m->Append(1, 8).ok());  // 2 layers x 2 blocks
  EXPECT_EQ(m->NumFree(), 2);
  EXPECT_THAT(m->Append(1, 5), StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK_AND_ASSIGN(BlockTable t, m->Table(1, 1, 3));
  EXPECT_EQ(t.num_tokens, 8);
  EXPECT_EQ(m->NumFree(), 2);
  ASSERT_TRUE(m->Append(1, 4).ok());
  EXPECT_EQ(m->NumFree(), 0);
  ASSERT_THAT(m->Free(1), IsOk());
  EXPECT_EQ(m->NumFree(), 6);
}

TEST(BlockManagerTest, PerHeadTablesAreRaggedAfterTruncate) {
  auto m = Make(64, 4);
  ASSERT_THAT(m->AddSequence(7, 2, 3, TableLayout::kPerHead), IsOk());
  ASSERT_TRUE(m->Append(7, 10).ok());
  EXPECT_EQ(m->NumFree(), 64 - 6 * 3);
  ASSERT_THAT(m->Truncate(7, 1, 2, 3), IsOk());
  ASSERT_OK_AND_ASSIGN(BlockTable t, m->Table(7, 1, 2));
  EXPECT_EQ(t.num_tokens, 3);
  EXPECT_EQ(t.blocks.size(), 1u);
  EXPECT_EQ(m->NumFree(), 64 - 6 * 3 + 2);
  EXPECT_THAT(m->Table(7, 2, 0), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(m->Table(8, 0, 0), StatusIs(absl::StatusCode::kNotFound));
}

TEST(BlockManagerTest, ForkSharesBlocksAndCopiesOnWrite) {
  auto m = Make(16, 4);
  ASSERT_THAT(m->AddSequence(1, 1, 1, TableLayout::kShared), IsOk());
  ASSERT_TRUE(m->Append(1, 6).ok());  // blocks b0 (full), b1 (2 of 4)
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  ASSERT_OK_AND_ASSIGN(BlockTable a, m->Table(1, 0, 0));
  EXPECT_EQ(m->RefCount(a.blocks[0]), 2);
  ASSERT_OK_AND_ASSIGN(auto copies, m->Append(2, 1));
  ASSERT_EQ(copies.size(), 1u);  // the shared partial tail was copied
  EXPECT_EQ(copies[0].first, a.blocks[1]);
  ASSERT_OK_AND_ASSIGN(BlockTable b, m->Table(2, 0, 0));
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_NE(b.blocks[1], a.blocks[1]);
  ASSERT_THAT(m->Free(1), IsOk());
  EXPECT_EQ(m->RefCount(a.blocks[0]), 1);
  EXPECT_THAT(m->Fork(1, 3), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(m->Fork(2, 2), StatusIs(absl::StatusCode::kAlreadyExists));
}

// Invariants: every block is either free or referenced exactly refcount times by tables;
// every table holds ceil(tokens / tpb) blocks; token counts equal the model's.
void CheckInvariants(const BlockManager& m, const std::map<SeqId, std::vector<int>>& model,
                     const std::map<SeqId, std::pair<int, int>>& shape) {
  std::map<BlockId, int> refs;
  for (const auto& [seq, tokens] : model) {
    const auto [layers, heads] = shape.at(seq);
    for (int l = 0; l < layers; ++l) {
      for (int h = 0; h < heads; ++h) {
        auto t = m.Table(seq, l, h);
        ASSERT_TRUE(t.ok());
        ASSERT_EQ(t->num_tokens, tokens[l * heads + h]);
        ASSERT_EQ(static_cast<int>(t->blocks.size()),
                  (t->num_tokens + m.tokens_per_block() - 1) / m.tokens_per_block());
        for (BlockId b : t->blocks) ++refs[b];
      }
    }
  }
  int used = 0;
  for (BlockId b = 0; b < m.num_blocks(); ++b) {
    ASSERT_EQ(m.RefCount(b), refs.count(b) ? refs[b] : 0) << "block " << b;
    used += m.RefCount(b) > 0;
  }
  ASSERT_EQ(m.NumFree() + used, m.num_blocks());
}

TEST(BlockManagerTest, RandomOperationsMatchModel) {
  for (uint64_t seed : {1u, 2u, 3u, 4u, 5u}) {
    SCOPED_TRACE(::testing::Message() << "seed=" << seed);
    std::mt19937_64 rng(seed);
    auto m = Make(96, 8);
    std::map<SeqId, std::vector<int>> model;  // per table token counts
    std::map<SeqId, std::pair<int, int>> shape;
    SeqId next = 0;
    int exhausted = 0;
    for (int step = 0; step < 600; ++step) {
      const int op = static_cast<int>(rng() % 10);
      if (op < 2 || model.empty()) {
        const int layers = 1 + rng() % 3, heads = 1 + rng() % 3;
        const bool per_head = rng() % 2;
        ASSERT_THAT(m->AddSequence(next, layers, heads,
                                   per_head ? TableLayout::kPerHead : TableLayout::kShared),
                    IsOk());
        const int tables = per_head ? heads : 1;
        model[next] = std::vector<int>(layers * tables, 0);
        shape[next] = {layers, tables};
        ++next;
      } else {
        auto it = model.begin();
        std::advance(it, rng() % model.size());
        const SeqId seq = it->first;
        if (op < 6) {
          const int count = rng() % 20;
          // Predict the need from the model: new blocks plus copies of shared partial tails.
          long needed = 0;
          for (int i = 0; i < static_cast<int>(it->second.size()); ++i) {
            const int t = it->second[i];
            needed += (t + count + 7) / 8 - (t + 7) / 8;
            if (t % 8 != 0 && count > 0) {
              const auto [layers, heads] = shape[seq];
              auto table = m->Table(seq, i / heads, i % heads);
              if (m->RefCount(table->blocks.back()) > 1) ++needed;
            }
          }
          const int free_before = m->NumFree();
          auto r = m->Append(seq, count);
          if (needed > free_before) {
            ASSERT_THAT(r, StatusIs(absl::StatusCode::kResourceExhausted));
            ASSERT_EQ(m->NumFree(), free_before);
            ++exhausted;
          } else {
            ASSERT_TRUE(r.ok()) << r.status();
            for (int& t : it->second) t += count;
          }
        } else if (op < 8) {
          const int i = rng() % it->second.size();
          const int keep = it->second[i] == 0 ? 0 : rng() % (it->second[i] + 1);
          const auto [layers, heads] = shape[seq];
          ASSERT_THAT(m->Truncate(seq, i / heads, i % heads, keep), IsOk());
          it->second[i] = keep;
        } else if (op == 8) {
          ASSERT_THAT(m->Fork(seq, next), IsOk());
          model[next] = it->second;
          shape[next] = shape[seq];
          ++next;
        } else {
          ASSERT_THAT(m->Free(seq), IsOk());
          model.erase(seq);
          shape.erase(seq);
        }
      }
      CheckInvariants(*m, model, shape);
    }
    EXPECT_GT(exhausted, 0);  // the pool did fill up
  }
}

}  // namespace
}  // namespace dapq::kvstore
