// File: tests/e2e/compress_cli_test.cc
// `dapq compress` as a user runs it (a real process) on seeded random .npy tensors: keep-sets
// against an independent re-implementation of SnapKV and H2O written from their definitions
// (COMPRESSION.md), DapQ(actual positions, last content) = SnapKV through RoPE, PyTorch-style
// average pooling at the edges, GQA shapes and storage modes, and clear errors for bad input.
// Score tolerances: tests/util/tolerance.h.
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/npy.h"
#include "gtest/gtest.h"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"
#include "tests/util/tolerance.h"

namespace dapq {
namespace {

using RunResult = testing::CommandResult;

RunResult RunDapq(const std::string& args) {
  return testing::RunCommand(std::string(DAPQ_BINARY) + " " + args);
}

// A [heads, n, d] float tensor.
struct Tensor {
  int heads = 0, n = 0, d = 0;
  std::vector<float> x;
  float& at(int h, int t, int e) { return x[(static_cast<size_t>(h) * n + t) * d + e]; }
  float at(int h, int t, int e) const { return x[(static_cast<size_t>(h) * n + t) * d + e]; }
};

Tensor Random(int heads, int n, int d, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor t{heads, n, d, std::vector<float>(static_cast<size_t>(heads) * n * d)};
  for (float& v : t.x) v = normal(rng);
  return t;
}

// Interleaved RoPE at positions 0..n-1, written out from the definition.
Tensor Rotate(const Tensor& t, float theta) {
  Tensor out = t;
  for (int h = 0; h < t.heads; ++h) {
    for (int p = 0; p < t.n; ++p) {
      for (int i = 0; i < t.d / 2; ++i) {
        const float freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / t.d);
        const float angle = static_cast<float>(p) * freq;
        const float a = t.at(h, p, 2 * i), b = t.at(h, p, 2 * i + 1);
        out.at(h, p, 2 * i) = a * std::cos(angle) - b * std::sin(angle);
        out.at(h, p, 2 * i + 1) = a * std::sin(angle) + b * std::cos(angle);
      }
    }
  }
  return out;
}

class CompressCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  std::string Save(const std::string& name, const Tensor& t) {
    const std::string path = dir_ + "/" + name;
    EXPECT_TRUE(WriteNpyF32(path, {t.heads, t.n, t.d}, t.x).ok());
    return path;
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  // Runs `dapq compress <args> --out-kept <dir>/kept.npy` and returns the kept rows (-1 padding
  // kept), or fails the test.
  std::vector<std::vector<int64_t>> Kept(const std::string& args, std::string* log = nullptr) {
    const RunResult r = RunDapq("compress " + args + " --out-kept " + Path("kept.npy"));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    if (log != nullptr) *log = r.out;
    absl::StatusOr<NpyArray> a = ReadNpy(Path("kept.npy"));
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok() || r.exit_code != 0) return {};
    EXPECT_EQ(a->dtype, NpyDType::kI64);
    EXPECT_EQ(a->shape.size(), 2u);
    std::vector<std::vector<int64_t>> rows(a->shape[0]);
    for (size_t h = 0; h < rows.size(); ++h) {
      rows[h].assign(a->i64.begin() + h * a->shape[1], a->i64.begin() + (h + 1) * a->shape[1]);
    }
    return rows;
  }
  RunResult Fails(const std::string& args) {
    RunResult r = RunDapq("compress " + args + " --out-kept " + Path("bad_kept.npy"));
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
    return r;
  }

  std::string dir_;
};

// ---- An independent reference, in double, from the definitions in COMPRESSION.md ----

// sum_{query rows t in [n - rows, n)} softmax_j(q_t . k_j / sqrt(d)) over keys j <= t, summed
// over each KV head's query group and divided by the group size: [kv_heads][n].
std::vector<std::vector<double>> AttentionMass(const Tensor& q, const Tensor& k, int rows) {
  const int group = q.heads / k.heads, n = q.n, d = q.d;
  std::vector<std::vector<double>> s(k.heads, std::vector<double>(n, 0.0));
  for (int h = 0; h < q.heads; ++h) {
    const int kvh = h / group;
    for (int t = n - rows; t < n; ++t) {
      std::vector<double> logit(t + 1);
      double max_logit = -1e300, sum = 0;
      for (int j = 0; j <= t; ++j) {
        double dot = 0;
        for (int e = 0; e < d; ++e) dot += double(q.at(h, t, e)) * k.at(kvh, j, e);
        logit[j] = dot / std::sqrt(double(d));
        max_logit = std::max(max_logit, logit[j]);
      }
      for (int j = 0; j <= t; ++j) sum += std::exp(logit[j] - max_logit);
      for (int j = 0; j <= t; ++j) s[kvh][j] += std::exp(logit[j] - max_logit) / sum;
    }
  }
  for (auto& row : s) {
    for (double& v : row) v /= group;
  }
  return s;
}

