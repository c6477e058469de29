// File: worker/hf_loader.h
// Loads Hugging Face checkpoints of Llama-family models (model_type llama, mistral or qwen2; a
// missing model_type is read as llama) from a directory holding config.json and one or more
// *.safetensors files (a single file or shards; any index.json is not needed and is ignored).
//
// config.json: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// vocab_size, max_position_embeddings and rms_norm_eps are required. Optional, with defaults:
// num_key_value_heads (= num_attention_heads), head_dim (= hidden_size / num_attention_heads),
// rope_theta (10000), rope_scaling (none; only rope_type "llama3" is implemented, "default" means
// none), tie_word_embeddings (false), attention_bias (false; always true for qwen2),
// bos_token_id (1), eos_token_id (int or list -> stop_token_ids; none when absent),
// hidden_act ("silu", the only one implemented). Mistral's sliding_window is ignored: the engine
// always uses full attention, which matches sliding-window attention for contexts up to the
// window. A null value counts as absent. The result uses the half-split RoPE layout (HF's).
//
// Weights: F32 tensors whose data is 4-byte aligned point into the file mappings (no copy);
// F16, BF16 and unaligned F32 tensors are converted into owned fp32 buffers. Tensors other than
// the ones the model needs (e.g. rotary_emb.inv_freq) are ignored; lm_head.weight is ignored when
// the embeddings are tied.
//
// Errors: NotFound (missing directory, missing config.json, no *.safetensors file);
// InvalidArgument naming the field and config.json (missing field, wrong JSON type, bad value,
// unsupported model_type), or naming the tensor (missing, or with a shape that differs from the
// config: expected and actual shapes are given), or a malformed safetensors file;
// Unimplemented for unsupported features (rope_scaling types other than llama3, hidden_act other
// than silu, mlp_bias, an o_proj bias).
#ifndef DAPQ_WORKER_HF_LOADER_H_
#define DAPQ_WORKER_HF_LOADER_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/model_weights.h"

namespace dapq::worker {

// `dir`: the checkpoint directory. config.name is its basename. linear_dtype kBF16 loads every
// linear matrix (and lm_head) as bf16 only: BF16 tensors are used in place in the mapping, F32
// and F16 ones rounded to bf16 without an fp32 copy (ModelWeights::weights_dtype kBF16).
absl::StatusOr<ModelWeights> LoadHfModel(const std::string& dir,
                                         kernels::DType linear_dtype = kernels::DType::kF32);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_HF_LOADER_H_
