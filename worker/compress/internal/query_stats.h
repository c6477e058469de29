// File: worker/compress/internal/query_stats.h
// What the H2O and ExpectedAttention scorers need from *every* prompt query, accumulated a
// block of queries at a time: the causal attention each key receives (H2O), and the sum and
// sum of outer products of the pre-RoPE queries (ExpectedAttention). Shared by QueryCollector
// (chunk by chunk during prefill) and `dapq compress` (all prompt queries of a layer at once),
// so both compute the same numbers.
// Pure functions over caller-owned buffers; reentrant.
#ifndef DAPQ_WORKER_COMPRESS_INTERNAL_QUERY_STATS_H_
#define DAPQ_WORKER_COMPRESS_INTERNAL_QUERY_STATS_H_

#include "absl/status/status.h"

namespace dapq::worker::compress::internal {

// q_post: [m, q_heads, head_dim] post-RoPE queries of the last m of n prompt tokens (row stride
// q_heads * head_dim). keys: KV head h at keys + h * kv_head_stride, [n, head_dim] rows.
// Query t (position n - m + t) sees keys [0, n - m + t + 1) (causal). Adds every query head's
// softmax(q . k / sqrt(head_dim)) into attention[kv_head * n + j] (summed over the group).
absl::Status AccumulateCausalAttention(const float* q_post, int m, int q_heads, int kv_heads,
                                       int head_dim, const float* keys, long kv_head_stride, int n,
                                       float* attention);

// q_pre: [m, q_heads, head_dim] pre-RoPE queries. Adds, per query head h, the sum of its m
// queries into q_sum[h * d + e] and the sum of their outer products into
// q_outer[(h * d + a) * d + b] (fp32 products of one block, accumulated in fp64).
void AccumulateQueryMoments(const float* q_pre, int m, int q_heads, int head_dim, double* q_sum,
                            double* q_outer);

}  // namespace dapq::worker::compress::internal

#endif  // DAPQ_WORKER_COMPRESS_INTERNAL_QUERY_STATS_H_