std::vector<double> MaxPool(const std::vector<double>& x, int kernel) {
  const int n = static_cast<int>(x.size()), half = kernel / 2;
  std::vector<double> out(n);
  for (int j = 0; j < n; ++j) {
    out[j] = x[j];
    for (int t = std::max(0, j - half); t <= std::min(n - 1, j + half); ++t) {
      out[j] = std::max(out[j], x[t]);
    }
  }
  return out;
}

// The last `window` positions plus the top (budget - window) of the rest, ties to lower positions.
std::vector<int64_t> TopWithWindow(const std::vector<double>& importance, int budget, int window) {
  const int n = static_cast<int>(importance.size());
  std::vector<int64_t> rest;
  for (int j = 0; j < n - window; ++j) rest.push_back(j);
  std::stable_sort(rest.begin(), rest.end(),
                   [&](int64_t a, int64_t b) { return importance[a] > importance[b]; });
  rest.resize(budget - window);
  for (int j = n - window; j < n; ++j) rest.push_back(j);
  std::sort(rest.begin(), rest.end());
  return rest;
}

// SnapKV: window w of queries, max-pool k, per head or summed over heads (shared).
std::vector<std::vector<int64_t>> SnapKvReference(const Tensor& q_post, const Tensor& k, int budget,
                                                  int window, int kernel, bool shared) {
  const auto mass = AttentionMass(q_post, k, window);
  std::vector<std::vector<double>> pooled;
  for (const auto& row : mass) pooled.push_back(MaxPool(row, kernel));
  std::vector<std::vector<int64_t>> keep;
  if (shared) {
    std::vector<double> sum(q_post.n, 0.0);
    for (const auto& row : pooled) {
      for (int j = 0; j < q_post.n; ++j) sum[j] += row[j];
    }
    keep.assign(k.heads, TopWithWindow(sum, budget, window));
  } else {
    for (const auto& row : pooled) keep.push_back(TopWithWindow(row, budget, window));
  }
  return keep;
}

constexpr int kH = 4, kHkv = 2, kN = 97, kD = 16;
constexpr float kTheta = 10000.0f;

TEST_F(CompressCliTest, SnapKvMatchesIndependentReferenceSharedAndPerHead) {
  const Tensor q = Random(kH, kN, kD, 11), k = Random(kHkv, kN, kD, 12);
  const std::string in = "--queries " + Save("q.npy", q) + " --keys " + Save("k.npy", k);
  for (const bool shared : {true, false}) {
    SCOPED_TRACE(shared ? "shared" : "per_head");
    const std::string storage = shared ? " --storage shared" : " --storage per_head";
    const auto kept = Kept(in + " --method snapkv --budget 24 --window 8" + storage +
                           " --out-scores " + Path("scores.npy"));
    EXPECT_EQ(kept, SnapKvReference(q, k, 24, 8, 7, shared));
    absl::StatusOr<NpyArray> scores = ReadNpy(Path("scores.npy"));
    ASSERT_TRUE(scores.ok()) << scores.status();
    ASSERT_EQ(scores->shape, (std::vector<int64_t>{kHkv, kN}));
    std::vector<double> mass;  // [kHkv * kN]
    for (const auto& row : AttentionMass(q, k, 8)) mass.insert(mass.end(), row.begin(), row.end());
    // Logits (kD), a softmax over up to kN keys, then 8 window rows of a 2-head group summed.
    const double tol = testing::Fp32Tolerance(testing::MaxAbs(mass), kD + kN + 1 + 8 * kH / kHkv);
    EXPECT_TRUE(testing::AllClose(scores->f32, mass, tol));
  }
}

