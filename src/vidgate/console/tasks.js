// The live task list: `GET /v1/tasks` once a second while any task is pending or processing,
// and not at all when everything is finished. Items are updated in place and never moved, so a
// playing <video> is not interrupted by a refresh.

import { api } from "./api.js";
import { banner, h } from "./dom.js";

const ACTIVE = new Set(["pending", "processing"]);
const POLL_MS = 1000;

function when(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

export class TaskList {
  constructor(list, empty, { onFinished = () => {} } = {}) {
    this.list = list;
    this.empty = empty;
    this.onFinished = onFinished;
    this.tasks = new Map(); // id -> last task object seen
    this.timer = null;
    this.running = false;
  }

  clear() {
    this.stop();
    this.tasks.clear();
    this.list.replaceChildren();
    this.empty.hidden = false;
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.running = false;
  }

  /** Fetch now, then keep polling while something is active. */
  start() {
    this.running = true;
    this.schedule(0);
  }

  schedule(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), delay);
  }

  async tick() {
    this.timer = null;
    let delay = POLL_MS;
    try {
      const page = await api.tasks();
      for (const task of page.data) this.upsert(task);
    } catch (err) {
      if (err.status === 401) {
        banner(err.message);
        this.stop();
        return;
      }
      if (err.status === 429) delay = Math.max(err.retryAfter, 1) * 1000;
      else banner(err.message);
    }
    const active = [...this.tasks.values()].some((t) => ACTIVE.has(t.status));
    if (this.running && active && this.timer === null) this.schedule(delay);
  }

  upsert(task) {
    const before = this.tasks.get(task.id);
    this.tasks.set(task.id, task);
    this.empty.hidden = true;
    let item = this.list.querySelector(`li[data-id="${CSS.escape(task.id)}"]`);
    if (!item) {
      item = this.create(task);
      // Newest first: by `created` (seconds), then by id (ULIDs sort by time within a second).
      const older = (li) =>
        Number(li.dataset.created) < task.created ||
        (Number(li.dataset.created) === task.created && li.dataset.id < task.id);
      const later = [...this.list.children].find(older);
      this.list.insertBefore(item, later || null);
    }
    this.render(item, task);
    if (before && ACTIVE.has(before.status) && !ACTIVE.has(task.status)) this.onFinished(task);
    if (ACTIVE.has(task.status) && this.running && this.timer === null) this.schedule(POLL_MS);
  }

  create(task) {
    const cancel = h("button", { type: "button", class: "secondary cancel" }, "Cancel");
    cancel.addEventListener("click", () => this.cancel(task.id, cancel));
    return h(
      "li",
      { class: "task", "data-id": task.id, "data-created": task.created },
      h("div", { class: "task-head" }, h("span", { class: "status" }), h("code", { class: "task-id" }, task.id)),
      h("p", { class: "task-meta hint" }),
      h("div", { class: "task-progress" },
        h("progress", { max: 100, value: 0, "aria-label": `Progress of ${task.id}` }),
        h("span", { class: "pct" }),
      ),
      h("p", { class: "task-error", role: "alert" }),
      h("div", { class: "task-result" }),
      h("div", { class: "task-actions" }, cancel),
    );
  }

  render(item, task) {
    item.dataset.status = task.status;
    const status = item.querySelector(".status");
    status.textContent = task.status;
    status.className = `status status-${task.status}`;
    const meta = [task.model, task.provider, `submitted ${when(task.created)}`];
    if (task.cost) meta.push(`cost ${task.cost}`);
    if (ACTIVE.has(task.status) && task.estimated_time) meta.push(`about ${task.estimated_time} s`);
    if (task.actual_time !== undefined) meta.push(`took ${task.actual_time} s`);
    item.querySelector(".task-meta").textContent = meta.join(" · ");
    item.querySelector("progress").value = task.progress ?? 0;
    item.querySelector(".pct").textContent = `${task.progress ?? 0}%`;
    item.querySelector(".task-error").textContent =
      task.status === "failed" && task.error ? `Failed: ${task.error.message}` : "";
    item.querySelector(".cancel").hidden = !ACTIVE.has(task.status);
    const result = item.querySelector(".task-result");
    if (task.status === "completed" && !result.dataset.shown) {
      result.dataset.shown = "1";
      result.replaceChildren(...this.result(task));
    }
  }

  result(task) {
    const video = task.result?.videos?.[0];
    const url = video?.url?.[0];
    if (!url) return [h("p", { class: "hint" }, "The result has expired and was deleted.")];
    const facts = [`${video.width}×${video.height}`, `${video.duration} s`, `${video.fps} fps`];
    if (video.has_audio) facts.push("audio");
    return [
      h("video", {
        controls: true,
        preload: "metadata",
        playsinline: true,
        src: url,
        poster: task.result.thumbnail_url || null,
        "aria-label": `Result of ${task.id}`,
      }),
      h("p", { class: "hint" },
        h("a", { class: "download", href: url, download: `${task.id}.mp4` }, "Download MP4"),
        ` · ${facts.join(" · ")} · link valid until ${new Date(video.expires_at * 1000).toLocaleString()}`,
      ),
    ];
  }

  async cancel(id, button) {
    button.disabled = true;
    try {
      const answer = await api.cancel(id);
      this.upsert(answer.data);
      this.schedule(POLL_MS);
    } catch (err) {
      banner(err.message);
    } finally {
      button.disabled = false;
    }
  }
}
