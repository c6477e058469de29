// File: tests/fuzz/make_seeds.cc
// Writes the seed corpora of tests/fuzz (corpus/<target>/) with the project's own encoders, so
// that every seed is a well-formed input the fuzzer mutates from: `dapq_fuzz_make_seeds <dir>`
// (default: tests/fuzz/corpus of the source tree). Deterministic; rerun it after a format
// changes and check the files in. Seeds stay small (a few KB): libFuzzer's -max_len defaults to
// the largest seed.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/npy.h"
#include "dapq/v1/batch.pb.h"
#include "dapq/v1/inference.pb.h"
#include "kvstore/block_codec.h"
#include "kvstore/disk_tier.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/session_fixture.h"
#include "worker/safetensors.h"

namespace {

namespace fs = std::filesystem;
using dapq::kernels::DType;

std::string root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = fs::path(root) / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good());
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FUZZ_CHECK(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

template <typename T>
void Append(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// A llama2.c checkpoint with the given header and deterministic weights (legacy RoPE tables
// included when `freq`).
std::string Llama2c(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int seq,
                    bool freq) {
  std::string out;
  for (int v : {dim, hidden, layers, heads, kv_heads, vocab, seq}) Append<int32_t>(out, v);
  const long kv_dim = static_cast<long>(kv_heads) * (dim / heads);
  const long v = vocab < 0 ? -vocab : vocab;
  long floats = v * dim + layers * dim + layers * dim * dim + 2 * layers * kv_dim * dim +
                layers * dim * dim + layers * dim + 3L * layers * hidden * dim + dim +
                (vocab < 0 ? v * dim : 0);
  if (freq) floats += static_cast<long>(seq) * (dim / heads);
  for (long i = 0; i < floats; ++i) Append<float>(out, static_cast<float>(i % 7) * 0.125f);
  return out;
}

std::string SafetensorsImage(const std::vector<dapq::worker::NamedTensor>& tensors) {
  const std::string path = dapq::fuzz::ScratchDir() + "/seed.safetensors";
  FUZZ_CHECK(dapq::worker::WriteSafetensors(path, tensors).ok());
  return ReadAll(path);
}

// A safetensors file by hand: `header` JSON, then `data` (for F16/BF16 and metadata seeds).
std::string SafetensorsRaw(const std::string& header, const std::string& data) {
  std::string out;
  Append<uint64_t>(out, header.size());
  return out + header + data;
}

void LoaderSeeds() {
  Write("llama2c_loader_fuzzer", "tied", Llama2c(4, 6, 1, 2, 1, 5, 3, false));
  Write("llama2c_loader_fuzzer", "untied_rope", Llama2c(4, 4, 2, 2, 2, -4, 2, true));
  Write("llama2c_loader_fuzzer", "truncated", Llama2c(8, 8, 1, 2, 2, 6, 4, false).substr(0, 60));
  Write("llama2c_loader_fuzzer", "stories260K_header",
        ReadAll(dapq::fuzz::SharedModelPath("stories260K.bin")).substr(0, 28));

  std::vector<float> values(64);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) - 7.5f;
  Write("safetensors_fuzzer", "f32",
        SafetensorsImage({{"a", {2, 3}, values.data()},
                          {"b.weight", {4}, values.data()},
                          {"scalar", {}, values.data()},
                          {"empty", {0, 5}, nullptr}}));
  Write(
      "safetensors_fuzzer", "f16_bf16_metadata",
      SafetensorsRaw(R"({"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[2,2],)"
                     R"("data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3],)"
                     R"("data_offsets":[8,14]}})",
                     std::string("\x00\x3c\x00\xc0\xff\x7b\x00\x00\x80\x3f\x00\xc0\x80\x7f", 14)));
  Write("safetensors_fuzzer", "bad_offsets",
        SafetensorsRaw(R"({"x":{"dtype":"F32","shape":[1,2],"data_offsets":[4,12]}})",
                       std::string(12, '\x01')));

  // config.json alone, and config.json + NUL + a checkpoint holding every tensor it needs.
  const std::string config =
      R"({"model_type": "llama", "hidden_size": 4, "intermediate_size": 6,
  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
  "vocab_size": 5, "max_position_embeddings": 16, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 3],
  "hidden_act": "silu", "torch_dtype": "float32"})";
  std::vector<float> w(64, 0.25f);
  const std::string p = "model.layers.0.";
  const std::string checkpoint = SafetensorsImage({
      {"model.embed_tokens.weight", {5, 4}, w.data()},
      {"model.norm.weight", {4}, w.data()},
      {"lm_head.weight", {5, 4}, w.data()},
      {p + "input_layernorm.weight", {4}, w.data()},
      {p + "post_attention_layernorm.weight", {4}, w.data()},
      {p + "self_attn.q_proj.weight", {4, 4}, w.data()},
      {p + "self_attn.k_proj.weight", {2, 4}, w.data()},
      {p + "self_attn.v_proj.weight", {2, 4}, w.data()},
      {p + "self_attn.o_proj.weight", {4, 4}, w.data()},
      {p + "mlp.gate_proj.weight", {6, 4}, w.data()},
      {p + "mlp.up_proj.weight", {6, 4}, w.data()},
      {p + "mlp.down_proj.weight", {4, 6}, w.data()},
  });
  Write("hf_config_fuzzer", "llama_with_weights", config + std::string(1, '\0') + checkpoint);
  Write("hf_config_fuzzer", "llama3_rope_scaling",
        R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192,
  "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
  "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
  "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})");
  Write("hf_config_fuzzer", "qwen2",
        R"({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
  "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
  "vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "rope_scaling": null, "sliding_window": 32768,
  "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151645})");
  Write("hf_config_fuzzer", "mistral_bad_act",
        R"({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "vocab_size": 32000, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
  "hidden_act": "gelu", "rope_scaling": {"type": "default"}})");
}

