// File: tokenizer/internal/bpe_model.h
// The tokenizer.json BPE model: a vocabulary, merges ranked by position (given as "a b" strings
// or [a, b] lists), byte_fallback (<0xXX> tokens for characters outside the vocabulary), unk_token
// with fuse_unk, and ignore_merges (a word that is itself a token is not merged).
//
// Merging is O(n log n) in the word length: the symbols form a linked list, candidate pairs sit
// in a min-heap keyed by (merge rank, position of the left symbol), and stale entries are
// skipped when popped (lazy invalidation). Equal ranks (the same pair at several places) merge
// leftmost first, as Hugging Face tokenizers and transformers.js do. Words shorter than 256
// bytes are cached (bounded; cleared when full).
//
// Invalid UTF-8 bytes in a word are units of their own: they become their <0xXX> token with
// byte_fallback, else the unk token, else nothing.
// Thread-safety: immutable after Make except for the word cache, which a mutex guards; EncodeWord
// may run concurrently.
#ifndef DAPQ_TOKENIZER_INTERNAL_BPE_MODEL_H_
#define DAPQ_TOKENIZER_INTERNAL_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer::internal {

class BpeModel {
 public:
  // Unimplemented for models other than BPE and for BPE options this implementation lacks
  // (continuing_subword_prefix, end_of_word_suffix, dropout); InvalidArgument for a malformed
  // vocabulary or a merge whose tokens are not in it.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Make(const Json& spec, const SpecContext& ctx);

  // Appends the ids of one pre-tokenized word to *ids.
  void EncodeWord(std::string_view word, std::vector<int>* ids) const;

  int TokenToId(std::string_view token) const;  // -1 when absent
  // The token of `id`, or nullptr for an id the vocabulary does not use.
  const std::string* IdToToken(int id) const;
  int max_id() const { return static_cast<int>(id_to_token_.size()) - 1; }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct Merge {
    int rank;
    int new_id;
  };
  BpeModel() = default;
  void MergeWord(std::string_view word, std::vector<int>* ids) const;
  static uint64_t PairKey(int a, int b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, int> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_used_;
  absl::flat_hash_map<uint32_t, int> char_ids_;  // single-code-point tokens
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int byte_ids_[256] = {};  // id of <0xXX>, or -1
  int unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  static constexpr size_t kCacheMaxWordBytes = 256;
  static constexpr size_t kCacheCapacity = 1 << 16;
  mutable Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_BPE_MODEL_H_
