// File: worker/hf_converter.h
// Writes a loaded model as a Hugging Face checkpoint directory: config.json and one F32
// model.safetensors with HF tensor names (model.embed_tokens.weight, model.layers.{i}.self_attn.
// {q,k,v,o}_proj.weight, ..., lm_head.weight), readable by LoadHfModel and by transformers.
//
// RoPE: HF rotates the half-split pairs (i, i + head_dim/2). A model in the interleaved layout
// (llama2.c / Meta: pairs (2i, 2i+1)) gets the rows of wq and wk (and bq/bk) permuted within
// each head, as transformers' convert_llama_weights_to_hf.py does: new row h*hd + i = old row
// h*hd + 2i and new row h*hd + hd/2 + i = old row h*hd + 2i + 1, for i in [0, hd/2). Attention
// scores are unchanged because q and k are permuted alike. A half-split model is copied as is.
//
// config.json: model_type "llama" (or "qwen2" when the model has q/k/v biases, because HF's Llama
// with attention_bias also expects an o_proj bias, which these models lack), the sizes,
// rms_norm_eps, rope_theta, rope_scaling (llama3, when set), tie_word_embeddings, bos_token_id,
// eos_token_id (the list stop_token_ids), hidden_act "silu", torch_dtype "float32". Tied
// embeddings write no lm_head.weight.
//
// Errors: the model's own Validate()/CheckComplete() errors; the errno-derived code naming the
// path when out_dir cannot be created or a file cannot be written. Existing files are replaced.
#ifndef DAPQ_WORKER_HF_CONVERTER_H_
#define DAPQ_WORKER_HF_CONVERTER_H_

#include <string>

#include "absl/status/status.h"
#include "worker/model_weights.h"

namespace dapq::worker {

// Creates `out_dir` (and its parents) when missing.
absl::Status ConvertToHf(const ModelWeights& model, const std::string& out_dir);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_HF_CONVERTER_H_
