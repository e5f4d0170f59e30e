// The request form, generated from a model's JSON Schema (`GET /v1/model-schema`): enums become
// selects, integers number inputs with their limits, booleans checkboxes, strings text fields with
// a character counter, image URLs an upload control. Limits shown here are hints; the server's
// validation is the authority and its errors are shown next to the field they name.

import { api } from "./api.js";
import { h } from "./dom.js";

const IMAGE_TYPES = "image/png,image/jpeg,image/webp";

/** The schema of one property, with `anyOf: [X, null]` folded into X. */
function describe(name, prop, required) {
  const variants = (prop.anyOf || [prop]).filter((v) => v.type !== "null");
  const spec = { ...variants[0], ...prop, name, required, nullable: variants.length < (prop.anyOf || []).length };
  delete spec.anyOf;
  if (spec.const !== undefined && !spec.enum) spec.enum = [spec.const];
  if (spec.enum) spec.kind = "select";
  else if (spec.type === "boolean") spec.kind = "checkbox";
  else if (spec.type === "integer" || spec.type === "number") spec.kind = "number";
  else if (spec.type === "array" && spec.items && spec.items.format === "uri") spec.kind = "images";
  else if (spec.type === "string" && spec.format === "uri") spec.kind = "image";
  else if (spec.type === "string") spec.kind = (spec.maxLength || 0) > 200 ? "textarea" : "text";
  else spec.kind = "unsupported";
  return spec;
}

function limits(spec) {
  const parts = [];
  if (spec.kind === "number" && (spec.minimum !== undefined || spec.maximum !== undefined)) {
    parts.push(`${spec.minimum ?? "…"}–${spec.maximum ?? "…"}`);
  }
  if (spec.maxLength) parts.push(`at most ${spec.maxLength} characters`);
  if (spec.kind === "images") parts.push(`${spec.minItems ?? 0}–${spec.maxItems ?? "…"} images`);
  const obvious = spec.kind === "checkbox" || (spec.enum && spec.enum.length === 1);
  if (!obvious && spec.default !== undefined && spec.default !== null && spec.default !== "") {
    parts.push(`default ${spec.default}`);
  }
  return parts.join(" · ");
}

const chars = (text) => [...text].length; // code points, as the server counts them

export class RequestForm {
  constructor(container) {
    this.container = container;
    this.fields = new Map(); // name -> {spec, wrap, read()}
  }

