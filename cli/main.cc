// File: cli/main.cc
// The `dapq` command-line tool. Subcommands: generate, convert (more come with the service:
// serve, batch, status, eval, compress). Parses flags into options structs and runs the command;
// errors print as "error: <status>" with exit code 1 (2 for usage errors).
#include <cstdio>

#include "CLI/CLI.hpp"
#include "cli/compression_flags.h"
#include "cli/convert_command.h"
#include "cli/generate_command.h"

int main(int argc, char** argv) {
  CLI::App app{"DapQ Serve: LLM inference with decoding-aligned KV-cache compression"};
  app.require_subcommand(1);

  dapq::cli::GenerateCommandOptions gen;
  CLI::App* generate = app.add_subcommand("generate", "generate text with the in-process engine");
  generate
      ->add_option("--model", gen.model,
                   "llama2.c .bin, Hugging Face directory, or synthetic:<shape>[-<N>l][@seed]")
      ->required();
  generate->add_option("--tokenizer", gen.tokenizer, "llama2.c tokenizer .bin");
  generate->add_option("--prompt", gen.prompt, "prompt text (default: BOS only)");
  generate->add_option("--prompt_tokens", gen.prompt_tokens,
                       "use N seeded random token ids as the prompt (synthetic models)");
  generate->add_option("--steps", gen.steps, "new tokens to generate")->capture_default_str();
  generate->add_option("--temperature", gen.temperature, "0 = greedy")->capture_default_str();
  generate->add_option("--top_p", gen.top_p, "nucleus sampling mass")->capture_default_str();
  generate->add_option("--seed", gen.seed, "sampling and random-prompt seed")
      ->capture_default_str();
  generate->add_option("--tp", gen.tp, "tensor-parallel ranks (threads)")->capture_default_str();
  generate->add_option("--prefill_chunk", gen.prefill_chunk, "prompt tokens per forward pass")
      ->capture_default_str();
  generate->add_flag("--print_ids", gen.print_ids, "print token ids instead of text");
  dapq::cli::CompressionFlags gen_compression;
  gen_compression.Register(generate);

  dapq::cli::ConvertCommandOptions conv;
  CLI::App* convert =
      app.add_subcommand("convert", "write a model as a Hugging Face directory (safetensors)");
  convert->add_option("--model", conv.model, "source model (llama2.c .bin, HF dir, synthetic:...)")
      ->required();
  convert->add_option("--out", conv.out_dir, "output directory")->required();

  CLI11_PARSE(app, argc, argv);

  absl::Status status = absl::OkStatus();
  if (app.got_subcommand(generate)) {
    auto compression = gen_compression.ToConfig();
    status = compression.status();
    if (status.ok()) {
      gen.compression = *compression;
      status = dapq::cli::RunGenerate(gen);
    }
  }
  if (app.got_subcommand(convert)) status = dapq::cli::RunConvert(conv);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
