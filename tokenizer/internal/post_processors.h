// File: tokenizer/internal/post_processors.h
// tokenizer.json post-processors, applied when Encode is asked to add special tokens:
// TemplateProcessing (the "single" template), BertProcessing / RobertaProcessing ([cls] A [sep]),
// ByteLevel (nothing to do for ids), Sequence.
// Thread-safety: immutable after construction.
#ifndef DAPQ_TOKENIZER_INTERNAL_POST_PROCESSORS_H_
#define DAPQ_TOKENIZER_INTERNAL_POST_PROCESSORS_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer::internal {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Frames the ids of one sequence (`ids` is the "A" sequence).
  virtual void Apply(std::vector<int>* ids) const = 0;
  // Every id Apply may add (the loader checks them against the vocabulary).
  virtual std::vector<int> AddedIds() const = 0;
};

// Unimplemented naming the type for unknown post-processors; InvalidArgument for a template that
// names an undefined special token, or an id that is negative or does not fit an int.
absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const Json& spec,
                                                                 const SpecContext& ctx);

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_POST_PROCESSORS_H_
