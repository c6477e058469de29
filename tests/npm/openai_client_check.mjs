// File: tests/npm/openai_client_check.mjs
// Drives a DapQ Serve coordinator's HTTP API with the official OpenAI client (npm `openai`), as
// a user's program would, and prints one JSON object with what each call returned; the C++
// test tests/e2e/http_api_test.cc asserts on it.
// Usage: node openai_client_check.mjs <base_url> <model> <prompt> <max_tokens> <stop>
import OpenAI from "openai";

const [baseURL, model, prompt, maxTokensArg, stop] = process.argv.slice(2);
const maxTokens = Number(maxTokensArg);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 120000 });
const out = {};

function describeError(e) {
  if (e instanceof OpenAI.APIError) {
    return { status: e.status, type: e.type ?? null, code: e.code ?? null, param: e.param ?? null,
             message: e.message };
  }
  return { status: -1, message: String(e) };
}

async function collectCompletionStream(params) {
  const stream = await client.completions.create({ ...params, stream: true,
                                                  stream_options: { include_usage: true } });
  let text = "", finish = null, chunks = 0, usage = null;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].text;
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, finish_reason: finish, chunks, usage };
}

const greedy = { model, prompt, max_tokens: maxTokens, temperature: 0 };
out.models = (await client.models.list()).data.map((m) => m.id);

const c = await client.completions.create(greedy);
out.completion = { text: c.choices[0].text, finish_reason: c.choices[0].finish_reason,
                   usage: c.usage, object: c.object };
out.completion_stream = await collectCompletionStream(greedy);

const ids = await client.completions.create({ ...greedy, prompt: [1, 403, 407] });
out.token_id_prompt = { text: ids.choices[0].text, usage: ids.usage };

const stopped = await client.completions.create({ ...greedy, stop: [stop] });
out.stop = { text: stopped.choices[0].text, finish_reason: stopped.choices[0].finish_reason };
out.stop_stream = await collectCompletionStream({ ...greedy, stop: stop });

const compressed = await client.completions.create({
  ...greedy, kv_compression: { method: "dapq", budget: 4 } });
out.compressed = { text: compressed.choices[0].text, usage: compressed.usage };

const messages = [{ role: "system", content: "You tell stories." },
                  { role: "user", content: prompt }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: maxTokens,
                                                   temperature: 0 });
out.chat = { text: chat.choices[0].message.content, role: chat.choices[0].message.role,
             finish_reason: chat.choices[0].finish_reason, usage: chat.usage,
             object: chat.object };
{
  const stream = await client.chat.completions.create({ model, messages, max_tokens: maxTokens,
                                                       temperature: 0, stream: true });
  let text = "", role = null, finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta.role) role = choice.delta.role;
    if (choice.delta.content) text += choice.delta.content;
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  out.chat_stream = { text, role, finish_reason: finish };
}

// A stream the client abandons after its first chunk: the SDK aborts the HTTP request.
{
  const stream = await client.completions.create({ ...greedy, max_tokens: 400, stream: true });
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    break;
  }
  out.cancelled_stream = { chunks_read: chunks };
}

const bad = {};
for (const [name, params] of Object.entries({
  unknown_model: { ...greedy, model: "no-such-model" },
  negative_max_tokens: { ...greedy, max_tokens: -5 },
  over_long_prompt: { ...greedy, prompt: "Once upon a time there was a cat. ".repeat(120) },
})) {
  try {
    await client.completions.create(params);
    bad[name] = { status: 200 };
  } catch (e) {
    bad[name] = describeError(e);
  }
}
out.errors = bad;
console.log(JSON.stringify(out));