TEST_F(CompressCliTest, H2oMatchesIndependentReference) {
  const Tensor q = Random(kH, kN, kD, 21), k = Random(kHkv, kN, kD, 22);
  const auto kept = Kept("--queries " + Save("q.npy", q) + " --keys " + Save("k.npy", k) +
                         " --method h2o --budget 20 --storage per_head");
  const auto mass = AttentionMass(q, k, kN);  // every query, causal; no pooling; window 8
  ASSERT_EQ(kept.size(), static_cast<size_t>(kHkv));
  for (int h = 0; h < kHkv; ++h) EXPECT_EQ(kept[h], TopWithWindow(mass[h], 20, 8)) << h;
}

TEST_F(CompressCliTest, DapqWithActualPositionsAndLastContentEqualsSnapKv) {
  const Tensor q_pre = Random(kH, kN, kD, 31), k = Random(kHkv, kN, kD, 32);
  const std::string keys = " --keys " + Save("k.npy", k);
  const std::string pre =
      "--queries " + Save("q_pre.npy", q_pre) + " --queries-pre-rope --rope-theta 10000" + keys;
  const std::string common = " --budget 24 --window 8 --query_window 8 --kernel 7";
  const auto snapkv = Kept(pre + " --method snapkv" + common);
  const auto dapq = Kept(pre + " --method dapq --positions actual --content last" + common);
  EXPECT_EQ(dapq, snapkv);
  // Post-RoPE queries rotated here: SnapKV matches the reference, and DapQ(actual, last) needs no
  // RoPE at all for them.
  const Tensor q_post = Rotate(q_pre, kTheta);
  const std::string post = "--queries " + Save("q_post.npy", q_post) + keys;
  EXPECT_EQ(Kept(post + " --method snapkv" + common), SnapKvReference(q_post, k, 24, 8, 7, true));
  EXPECT_EQ(Kept(post + " --method dapq --positions actual --content last" + common), snapkv);
}

TEST_F(CompressCliTest, DapqFutureAgreesForPreRopeAndUnrotatedPostRopeQueries) {
  const Tensor q_pre = Random(kH, kN, kD, 41), k = Random(kHkv, kN, kD, 42);
  const std::string keys = " --keys " + Save("k.npy", k) + " --rope-theta 10000";
  const std::string args = " --method dapq --budget 24 --storage per_head --out-scores ";
  Kept("--queries " + Save("q_pre.npy", q_pre) + " --queries-pre-rope" + keys + args +
       Path("s_pre.npy"));
  const std::string post_q = Save("q_post.npy", Rotate(q_pre, kTheta));
  std::string log;
  Kept("--queries " + post_q + keys + args + Path("s_post.npy"), &log);
  // DapQ's evaluated defaults (bench/results/eval/README.md).
  EXPECT_NE(log.find("method=dapq budget=24 window=0 sinks=0 pool=max/1 w_p=32 content=last_token"),
            std::string::npos)
      << log;
  absl::StatusOr<NpyArray> a = ReadNpy(Path("s_pre.npy")), b = ReadNpy(Path("s_post.npy"));
  ASSERT_TRUE(a.ok() && b.ok());
  // Logits (kD), softmaxes over kN keys, w_p = 32 future rows of a 2-head group summed; RoPE
  // angles up to kN + 32 rad on both sides (the post-RoPE queries are rotated back first).
  const double tol =
      testing::Fp32RopeTolerance(testing::MaxAbs(a->f32), kD + kN + 1 + 32 * kH / kHkv, kN + 32);
  EXPECT_TRUE(testing::AllClose(b->f32, a->f32, tol));
}

TEST_F(CompressCliTest, AveragePoolingCountsZeroPaddingAtTheEdges) {
  // One head, head_dim 2, 8 keys; the last query attends with weights proportional to
  // v = [12, 0, 0, 0, 5, 5, 5, 0] (k_j = (ln v_j, 0), q = (sqrt 2, 0); 0 -> e^-40).
  // Average pooling k = 3 with zero padding counted (PyTorch avg_pool1d):
  //   slot 0: (0 + 12 + 0) / 3 = 4, slot 5: (5 + 5 + 5) / 3 = 5  -> slot 5 wins.
  // Dividing by the 2 real neighbours at the edge would give slot 0: 12 / 2 = 6 and keep slot 0.
  const std::vector<float> v = {12, 0, 0, 0, 5, 5, 5, 0};
  Tensor q{1, 8, 2, std::vector<float>(16, 0.0f)}, k = q;
  q.at(0, 7, 0) = std::sqrt(2.0f);
  for (int j = 0; j < 8; ++j) k.at(0, j, 0) = v[j] > 0 ? std::log(v[j]) : -40.0f;
  const std::string args = "--queries " + Save("q.npy", q) + " --keys " + Save("k.npy", k) +
                           " --method snapkv --budget 2 --window 1 --kernel 3";
  EXPECT_EQ(Kept(args + " --pool avg"), (std::vector<std::vector<int64_t>>{{5, 7}}));
  EXPECT_EQ(Kept(args + " --pool max"), (std::vector<std::vector<int64_t>>{{0, 7}}));
}