  build(schema) {
    this.container.replaceChildren();
    this.fields.clear();
    const required = new Set(schema.required || []);
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      if (name === "model") continue;
      const spec = describe(name, prop, required.has(name));
      if (spec.kind === "unsupported") continue;
      const field = this.field(spec);
      this.fields.set(name, field);
      this.container.append(field.wrap);
    }
  }

  field(spec) {
    const id = `f-${spec.name}`;
    const error = h("p", { class: "field-error", id: `err-${spec.name}`, role: "alert" });
    const hint = h("p", { class: "hint", id: `hint-${spec.name}` }, [spec.description, limits(spec)].filter(Boolean).join(" — "));
    const label = h(
      "label",
      { for: id },
      spec.title || spec.name,
      " ",
      h("code", {}, spec.name),
      spec.required ? h("span", { class: "req", title: "required" }, " *") : null,
    );
    const common = { id, name: spec.name, "aria-describedby": `hint-${spec.name} err-${spec.name}`, "aria-required": spec.required ? "true" : null };
    const wrap = h("div", { class: `field field-${spec.kind}`, "data-name": spec.name });
    let read;
    if (spec.kind === "select") {
      const select = h("select", common, spec.enum.map((v) => h("option", { value: v }, v)));
      select.value = spec.default ?? spec.enum[0];
      wrap.append(label, select);
      read = () => (spec.required || select.value !== spec.default ? select.value : undefined);
    } else if (spec.kind === "checkbox") {
      const box = h("input", { ...common, type: "checkbox", checked: Boolean(spec.default) });
      wrap.append(h("div", { class: "check" }, box, label));
      read = () => (box.checked !== Boolean(spec.default) ? box.checked : undefined);
    } else if (spec.kind === "number") {
      const input = h("input", { ...common, type: "number", step: 1, min: spec.minimum, max: spec.maximum, inputmode: "numeric" });
      if (typeof spec.default === "number") input.value = spec.default;
      wrap.append(label, input);
      read = () => (input.value.trim() === "" ? undefined : Number(input.value));
    } else if (spec.kind === "text" || spec.kind === "textarea") {
      const input = spec.kind === "textarea" ? h("textarea", { ...common, rows: 3 }) : h("input", { ...common, type: "text" });
      input.value = spec.default ?? "";
      wrap.append(label, input);
      if (spec.maxLength) {
        const counter = h("span", { class: "counter", "aria-live": "off" });
        const update = () => {
          counter.textContent = `${chars(input.value)} / ${spec.maxLength}`;
          counter.classList.toggle("over", chars(input.value) > spec.maxLength);
        };
        input.addEventListener("input", update);
        update();
        wrap.append(counter);
      }
      read = () => (input.value === "" && !spec.required ? undefined : input.value);
    } else {
      read = this.imageControl(spec, common, label, wrap);
    }
    wrap.append(hint, error);
    return { spec, wrap, read };
  }

  // Image URL(s): a text area of URLs (one per line) that uploads fill in, with thumbnails.
  imageControl(spec, common, label, wrap) {
    const many = spec.kind === "images";
    const urls = h("textarea", { ...common, rows: many ? 2 : 1, placeholder: many ? "https://… (one URL per line)" : "https://…", spellcheck: "false" });
    const file = h("input", { type: "file", id: `u-${spec.name}`, accept: IMAGE_TYPES, multiple: many });
    const thumbs = h("ul", { class: "thumbs", "aria-label": `${spec.name} previews` });
    const status = h("span", { class: "hint", "aria-live": "polite" });
    const lines = () => urls.value.split("\n").map((s) => s.trim()).filter(Boolean);
    const show = () => {
      thumbs.replaceChildren(
        ...lines().map((url, i) => {
          const img = h("img", { src: url, alt: `${spec.name}[${i}]`, loading: "lazy" });
          img.addEventListener("error", () => img.replaceWith(h("span", { class: "no-preview" }, "no preview")));
          const drop = h("button", { type: "button", class: "secondary", "aria-label": `Remove ${spec.name}[${i}]` }, "×");
          drop.addEventListener("click", () => {
            urls.value = lines().filter((_, j) => j !== i).join("\n");
            show();
          });
          return h("li", {}, img, drop);
        }),
      );
    };
    // Previews follow typing: redrawn on blur instead, they would shift the page under the click
    // that caused the blur (the Generate button would move away from the pointer).
    let pending;
    urls.addEventListener("input", () => {
      clearTimeout(pending);
      pending = setTimeout(show, 300);
    });
    file.addEventListener("change", async () => {
      const chosen = [...file.files];
      file.value = "";
      this.clearErrors();
      for (const [n, one] of chosen.entries()) {
        status.textContent = `Uploading ${one.name} (${n + 1}/${chosen.length})…`;
        try {
          const uploaded = await api.upload(one);
          urls.value = many ? [...lines(), uploaded.url].join("\n") : uploaded.url;
          show();
        } catch (err) {
          this.showError(spec.name, `${one.name}: ${err.message}`);
        }
      }
      status.textContent = "";
    });
    const uploadLabel = h("label", { for: file.id, class: "upload-label" }, many ? "Upload images" : "Upload an image");
    wrap.append(label, urls, h("div", { class: "upload" }, uploadLabel, file, status), thumbs);
    return () => {
      const list = lines();
      if (!list.length) return undefined;
      return many ? list : list[0];
    };
  }

  values() {
    const body = {};
    for (const [name, field] of this.fields) {
      const value = field.read();
      if (value !== undefined) body[name] = value;
    }
    return body;
  }

  clearErrors() {
    for (const { wrap } of this.fields.values()) {
      wrap.querySelector(".field-error").textContent = "";
      wrap.classList.remove("invalid");
      for (const input of wrap.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    }
  }

  /** Shows `message` next to the field `param` names (`image_urls[2]` is `image_urls`); false if none. */
  showError(param, message) {
    const name = String(param || "").split(/[.[]/)[0];
    const field = this.fields.get(name);
    if (!field) return false;
    field.wrap.querySelector(".field-error").textContent = message;
    field.wrap.classList.add("invalid");
    const input = field.wrap.querySelector(`#f-${CSS.escape(name)}`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    return true;
  }
}
