// File: worker/synthetic_model.cc
// Named shapes and the seeded weight generator for synthetic models.
#include "worker/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace dapq::worker {
namespace {

struct Shape {
  const char* name;
  int dim, hidden, layers, heads, kv_heads, head_dim, vocab, ctx;
  float theta;
  float rope_factor;  // Llama-3 scaling factor, 0 = none
  int rope_original_ctx;
  bool bias;
  bool tied;
};

constexpr Shape kShapes[] = {
    {"llama3-8b", 4096, 14336, 32, 32, 8, 128, 128256, 131072, 500000.0f, 8.0f, 8192, false, false},
    {"llama2-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096, 10000.0f, 0.0f, 0, false, false},
    {"mistral-7b", 4096, 14336, 32, 32, 8, 128, 32000, 32768, 1000000.0f, 0.0f, 0, false, false},
    {"qwen2-7b", 3584, 18944, 28, 28, 4, 128, 152064, 32768, 1000000.0f, 0.0f, 0, true, false},
    // Small shapes for tests: GQA group 4, uneven FFN split, Llama-3 scaling that bites at 64.
    {"tiny-gqa", 128, 201, 3, 16, 4, 8, 320, 2048, 10000.0f, 4.0f, 64, false, false},
    {"tiny-mha", 64, 160, 2, 4, 4, 16, 300, 1024, 10000.0f, 0.0f, 0, true, true},
    // Long contexts (streaming compression): Llama-3 RoPE (theta 500000, factor 8 from 8192) to
    // 2,097,152 positions, GQA group 4, widths small enough for a million tokens on one core.
    {"tiny-long", 64, 160, 2, 8, 2, 8, 320, 2097152, 500000.0f, 8.0f, 8192, false, false},
};

// splitmix64 finaliser: a counter-based generator, so any element can be produced independently.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Fills dst[i] = center + scale * u, u uniform in [-1, 1), from (seed, tensor_id, i).
void Fill(float* dst, size_t n, uint64_t seed, uint64_t tensor_id, float center, float scale) {
  const uint64_t base = Mix(seed * 0x100000001B3ull ^ Mix(tensor_id));
  auto work = [=](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const uint64_t r = Mix(base + i);
      const float u = static_cast<float>(r >> 40) * (2.0f / 16777216.0f) - 1.0f;
      dst[i] = center + scale * u;
    }
  };
  const size_t kParallelThreshold = size_t{1} << 22;
  const unsigned threads =
      n < kParallelThreshold ? 1 : std::max(1u, std::thread::hardware_concurrency());
  if (threads == 1) {
    work(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const size_t chunk = (n + threads - 1) / threads;
  for (unsigned t = 0; t < threads; ++t) {
    const size_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(work, b, e);
  }
  for (auto& th : pool) th.join();
}

struct ParsedSpec {
  const Shape* shape;
  int layers;
  uint64_t seed;
};

absl::StatusOr<ParsedSpec> Parse(const std::string& spec) {
  std::string rest = spec;
  if (rest.rfind(kSyntheticPrefix, 0) == 0) rest = rest.substr(sizeof(kSyntheticPrefix) - 1);
  ParsedSpec p{nullptr, 0, 1234};
  if (const size_t at = rest.find('@'); at != std::string::npos) {
    if (!absl::SimpleAtoi(rest.substr(at + 1), &p.seed)) {
      return absl::InvalidArgumentError(absl::StrCat("synthetic model '", spec, "': bad seed"));
    }
    rest = rest.substr(0, at);
  }
  for (const Shape& s : kShapes) {
    const std::string name = s.name;
    if (rest == name) {
      p.shape = &s;
      p.layers = s.layers;
      return p;
    }
    if (rest.rfind(name + "-", 0) == 0 && rest.back() == 'l') {
      const std::string n = rest.substr(name.size() + 1, rest.size() - name.size() - 2);
      int layers = 0;
      if (!absl::SimpleAtoi(n, &layers) || layers <= 0 || layers > s.layers * 4) {
        return absl::InvalidArgumentError(
            absl::StrCat("synthetic model '", spec, "': bad layer count '", n, "'"));
      }
      p.shape = &s;
      p.layers = layers;
      return p;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown synthetic model '", spec, "'; shapes: ", absl::StrJoin(SyntheticShapeNames(), ", "),
      " (append -<N>l for N layers, @<seed>)"));
}

}  // namespace

std::vector<std::string> SyntheticShapeNames() {
  std::vector<std::string> names;
  for (const Shape& s : kShapes) names.push_back(s.name);
  return names;
}

absl::StatusOr<ModelConfig> SyntheticModelConfig(const std::string& spec) {
  DAPQ_ASSIGN_OR_RETURN(ParsedSpec p, Parse(spec));
  const Shape& s = *p.shape;
  ModelConfig c;
  c.name = spec.rfind(kSyntheticPrefix, 0) == 0 ? spec : std::string(kSyntheticPrefix) + spec;
  c.dim = s.dim;
  c.hidden_dim = s.hidden;
  c.n_layers = p.layers;
  c.n_heads = s.heads;
  c.n_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.vocab_size = s.vocab;
  c.max_seq_len = s.ctx;
  c.norm_eps = 1e-5f;
  c.rope.head_dim = s.head_dim;
  c.rope.theta = s.theta;
  c.rope.layout = kernels::RopeLayout::kHalfSplit;
  if (s.rope_factor > 0) {
    c.rope.scaling = {s.rope_factor, 1.0f, 4.0f, s.rope_original_ctx};
  }
  c.attention_bias = s.bias;
  c.tied_embeddings = s.tied;
  c.bos_token_id = 1;
  c.stop_token_ids = {};  // random weights: generate exactly the requested number of tokens
  DAPQ_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<ModelWeights> MakeSyntheticModel(const std::string& spec) {
  DAPQ_ASSIGN_OR_RETURN(ModelConfig c, SyntheticModelConfig(spec));
  DAPQ_ASSIGN_OR_RETURN(ParsedSpec p, Parse(spec));
  ModelWeights w;
  w.config = c;
  uint64_t tensor_id = 0;
  auto make = [&](size_t n, float center, float scale) {
    float* dst = w.AllocateOwned(n);
    Fill(dst, n, p.seed, tensor_id++, center, scale);
    return dst;
  };
  // Uniform in [-a, a] has variance a^2 / 3: a = sqrt(3 / fan_in) gives variance 1 / fan_in.
  auto linear = [&](size_t out, size_t in) {
    return make(out * in, 0.0f, std::sqrt(3.0f / static_cast<float>(in)));
  };
  const size_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  w.token_embedding = make(static_cast<size_t>(c.vocab_size) * dim, 0.0f, 1.0f);
  w.layers.resize(c.n_layers);
  for (LayerWeights& l : w.layers) {
    l.attn_norm = make(dim, 1.0f, 0.1f);
    l.wq = linear(q, dim);
    l.wk = linear(kv, dim);
    l.wv = linear(kv, dim);
    l.wo = linear(dim, q);
    if (c.attention_bias) {
      l.bq = make(q, 0.0f, 0.1f);
      l.bk = make(kv, 0.0f, 0.1f);
      l.bv = make(kv, 0.0f, 0.1f);
    }
    l.ffn_norm = make(dim, 1.0f, 0.1f);
    l.w1 = linear(hidden, dim);
    l.w2 = linear(dim, hidden);
    l.w3 = linear(hidden, dim);
  }
  w.final_norm = make(dim, 1.0f, 0.1f);
  w.classifier = c.tied_embeddings ? w.token_embedding : linear(c.vocab_size, dim);
  DAPQ_RETURN_IF_ERROR(w.CheckComplete());
  return w;
}

}  // namespace dapq::worker