TEST_F(CompressCliTest, GqaSharedRowsIdenticalPerHeadRowsDifferAdaptivePadsWithMinusOne) {
  Tensor q = Random(kH, kN, kD, 51), k = Random(kHkv, kN, kD, 52);
  for (int t = 0; t < kN; ++t) {  // KV head 0 attends sharply, head 1 almost uniformly
    for (int e = 0; e < kD; ++e) {
      k.at(0, t, e) *= 3.0f;
      k.at(1, t, e) *= 0.05f;
    }
  }
  const std::string in = "--queries " + Save("q.npy", q) + " --keys " + Save("k.npy", k) +
                         " --method snapkv --budget 16";
  const auto shared = Kept(in + " --storage shared");
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_EQ(shared[0].size(), 16u);
  EXPECT_EQ(shared[0], shared[1]);
  const auto per_head = Kept(in + " --storage per_head");
  ASSERT_EQ(per_head.size(), 2u);
  EXPECT_EQ(per_head[0].size(), 16u);
  EXPECT_NE(per_head[0], per_head[1]);

  std::string log;
  const auto adaptive = Kept(in + " --storage per_head --allocator adaptive", &log);
  ASSERT_EQ(adaptive.size(), 2u);
  EXPECT_NE(log.find("padded with -1"), std::string::npos) << log;
  size_t total = 0;
  bool padded = false;
  for (const auto& row : adaptive) {
    std::vector<int64_t> real;
    for (int64_t p : row) {
      if (p < 0) {
        padded = true;
      } else {
        EXPECT_TRUE(real.empty() || p > real.back());  // sorted, padding only at the end
        real.push_back(p);
      }
    }
    for (int64_t p = kN - 16 / 2; p < kN; ++p) {  // the local window (capped to budget / 2)
      EXPECT_NE(std::find(real.begin(), real.end(), p), real.end()) << p;
    }
    total += real.size();
  }
  EXPECT_TRUE(padded);
  EXPECT_EQ(total, 2u * 16u);  // AdaKV moves budget between heads, the layer total is kept
}

TEST_F(CompressCliTest, EveryMethodRunsAndBudgetAtLeastNKeepsEverything) {
  const Tensor q = Random(kH, 40, 8, 61), k = Random(kHkv, 40, 8, 62), v = Random(kHkv, 40, 8, 63);
  const std::string in = "--queries " + Save("q.npy", q) + " --keys " + Save("k.npy", k) +
                         " --values " + Save("v.npy", v) + " --rope-theta 10000";
  for (const char* method :
       {"dapq", "snapkv", "h2o", "streaming", "tova", "expected_attention", "random"}) {
    SCOPED_TRACE(method);
    const auto kept = Kept(in + " --method " + method + " --budget 12");
    ASSERT_EQ(kept.size(), 2u);
    for (const auto& row : kept) {
      ASSERT_EQ(row.size(), 12u);
      EXPECT_TRUE(std::is_sorted(row.begin(), row.end()));
      // Methods with a local window (or recency) keep the last token; DapQ's default has none.
      if (std::string(method) != "tova" && std::string(method) != "expected_attention" &&
          std::string(method) != "random" && std::string(method) != "dapq") {
        EXPECT_EQ(row.back(), 39);
      }
    }
    std::vector<int64_t> all(40);
    for (int j = 0; j < 40; ++j) all[j] = j;
    EXPECT_EQ(Kept(in + " --method " + method + " --budget 64"),
              (std::vector<std::vector<int64_t>>{all, all}));
  }
  // StreamingLLM: 4 sinks + the most recent tokens.
  const auto streaming = Kept(in + " --method streaming --budget 8 --sinks 4");
  EXPECT_EQ(streaming[0], (std::vector<int64_t>{0, 1, 2, 3, 36, 37, 38, 39}));
  std::vector<int64_t> all(40);
  for (int j = 0; j < 40; ++j) all[j] = j;
  EXPECT_EQ(Kept(in + " --method full"), (std::vector<std::vector<int64_t>>{all, all}));
}

