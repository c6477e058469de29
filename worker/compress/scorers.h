// File: worker/compress/scorers.h
// Constructors of the individual scorers, used by MakeScorer (scorer_factory.cc). Each expects a
// resolved CompressionConfig (CompressionConfig::Resolve).
#ifndef DAPQ_WORKER_COMPRESS_SCORERS_H_
#define DAPQ_WORKER_COMPRESS_SCORERS_H_

#include <memory>

#include "worker/compress/scorer.h"

namespace dapq::worker::compress {

std::unique_ptr<Scorer> MakeDapqScorer(const CompressionConfig& config);
std::unique_ptr<Scorer> MakeSnapKvScorer(const CompressionConfig& config);
std::unique_ptr<Scorer> MakeH2oScorer(const CompressionConfig& config);
std::unique_ptr<Scorer> MakeTovaScorer(const CompressionConfig& config);
std::unique_ptr<Scorer> MakeStreamingScorer(const CompressionConfig& config);
std::unique_ptr<Scorer> MakeRandomScorer(const CompressionConfig& config);
std::unique_ptr<Scorer> MakeExpectedAttentionScorer(const CompressionConfig& config);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_SCORERS_H_
