// The API client: every call goes to this origin with `Authorization: Bearer <key>`.
// The key lives in localStorage only; nothing else leaves the page.

const KEY_STORAGE = "vidgate.apiKey";

export function savedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function saveKey(key) {
  localStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
}

// Server messages come in the browser's language when the API has it (en, zh, ko, ja).
export const language = (() => {
  const first = (navigator.language || "en").slice(0, 2).toLowerCase();
  return ["en", "zh", "ko", "ja"].includes(first) ? first : "en";
})();

/** An error answer of the API, `{"error": {code, message, type, param}}`, or a network failure. */
export class ApiError extends Error {
  constructor(status, message, { type = "", param = null, retryAfter = 0 } = {}) {
    super(message);
    this.status = status;
    this.type = type;
    this.param = param;
    this.retryAfter = retryAfter;
  }
}

async function call(method, path, { json, form, headers = {}, query = {} } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries({ ...query, language })) {
    if (value !== undefined && value !== null) url.searchParams.set(name, value);
  }
  const init = { method, headers: { Authorization: `Bearer ${savedKey()}`, ...headers } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, `Cannot reach the server (${err.message}). Check your connection.`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): reported below from the status alone.
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    const message = error.message || `The server answered ${response.status} ${response.statusText}.`;
    throw new ApiError(response.status, message, {
      type: error.type,
      param: error.param ?? null,
      retryAfter: Number(response.headers.get("Retry-After")) || 0,
    });
  }
  return body;
}

// crypto.randomUUID exists only in secure contexts; a console on a LAN address is plain http.
function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export const api = {
  models: () => call("GET", "/v1/models"),
  schema: (model) => call("GET", "/v1/model-schema", { query: { model, operation: "video_generation" } }),
  balance: () => call("GET", "/v1/balance"),
  tasks: () => call("GET", "/v1/tasks", { query: { limit: 20 } }),
  cancel: (id) => call("POST", `/v1/tasks/${encodeURIComponent(id)}/cancel`),
  // The newer response version answers with the task itself, so it shows up in the list at once;
  // the idempotency key makes a retried click safe.
  submit: (body) =>
    call("POST", "/v1/videos/generations", {
      json: body,
      headers: { "X-APIMart-Response-Version": "2026-07-27", "Idempotency-Key": randomId() },
    }),
  upload: (file) => {
    const form = new FormData();
    form.append("file", file, file.name);
    return call("POST", "/v1/uploads/images", { form });
  },
};