TEST_F(CompressCliTest, BadInputsExitOneNamingTheFlagOrField) {
  const std::string q = Save("q.npy", Random(kH, 20, 8, 1)), k = Save("k.npy", Random(2, 20, 8, 2));
  const std::string ok = "--queries " + q + " --keys " + k;
  struct Case {
    std::string args;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases = {
      {"--queries /nonexistent/q.npy --keys " + k + " --method snapkv --budget 8",
       {"NOT_FOUND", "--queries", "/nonexistent/q.npy"}},
      {"--queries " + q + " --keys " + Save("k_n.npy", Random(2, 21, 8, 3)) +
           " --method h2o"
           " --budget 8",
       {"--queries shape [4, 20, 8]", "--keys shape [2, 21, 8]", "n (tokens)"}},
      {"--queries " + q + " --keys " + Save("k_d.npy", Random(2, 20, 6, 3)) +
           " --method h2o"
           " --budget 8",
       {"--keys shape [2, 20, 6]", "d (head_dim)"}},
      {"--queries " + q + " --keys " + Save("k_h.npy", Random(3, 20, 8, 3)) +
           " --method h2o"
           " --budget 8",
       {"H=4", "not a multiple", "H_kv=3"}},
      {"--queries " + q + " --keys " + k + " --values " + Save("v_bad.npy", Random(2, 19, 8, 3)) +
           " --method h2o --budget 8",
       {"--values shape"}},
      {ok + " --method snapkv --budget 0", {"INVALID_ARGUMENT", "budget=0"}},
      {ok + " --method lru --budget 8", {"unknown method 'lru'"}},
      {ok + " --method snapkv --budget 4 --window 9", {"window=9", "exceed budget=4"}},
      {ok + " --method expected_attention --budget 8 --rope-theta 10000", {"--values"}},
      {ok + " --method expected_attention --budget 8 --values " + k, {"--rope-theta"}},
      {ok + " --method dapq --budget 8", {"--rope-theta"}},
      {ok + " --method snapkv --budget 8 --queries-pre-rope",
       {"--queries-pre-rope", "--rope-theta"}},
      {ok + " --method dapq --budget 8 --mode forward --rope-theta 10000",
       {"UNIMPLEMENTED", "forward"}},
      {ok + " --method dapq --budget 8 --rope-theta 10000 --rope-layout halfsplit",
       {"--rope-layout"}},
      {ok + " --method dapq --budget 8 --rope-theta 0.5", {"--rope-theta=0.5"}},
  };
  for (const Case& c : cases) {
    const RunResult r = Fails(c.args);
    for (const std::string& e : c.expected) EXPECT_NE(r.out.find(e), std::string::npos) << r.out;
  }
  // Not a .npy file, and an integer tensor where floats are expected.
  {
    FILE* f = std::fopen(Path("garbage.npy").c_str(), "w");
    std::fputs("not numpy", f);
    std::fclose(f);
  }
  RunResult r =
      Fails("--queries " + Path("garbage.npy") + " --keys " + k + " --method h2o --budget 8");
  EXPECT_NE(r.out.find("bad magic"), std::string::npos) << r.out;
  ASSERT_TRUE(WriteNpyI64(Path("int.npy"), {2, 20, 8}, std::vector<int64_t>(320, 1)).ok());
  r = Fails("--queries " + q + " --keys " + Path("int.npy") + " --method h2o --budget 8");
  EXPECT_NE(r.out.find("--keys"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dtype <i8"), std::string::npos) << r.out;
  // Missing required flags are usage errors from the flag parser (non-zero, naming the flag).
  const RunResult usage = RunDapq("compress --queries " + q + " --keys " + k);
  EXPECT_NE(usage.exit_code, 0);
  EXPECT_NE(usage.out.find("--out-kept"), std::string::npos) << usage.out;
}

}  // namespace
}  // namespace dapq
