// The TypeScript SDK (@anthropic-ai/sdk 1.x, as installed by scripts/clients) against Missive.
// Reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY; prints one JSON object of observations and exits 0.
// tests/test_clients_sdks.py makes the assertions. NODE_MODULES may point at another node_modules.

const modules = process.env.NODE_MODULES
  ? new URL(`file://${process.env.NODE_MODULES.replace(/\/?$/, "/")}`)
  : new URL("../../.cache/clients/node/node_modules/", import.meta.url);
const { default: Anthropic, NotFoundError, BadRequestError } = await import(
  new URL("@anthropic-ai/sdk/index.mjs", modules).href
);
const { VERSION } = await import(new URL("@anthropic-ai/sdk/version.mjs", modules).href);

const MODEL = "claude-sonnet-4-6";
const HELLO = [{ role: "user", content: "Say hello in one short sentence." }];
const WEATHER = {
  name: "get_weather",
  description: "Get the current weather for a city.",
  input_schema: {
    type: "object",
    properties: { city: { type: "string" }, unit: { enum: ["celsius", "fahrenheit"] } },
    required: ["city", "unit"],
  },
};
const ASK = [{ role: "user", content: "What is the weather in Paris?" }];

const client = new Anthropic({ timeout: 60_000 });
const out = { sdk_version: VERSION };

// Runs one check; an exception is reported under the check's name instead of ending the script.
async function check(name, body) {
  try {
    out[name] = await body();
  } catch (error) {
    out[name] = { exception: `${error?.constructor?.name}: ${error?.message}` };
  }
}

function summary(message) {
  return {
    id: message.id,
    type: message.type,
    role: message.role,
    model: message.model,
    stop_reason: message.stop_reason,
    usage: message.usage,
    content: message.content,
  };
}

async function failure(request) {
  try {
    await request();
    return { raised: null };
  } catch (error) {
    return {
      raised: error.constructor.name,
      not_found: error instanceof NotFoundError,
      bad_request: error instanceof BadRequestError,
      status: error.status ?? null,
      type: error.type ?? null,
      error_type: error.error?.error?.type ?? null,
      body_type: error.error?.type ?? null,
      api_message: error.apiMessage ?? null,
      request_id: error.requestID ?? null,
    };
  }
}

await check("create", async () =>
  summary(await client.messages.create({ model: MODEL, max_tokens: 20, messages: HELLO })),
);

await check("stream", async () => {
  const stream = client.messages.stream({ model: MODEL, max_tokens: 20, messages: HELLO });
  const deltas = [];
  const events = [];
  stream.on("text", (delta) => deltas.push(delta));
  stream.on("streamEvent", (event) => events.push(event.type));
  const final = await stream.finalMessage();
  return { deltas, events, final: summary(final) };
});

await check("forced_tool", async () => {
  const stream = client.messages.stream({
    model: MODEL,
    max_tokens: 40,
    messages: ASK,
    tools: [WEATHER],
    tool_choice: { type: "tool", name: WEATHER.name },
  });
  const partials = [];
  const snapshots = [];
  const deltaTypes = [];
  const jsonByBlock = {}; // content block index -> its input_json_delta parts, joined
  stream.on("inputJson", (partial, jsonSnapshot) => {
    partials.push(partial);
    snapshots.push(jsonSnapshot);
  });
  stream.on("streamEvent", (event) => {
    if (event.type !== "content_block_delta") return;
    deltaTypes.push(event.delta.type);
    if (event.delta.type === "input_json_delta") {
      jsonByBlock[event.index] = (jsonByBlock[event.index] ?? "") + event.delta.partial_json;
    }
  });
  const final = await stream.finalMessage();
  const snapshot = snapshots.at(-1) ?? null;
  return { partials, snapshot, delta_types: deltaTypes, json_by_block: jsonByBlock, final: summary(final) };
});

await check("count_tokens", async () => {
  const params = { model: MODEL, messages: ASK, tools: [WEATHER] };
  const counted = await client.messages.countTokens(params);
  const created = await client.messages.create({ ...params, max_tokens: 4 });
  return { counted: counted.input_tokens, created: created.usage.input_tokens };
});

await check("models", async () => {
  const ids = [];
  for await (const model of client.models.list({ limit: 1 })) ids.push(model.id);
  const page = await client.models.list();
  return { ids, all: page.data.map((model) => model.id), first: page.data[0] };
});

await check("not_found", () =>
  failure(() => client.messages.create({ model: "no-such-model", max_tokens: 4, messages: HELLO })),
);

// `temperature` is not part of API version 2026-10-21, which this SDK speaks.
await check("bad_request", () =>
  failure(() => client.messages.create({ model: MODEL, max_tokens: 4, messages: HELLO, temperature: 0.5 })),
);

// A batch through `client.messages.batches`: create, poll, results (the SDK follows `results_url`), list,
// the beta namespace, cancel and delete.
await check("batches", async () => {
  const requests = [
    { custom_id: "ok", params: { model: MODEL, max_tokens: 4, messages: HELLO } },
    { custom_id: "too-long", params: { model: MODEL, max_tokens: 1_000_000, messages: HELLO } },
  ];
  const batch = await client.messages.batches.create({ requests });
  const deadline = Date.now() + 120_000;
  let polled = await client.messages.batches.retrieve(batch.id);
  while (polled.processing_status !== "ended") {
    if (Date.now() > deadline) throw new Error(`batch ${batch.id} did not end`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    polled = await client.messages.batches.retrieve(batch.id);
  }
  const results = {};
  for await (const line of await client.messages.batches.results(batch.id)) results[line.custom_id] = line.result;
  const listed = await client.messages.batches.list({ limit: 1 });
  const beta = await client.beta.messages.batches.retrieve(batch.id);
  // enough work that it cannot end before the cancel arrives (one short request sometimes did)
  const longer = Array.from({ length: 8 }, (_, i) => ({
    custom_id: `long-${i}`,
    params: { ...requests[0].params, max_tokens: 64 },
  }));
  const other = await client.messages.batches.create({ requests: longer });
  const canceled = await client.messages.batches.cancel(other.id);
  const deleted = await client.messages.batches.delete(batch.id);
  const gone = await failure(() => client.messages.batches.retrieve(batch.id));
  return {
    created: batch, ended: polled, results, listed_first: listed.data[0].id, beta: beta.processing_status,
    canceled, deleted, gone,
  };
});

console.log(JSON.stringify(out));
