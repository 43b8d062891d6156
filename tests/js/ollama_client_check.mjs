// Drives a running ferrite server with the official `ollama` JavaScript client, unchanged.
// Usage: node ollama_client_check.mjs BASE_URL MODEL ALIAS ENCODER
// Checks list, show, ps, chat and generate with and without streaming, embed, and that
// an unknown model rejects with the client's ResponseError (status 404).
import assert from "node:assert/strict";
import { Ollama } from "ollama";

const [baseUrl, model, alias, encoder] = process.argv.slice(2);
const client = new Ollama({ host: baseUrl });
const options = { num_predict: 6, temperature: 0, seed: 1 };

const list = await client.list();
const names = list.models.map((m) => m.name);
assert.ok(names.includes(`${model}:latest`) && names.includes(alias), String(names));
console.log(`ok list: ${names}`);

const show = await client.show({ model });
assert.ok(show.model_info["llama.context_length"] > 0);
console.log(`ok show: ${show.details.family}`);

const ps = await client.ps();
assert.ok(ps.models.some((m) => m.name === `${model}:latest`));
console.log("ok ps");

const gen = await client.generate({ model, prompt: "What is the capital of France?", options });
assert.ok(gen.done && gen.response.length > 0 && gen.eval_count > 0, JSON.stringify(gen));
console.log(`ok generate: ${JSON.stringify(gen.response)}`);

let parts = 0;
let text = "";
let last;
for await (const part of await client.generate({ model: alias, prompt: "Name a color.", stream: true, options })) {
  parts += 1;
  text += part.response;
  last = part;
}
assert.ok(parts >= 2 && last.done && text.length > 0, `${parts} ${text}`);
console.log(`ok generate stream via ${alias}: ${JSON.stringify(text)} in ${parts} parts`);

const messages = [{ role: "user", content: "Say hello." }];
const chat = await client.chat({ model: `${model}:latest`, messages, options });
assert.equal(chat.message.role, "assistant");
assert.ok(chat.message.content.length > 0 && chat.done);
let streamed = "";
for await (const part of await client.chat({ model, messages, stream: true, options })) {
  streamed += part.message.content;
}
assert.equal(streamed, chat.message.content);
console.log(`ok chat and chat stream: ${JSON.stringify(streamed)}`);

const emb = await client.embed({ model: encoder, input: ["first text", "second text"] });
assert.equal(emb.embeddings.length, 2);
assert.equal(emb.embeddings[0].length, 384);
console.log("ok embed: 2 x 384");

await assert.rejects(
  client.chat({ model: "no-such-model:7b", messages }),
  (err) => err.name === "ResponseError" && err.status_code === 404 && /not found/.test(err.error),
);
console.log("ok unknown model: ResponseError 404");
console.log("all ollama JavaScript client checks passed");
