// The console's entry point: the key, the model picker, the form, the balance and the task list.

import { api, forgetKey, saveKey, savedKey } from "./api.js";
import { banner } from "./dom.js";
import { RequestForm } from "./form.js";
import { TaskList } from "./tasks.js";

const $ = (id) => document.getElementById(id);

const form = new RequestForm($("fields"));
const tasks = new TaskList($("tasks"), $("tasks-empty"), { onFinished: () => showBalance() });
const schemas = new Map();
let models = [];

async function showBalance() {
  try {
    const b = await api.balance();
    $("balance").textContent = b.unlimited_quota
      ? "Balance: unlimited"
      : `Balance: ${b.remain_balance} (used ${b.used_balance})`;
  } catch {
    $("balance").textContent = "";
  }
}

async function connect() {
  $("key-status").textContent = "Checking the key…";
  try {
    models = (await api.models()).data;
  } catch (err) {
    $("key-status").textContent = err.status === 401 ? `This key was not accepted: ${err.message}` : err.message;
    return;
  }
  $("key-status").textContent = "Key accepted.";
  banner("");
  const picker = $("model");
  const previous = picker.value;
  picker.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
  if (models.some((m) => m.id === previous)) picker.value = previous;
  picker.disabled = false;
  await pickModel();
  showBalance();
  tasks.start();
}

async function pickModel() {
  const id = $("model").value;
  const model = models.find((m) => m.id === id);
  $("model-summary").textContent = model ? `${model.description} (served by ${model.providers.join(", ")})` : "";
  $("submit").disabled = true;
  try {
    if (!schemas.has(id)) schemas.set(id, (await api.schema(id)).input_schema);
  } catch (err) {
    banner(err.message);
    return;
  }
  if ($("model").value !== id) return; // the user picked another model meanwhile
  form.build(schemas.get(id));
  $("submit").disabled = false;
}

async function submit(event) {
  event.preventDefault();
  form.clearErrors();
  banner("");
  const button = $("submit");
  button.disabled = true;
  try {
    const answer = await api.submit({ model: $("model").value, ...form.values() });
    tasks.upsert(answer.data);
    banner(`Submitted ${answer.data.id}.`, "info");
    showBalance();
  } catch (err) {
    // The server names the field at fault in `param`; its message (which names it too) goes next
    // to that field and, for those who miss it there, in the banner.
    form.showError(err.param, err.message);
    banner(err.message);
  } finally {
    button.disabled = false;
  }
}

function forget() {
  forgetKey();
  $("api-key").value = "";
  $("key-status").textContent = "Key forgotten: it is no longer stored in this browser.";
  $("balance").textContent = "";
  $("model").replaceChildren();
  $("model").disabled = true;
  $("model-summary").textContent = "";
  $("fields").replaceChildren();
  $("submit").disabled = true;
  schemas.clear();
  tasks.clear();
  banner("");
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) {
    $("key-status").textContent = "Paste an API key first (from `vidgate keys create` or data/quickstart.key).";
    return;
  }
  saveKey(key);
  tasks.clear();
  connect();
});
$("forget-key").addEventListener("click", forget);
$("model").addEventListener("change", pickModel);
$("job-form").addEventListener("submit", submit);

if (savedKey()) {
  $("api-key").value = savedKey();
  connect();
}