void TokenizerSeeds() {
  Write("tokenizer_bin_fuzzer", "tok512",
        std::string("\x00\x02", 2) + ReadAll(dapq::fuzz::SharedModelPath("tok512.bin")));
  // Five pieces, fewer than the 259 that byte fallback assumes.
  std::string tiny("\x05\x00", 2);
  Append<int32_t>(tiny, 8);
  for (const char* piece : {"<unk>", "<s>", "</s>", " ", "a"}) {
    Append<float>(tiny, -1.0f);
    Append<int32_t>(tiny, static_cast<int32_t>(std::strlen(piece)));
    tiny.append(piece);
  }
  Write("tokenizer_bin_fuzzer", "tiny_vocab", tiny);

  Write("hf_tokenizer_json_fuzzer", "mini_bpe",
        R"({"added_tokens": [], "normalizer": null, "pre_tokenizer": null,
"post_processor": null, "decoder": null,
"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
  Write("hf_tokenizer_json_fuzzer", "llama2_style",
        R"({"version": "1.0", "truncation": null, "padding": null,
"added_tokens": [
 {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
 {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
 {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
 {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
"pre_tokenizer": null,
"post_processor": {"type": "TemplateProcessing",
 "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
 "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
 "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
"decoder": {"type": "Sequence", "decoders": [
 {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
 {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
"model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
 "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
 "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "<0xC3>": 4, "<0xA9>": 5,
  "\u2581": 6, "h": 7, "e": 8, "l": 9, "o": 10, "\u2581h": 11, "ll": 12, "\u2581hell": 13, "\u2581hello": 14},
 "merges": ["\u2581 h", "l l", "\u2581h e", "\u2581he ll", "\u2581hell o"]}})");
  Write("hf_tokenizer_json_fuzzer", "byte_level_regex",
        R"({"added_tokens": [
 {"id": 9, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
 {"id": 10, "content": "<|im_start|>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": false}],
"normalizer": {"type": "NFC"},
"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
 {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
 {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
"post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
"decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
"model": {"type": "BPE", "dropout": null, "unk_token": null, "byte_fallback": false, "ignore_merges": false,
 "vocab": {"H": 0, "e": 1, "l": 2, "o": 3, "\u0120": 4, "He": 5, "ll": 6, "Hell": 7, "Hello": 8},
 "merges": ["H e", "l l", "He ll", "Hell o"]}})");
  Write("hf_tokenizer_json_fuzzer", "metaspace_bert",
        R"({"added_tokens": [
 {"id": 0, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
 {"id": 1, "content": "[SEP]", "single_word": true, "lstrip": false, "rstrip": false, "normalized": true, "special": true}],
"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKD"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": true, "strip_right": true}]},
"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": true},
 {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true}]},
"post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]},
"decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true},
"model": {"type": "BPE", "unk_token": "[UNK]", "fuse_unk": false,
 "vocab": {"[UNK]": 2, "\u2581": 3, "a": 4, "b": 5, "1": 6, "\u2581a": 7, ",": 8}, "merges": [["\u2581", "a"]]}})");
  Write("hf_tokenizer_json_fuzzer", "roberta_whitespace",
        R"({"added_tokens": [], "normalizer": {"type": "NFKC"},
"pre_tokenizer": {"type": "Whitespace"},
"post_processor": {"type": "Sequence", "processors": [{"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": true, "add_prefix_space": false}]},
"decoder": {"type": "Sequence", "decoders": [{"type": "Fuse"}]},
"model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "</s>": 2, "b": 3}, "merges": []}})");

  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"ascii", "Hello, world! It's a test: 3.14 and 42 apples.\n"},
           {"unicode",
            "Gr\xC3\xBC\xC3\x9F\x65 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80 "
            "na\xC3\xAF\x76\x65 \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82"},
           {"invalid_utf8", "abc\xFF\xFE\xC3(\xE2\x82 \xF0\x9F\x98 \x80\x80 end"},
           {"special", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"},
           {"code", "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * 2;\n}\n   \r\n"},
       }) {
    Write("hf_tokenizer_encode_fuzzer", name, text);
  }
}

void StoreSeeds() {
  std::vector<float> payload(2 * 2 * 3 * 4);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<float>(i) * 0.5f - 3.0f;
  const std::vector<int32_t> positions = {0, 1, 5};
  std::vector<std::string> blocks;
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    absl::StatusOr<std::string> b =
        dapq::kvstore::EncodeBlock({11, 22, 3, 0, 2, 4, dtype}, positions, payload);
    FUZZ_CHECK(b.ok());
    blocks.push_back(*b);
    Write("block_codec_fuzzer", std::string(dapq::kernels::DTypeName(dtype)),
          std::string(1, '\0') + *b);
  }
  Write("block_codec_fuzzer", "fixup_checksum", std::string(1, '\1') + blocks[1]);

  // A segment as the disk tier writes it (PutBatch on a real directory).
  const std::string dir = dapq::fuzz::ScratchDir() + "/disk";
  fs::remove_all(dir);
  {
    absl::StatusOr<std::unique_ptr<dapq::kvstore::DiskTier>> tier =
        dapq::kvstore::DiskTier::Open({"disk", 1 << 20, 0.95, 0.8}, dir);
    FUZZ_CHECK(tier.ok());
    FUZZ_CHECK(
        (*tier)
            ->PutBatch(
                {{"s.r0.l0.h0.b0", blocks[0]}, {"s.r0.l0.h1.b0", blocks[1]}, {"t.m", blocks[2]}})
            .ok());
  }
  const std::string seg = ReadAll(dir + "/seg-0.seg");
  Write("disk_segment_fuzzer", "segment", std::string(1, '\0') + seg);
  Write("disk_segment_fuzzer", "segment_twice_dead_blockfile", std::string(1, '\x0e') + seg);
  Write("disk_segment_fuzzer", "segment_fixup", std::string(1, '\x01') + seg);

  dapq::fuzz::SessionFixture& f = dapq::fuzz::SessionFixture::Get();
  std::string words;
  for (const int32_t w : f.manifest_words) Append<int32_t>(words, w);
  Write("session_manifest_fuzzer", "real_manifest_words", std::string(1, '\x04') + words);
  Write("session_manifest_fuzzer", "real_manifest_words_kfail", std::string(1, '\x06') + words);
  Write("session_manifest_fuzzer", "words_without_blocks", std::string(1, '\0') + words);
  absl::StatusOr<std::string> manifest = f.store->Get("fz.m");
  FUZZ_CHECK(manifest.ok());
  Write("session_manifest_fuzzer", "real_manifest_block", std::string(1, '\x05') + *manifest);
  std::string record_words;
  for (const int32_t w : f.record_words) Append<int32_t>(record_words, w);
  Write("session_manifest_fuzzer", "real_record_words", std::string(1, '\x14') + record_words);
  Write("session_manifest_fuzzer", "real_record_block", std::string(1, '\x15') + f.record_block);

  const std::string npy = dapq::fuzz::ScratchDir() + "/seed.npy";
  FUZZ_CHECK(dapq::WriteNpyF32(npy, {2, 3}, {1, 2, 3, 4, 5, 6}).ok());
  Write("npy_fuzzer", "f4_2x3", ReadAll(npy));
  FUZZ_CHECK(dapq::WriteNpyI64(npy, {4}, {-1, 0, 1, 1 << 20}).ok());
  Write("npy_fuzzer", "i8_4", ReadAll(npy));
  FUZZ_CHECK(dapq::WriteNpyF32(npy, {}, {2.5f}).ok());
  Write("npy_fuzzer", "f4_scalar", ReadAll(npy));
  // Format 2.0, '<f8' and '<i4', written by hand.
  for (const auto& [name, descr, shape, item] :
       std::vector<std::tuple<std::string, std::string, std::string, int>>{
           {"f8_v2", "<f8", "(2,)", 8}, {"i4_v2_empty", "<i4", "(0, 3)", 4}}) {
    const std::string header =
        "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }\n";
    std::string out = std::string("\x93NUMPY\x02\x00", 8);
    Append<uint32_t>(out, static_cast<uint32_t>(header.size()));
    out += header;
    if (shape == "(2,)") out += std::string(2 * item, '\x40');
    Write("npy_fuzzer", name, out);
  }
}

void RequestSeeds() {
  Write("batch_items_fuzzer", "mixed",
        R"({"prompt": "Once upon a time", "max_new_tokens": 16}
{"token_ids": [1, 403, 407], "session_id": "s-1", "ignore_stop_tokens": true}

{"prompt": "hi", "sampling": {"temperature": 0.7, "topP": 0.9, "seed": "42"}, "compression": {"method": "dapq", "budgetTokens": 24, "window": 4}}
)");
  Write("batch_items_fuzzer", "bad_field", R"({"prompt": "x", "max_tokens": 3})");
  Write(
      "batch_items_fuzzer", "snake_case_options",
      R"({"token_ids": [5], "compression": {"method": "snapkv", "budget_ratio": 0.5, "pool_kernel": 7, "query_window": 8, "pool": "max"}})");

  dapq::v1::GenerateRequest text;
  text.set_text("Once upon a time");
  text.set_max_new_tokens(12);
  text.add_stop("\n\n");
  text.mutable_sampling()->set_temperature(0.8f);
  text.mutable_sampling()->set_top_p(0.95f);
  text.mutable_compression()->set_method("dapq");
  text.mutable_compression()->set_budget_tokens(24);
  text.mutable_compression()->set_window(4);
  Write("request_proto_fuzzer", "text_dapq", std::string(1, '\0') + text.SerializeAsString());
  dapq::v1::GenerateRequest ids;
  for (int id : {1, 403, 407, 261}) ids.mutable_token_ids()->add_ids(id);
  ids.set_session_id("tim");
  ids.mutable_compression()->set_method("snapkv");
  ids.mutable_compression()->set_budget_ratio(0.5);
  Write("request_proto_fuzzer", "token_ids_session",
        std::string(1, '\x08') + ids.SerializeAsString());
  dapq::v1::GenerateRequest chat;
  for (const auto& [role, content] : std::vector<std::pair<std::string, std::string>>{
           {"system", "Be brief."}, {"user", "Hi!"}, {"assistant", "Hello."}, {"user", "Bye"}}) {
    dapq::v1::ChatMessage* m = chat.mutable_chat()->add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  for (char family : {'\x00', '\x02', '\x04', '\x06'}) {
    Write("request_proto_fuzzer", std::string("chat_family") + static_cast<char>('0' + family / 2),
          std::string(1, family) + chat.SerializeAsString());
  }
  dapq::v1::SubmitBatchRequest batch;
  batch.set_name("nightly");
  *batch.add_items() = text;
  *batch.add_items() = ids;
  batch.mutable_defaults()->set_max_new_tokens(8);
  batch.mutable_defaults()->mutable_compression()->set_method("h2o");
  batch.mutable_defaults()->mutable_compression()->set_budget_tokens(16);
  batch.set_max_attempts(3);
  Write("request_proto_fuzzer", "batch", std::string(1, '\x01') + batch.SerializeAsString());

  Write("openai_request_fuzzer", "completion",
        R"({"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 16,
"temperature": 0.7, "top_p": 0.9, "seed": 7, "stop": ["\n\n", " end"], "stream": true,
"stream_options": {"include_usage": true}, "n": 1, "echo": false, "logprobs": null,
"kv_compression": {"method": "dapq", "budget": 24, "window": 4, "sinks": 1}})");
  Write("openai_request_fuzzer", "chat",
        R"({"model": "m", "messages": [{"role": "developer", "content": "Be brief."},
{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]},
{"role": "assistant", "content": null}, {"role": "user", "content": "wor"}],
"max_completion_tokens": 8, "stop": "ld", "presence_penalty": 0, "logit_bias": {}})");
  Write(
      "openai_request_fuzzer", "token_prompt",
      R"({"prompt": [[1, 403, 407]], "max_tokens": 2, "kv_compression": {"method": "snapkv", "budget_ratio": 0.5, "pool": "avg", "pool_kernel": 5, "query_window": 8}})");
}

}  // namespace

int main(int argc, char** argv) {
  root = argc > 1 ? argv[1] : dapq::fuzz::SourcePath("tests/fuzz/corpus");
  LoaderSeeds();
  TokenizerSeeds();
  StoreSeeds();
  RequestSeeds();
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
