// llamacpp_bench.mjs - llama.cpp (CPU) peer benchmark for issue #12, through node-llama-cpp 3.21.1.
//
// A peer tool, not part of the engine. Loads a GGUF written by write_gguf.py (synthetic
// Llama-3-8B shapes) with node-llama-cpp's prebuilt llama.cpp CPU binaries (ggml picks its CPU
// variant at run time; the log line "loaded CPU backend from ..." says which), no GPU, and
// measures:
//   - prefill tok/s: one llama_decode of the whole prompt (batchSize = n_ubatch = the longest
//     prompt), on an empty KV cache, for each length in --prompt_lengths in order (so
//     "512,512,2048,2048" gives a first and a warm second run of each length);
//   - decode tok/s at --decode_prompt context, batch 1: prefill decode_prompt - 1 tokens, one
//     untimed step (the last prompt token, logits + greedy sample), then --decode_steps timed
//     single-token steps, each computing the full logits and sampling greedily; prints the mean
//     over the steps and the median step (the machine is shared: a descheduled ggml thread stalls
//     every barrier of a step, so single steps can take several times the median).
// Token ids are fed directly (seeded random ids), never tokenized text.
//
// Usage (from bench/peers, after `npm ci`):
//   node llamacpp_bench.mjs --model /work/peers-tmp/llama3-8b-2l-f32.gguf --kv f32 --threads 2
//   node llamacpp_bench.mjs --model /work/peers-tmp/llama3-8b-2l-bf16.gguf --kv bf16 --threads 2
// Options: --prompt_lengths 512,512,2048,2048  --decode_prompt 2048  --decode_steps 32
//          --kv f32|f16|bf16 (KV cache type; llama.cpp's default is f16)  --flash_attn 0|1
import {execSync} from "node:child_process";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

function arg(name, def) {
    const i = process.argv.indexOf("--" + name);
    return i >= 0 ? process.argv[i + 1] : def;
}

const modelPath = arg("model");
if (!modelPath) {
    console.error("usage: node llamacpp_bench.mjs --model FILE.gguf [--threads 2] [--kv f32] ...");
    process.exit(2);
}
const threads = Number(arg("threads", "2"));
const kv = arg("kv", "f32").toUpperCase();
const flashAttention = arg("flash_attn", "0") === "1";
const lengths = arg("prompt_lengths", "512,512,2048,2048").split(",").filter(Boolean).map(Number);
const decodePrompt = Number(arg("decode_prompt", "2048"));
const decodeSteps = Number(arg("decode_steps", "32"));
const VOCAB = 128256;

const load = () => { try { return execSync("uptime").toString().trim(); } catch { return "?"; } };
const now = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");

// Seeded ids (xorshift32), avoiding the 259 special/byte ids.
let state = 12345;
function randomTokens(n) {
    const out = [];
    for (let i = 0; i < n; i++) {
        state ^= state << 13; state >>>= 0;
        state ^= state >>> 17;
        state ^= state << 5; state >>>= 0;
        out.push(259 + (state % (VOCAB - 259)));
    }
    return out;
}

const logs = [];
const llama = await getLlama({
    gpu: false,
    build: "never",
    maxThreads: threads,
    logLevel: LlamaLogLevel.debug,
    logger: (level, message) => {
        const m = String(message).trim();
        if (/backend|CPU_REPACK|CPU : |system_info|n_threads|flash_attn|n_ubatch|n_batch|type +[a-z0-9_]+: +\d+ tensors|file type|model size|causal_attn|cache_k|llama_kv_cache|failed|error/i.test(m))
            logs.push(m);
    }
});
console.log(`# llamacpp_bench: node-llama-cpp 3.21.1 (llama.cpp ${llama.llamaCppRelease?.release ?? "?"}), ` +
    `gpu ${llama.gpu}, threads ${threads}, KV ${kv}, flash attention ${flashAttention}`);
console.log(`# model ${modelPath}`);
console.log(`# start ${now()} load: ${load()}`);

let t0 = performance.now();
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: true});
console.log(`# loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s, size ${(model.size / 1e9).toFixed(2)} GB, ` +
    `train ctx ${model.trainContextSize}`);
const maxPrompt = Math.max(...lengths, decodePrompt);
const context = await model.createContext({
    contextSize: maxPrompt + decodeSteps + 64,
    batchSize: maxPrompt,  // node-llama-cpp sets n_ubatch = n_batch: one llama_decode per prompt
    threads,
    sequences: 1,
    flashAttention,
    experimentalKvCacheKeyType: kv,
    experimentalKvCacheValueType: kv,
});
const seq = context.getSequence();

console.log("\n| run | prompt tokens | seconds | tok/s |\n|---|---:|---:|---:|");
for (let i = 0; i < lengths.length; i++) {
    const toks = randomTokens(lengths[i]);
    await seq.clearHistory();
    t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(toks);
    const s = (performance.now() - t0) / 1000;
    console.log(`| prefill ${i + 1} | ${lengths[i]} | ${s.toFixed(3)} | ${(lengths[i] / s).toFixed(1)} |`);
}

await seq.clearHistory();
const prompt = randomTokens(decodePrompt);
t0 = performance.now();
await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
const pre = (performance.now() - t0) / 1000;
const it = seq.evaluate(prompt.slice(-1), {temperature: 0});
let r = await it.next();  // untimed first step: the last prompt token, full logits, greedy sample
let steps = 0;
const stepMs = [];
t0 = performance.now();
while (steps < decodeSteps) {
    const ts = performance.now();
    r = await it.next();
    if (r.done) break;
    stepMs.push(performance.now() - ts);
    steps++;
}
const ds = (performance.now() - t0) / 1000;
await it.return();
const sorted = [...stepMs].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)];
console.log("\n| decode | context | timed steps | ms/token (mean) | tok/s (mean) | median ms | min ms | tok/s at median |\n" +
    "|---|---:|---:|---:|---:|---:|---:|---:|");
console.log(`| batch 1 | ${decodePrompt} | ${steps} | ${(1000 * ds / steps).toFixed(1)} | ${(steps / ds).toFixed(2)} | ` +
    `${median.toFixed(1)} | ${sorted[0].toFixed(1)} | ${(1000 / median).toFixed(2)} |`);
console.log(`(per-step ms: ${stepMs.map((x) => x.toFixed(0)).join(" ")})`);
console.log(`(prefill before decode: ${decodePrompt - 1} tokens in ${pre.toFixed(3)} s)`);
console.log(`# end ${now()} load: ${load()}`);
console.log("\n## llama.cpp log lines (selected)\n");
for (const l of [...new Set(logs)]) console.log("    " + l);
await context.dispose();
await model.dispose();
await llama.dispose();
