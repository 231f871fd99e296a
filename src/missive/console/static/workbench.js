// The workbench: builds a Messages API request from the form, streams the reply (SSE over fetch), shows
// the call's usage and cost, and the same request as Python, TypeScript and curl.
(() => {
  const $ = (id) => document.getElementById(id);
  const models = Object.fromEntries(JSON.parse($("models-data").textContent).map((m) => [m.id, m]));
  const list = $("messages");
  let language = "python";
  let controller = null;

  const addMessage = (role, text = "") => {
    const box = document.createElement("div");
    box.className = "msg";
    box.dataset.role = role;
    box.innerHTML = `<header><span>${role}</span><button type="button" class="button ghost small">Remove</button></header><textarea rows="3"></textarea>`;
    box.querySelector("textarea").value = text;
    box.querySelector("textarea").placeholder = role === "user" ? "Write a message…" : "Prefill the assistant's answer…";
    box.querySelector("button").onclick = () => { box.remove(); showCode(); };
    list.appendChild(box);
    showCode();
    return box;
  };

  const toolsValue = () => {
    const text = $("tools").value.trim();
    if (!text) { $("tools-status").textContent = ""; return undefined; }
    try {
      const tools = JSON.parse(text);
      if (!Array.isArray(tools)) throw new Error("tools must be a JSON array");
      $("tools-status").textContent = `${tools.length} tool(s); JSON is valid (Check request asks the API)`;
      $("tools-status").className = "small muted";
      return tools;
    } catch (error) {
      $("tools-status").textContent = "Invalid JSON: " + error.message;
      $("tools-status").className = "small bad-text";
      throw error;
    }
  };

  const buildRequest = (stream) => {
    const body = { model: $("model").value, max_tokens: Number($("max_tokens").value) || 1 };
    if ($("system").value.trim()) body.system = $("system").value;
    body.messages = [...list.querySelectorAll(".msg")].map((m) => ({ role: m.dataset.role, content: m.querySelector("textarea").value }));
    if ($("temperature").value !== "") body.temperature = Number($("temperature").value);
    let tools;
    try { tools = toolsValue(); } catch { tools = undefined; }
    if (tools) body.tools = tools;
    if ($("thinking").checked) body.thinking = { type: "enabled", budget_tokens: Number($("budget").value) || 1024 };
    if (stream) body.stream = true;
    return body;
  };

  const py = (value, indent) => JSON.stringify(value, null, 4).replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None").replace(/\n/g, "\n" + indent);
  const showCode = () => {
    const body = buildRequest(false);
    const base = location.origin;
    const args = Object.entries(body).map(([k, v]) => `    ${k}=${py(v, "    ")},`).join("\n");
    const code = {
      python: `import anthropic\n\nclient = anthropic.Anthropic(base_url="${base}")  # reads ANTHROPIC_API_KEY\n\nwith client.messages.stream(\n${args}\n) as stream:\n    for text in stream.text_stream:\n        print(text, end="", flush=True)\n`,
      typescript: `import Anthropic from "@anthropic-ai/sdk";\n\nconst client = new Anthropic({ baseURL: "${base}" }); // reads ANTHROPIC_API_KEY\n\nconst stream = client.messages.stream(${JSON.stringify(body, null, 2).replace(/\n/g, "\n")});\nstream.on("text", (text) => process.stdout.write(text));\nawait stream.finalMessage();\n`,
      curl: `curl ${base}/v1/messages \\\n  -H "x-api-key: $ANTHROPIC_API_KEY" \\\n  -H "anthropic-version: 2023-06-01" \\\n  -H "content-type: application/json" \\\n  -d '${JSON.stringify({ ...body, stream: true }, null, 2).replace(/'/g, "'\\''")}'\n`,
    };
    $("code").textContent = code[language];
  };

  const setState = (words, kind) => { $("state").textContent = words; $("state").className = "badge " + (kind || ""); };
  const showError = (message) => { $("bench-error").hidden = false; $("bench-error").textContent = message; };
  const usage = {};
  const showUsage = (model) => {
    const write = (usage.cache_creation_input_tokens || 0);
    for (const el of document.querySelectorAll("[data-u]")) el.textContent = (usage[el.dataset.u] ?? 0).toLocaleString();
    const price = models[model]?.price;
    if (!price) { $("cost").textContent = "$0 (free)"; return; }
    const usd = ((usage.input_tokens || 0) * price.input + (usage.output_tokens || 0) * price.output +
      (usage.cache_read_input_tokens || 0) * price.cache_read + write * price.cache_write) / 1e6;
    $("cost").textContent = "$" + usd.toFixed(6);
  };

  const endpoint = (path) => `${path}?workspace=${encodeURIComponent($("workspace").value)}`;
  const post = (path, body, signal) => fetch(endpoint(path), {
    method: "POST", signal, credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": window.missiveCsrf() },
    body: JSON.stringify(body),
  });
  const failure = async (response) => {
    if (response.status === 401) return "Your console session has ended. Reload the page and sign in again.";
    const text = await response.text();
    try { const e = JSON.parse(text).error; return `${response.status} ${e.type}: ${e.message}`; } catch { return `${response.status}: ${text.slice(0, 300)}`; }
  };

  const run = async (event) => {
    event.preventDefault();
    $("bench-error").hidden = true;
    let body;
    try { toolsValue(); body = buildRequest(true); } catch (error) { showError("tools: " + error.message); return; }
    for (const key of Object.keys(usage)) delete usage[key];
    $("reply").textContent = ""; $("reply").classList.remove("empty-reply");
    $("thinking-out").textContent = ""; $("thinking-out").hidden = true;
    $("stop-reason").textContent = "–";
    setState("waiting", "streaming");
    $("run").disabled = true; $("stop").hidden = false;
    controller = new AbortController();
    try {
      const response = await post("/console/workbench/messages", body, controller.signal);
      if (!response.ok) { showError(await failure(response)); setState("refused", "error"); return; }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let model = body.model;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const line = frame.split("\n").find((l) => l.startsWith("data: "));
          if (!line) continue;
          const event = JSON.parse(line.slice(6));
          if (event.type === "message_start") { Object.assign(usage, event.message.usage); model = event.message.model; setState("streaming", "streaming"); }
          else if (event.type === "content_block_start" && event.content_block.type === "tool_use") { $("reply").textContent += `\n[tool_use ${event.content_block.name}] `; }
          else if (event.type === "content_block_delta") {
            const d = event.delta;
            if (d.type === "text_delta") $("reply").textContent += d.text;
            else if (d.type === "thinking_delta") { $("thinking-out").hidden = false; $("thinking-out").textContent += d.thinking; }
            else if (d.type === "input_json_delta") $("reply").textContent += d.partial_json;
          } else if (event.type === "message_delta") { Object.assign(usage, event.usage); $("stop-reason").textContent = event.delta.stop_reason || "–"; }
          else if (event.type === "error") { showError(`${event.error.type}: ${event.error.message}`); }
          showUsage(model);
        }
      }
      setState("done", "done");
    } catch (error) {
      if (error.name === "AbortError") setState("stopped"); else { showError(String(error)); setState("error", "error"); }
    } finally {
      $("run").disabled = false; $("stop").hidden = true; controller = null;
    }
  };

  const check = async () => {
    $("bench-error").hidden = true;
    let body;
    try { toolsValue(); body = buildRequest(false); } catch (error) { showError("tools: " + error.message); return; }
    const response = await post("/console/workbench/check", body);
    if (!response.ok) { showError(await failure(response)); return; }
    const { input_tokens } = await response.json();
    $("tools-status").textContent = `The API accepts this request: ${input_tokens} input tokens.`;
    $("tools-status").className = "small ok-text";
    $("tools").closest("details").open = true;
  };

  $("bench-form").addEventListener("submit", run);
  $("bench-form").addEventListener("input", showCode);
  $("check").onclick = check;
  $("stop").onclick = () => controller?.abort();
  $("add-user").onclick = () => addMessage("user");
  $("add-assistant").onclick = () => addMessage("assistant");
  for (const tab of document.querySelectorAll(".tab")) {
    tab.onclick = (e) => { e.preventDefault(); language = tab.dataset.lang; document.querySelectorAll(".tab").forEach((t) => t.setAttribute("aria-selected", t === tab)); showCode(); };
  }
  addMessage("user", "Write a haiku about the sea.");
})();
