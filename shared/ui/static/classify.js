// The try-it page: pick, drop or paste photos (or draw), POST each to the gateway, show the answer in words.
"use strict";

(function () {
  const dropzone = document.getElementById("dropzone");
  const fileInput = document.getElementById("file-input");
  const results = document.getElementById("results");
  const emptyNote = document.getElementById("results-empty");
  const clearResults = document.getElementById("clear-results");
  const predictUrl = dropzone.dataset.predictUrl;
  const maxBytes = Number(dropzone.dataset.maxBytes);
  const IMAGE_EXT = /\.(jpe?g|png|webp|bmp|gif|tiff?)$/i;
  const PARALLEL = 2; // a few at once keeps the page responsive without flooding the members
  const PART_LABELS = JSON.parse(dropzone.dataset.partLabels || "{}"); // {kind: label}, from the extractor registry

  // --- input: picker, drag and drop, paste ---------------------------------
  fileInput.addEventListener("change", () => {
    classifyFiles(Array.from(fileInput.files));
    fileInput.value = ""; // choosing the same file again should classify it again
  });
  ["dragenter", "dragover"].forEach((type) =>
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("is-over");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    dropzone.addEventListener(type, () => dropzone.classList.remove("is-over"))
  );
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    classifyFiles(Array.from(event.dataTransfer.files));
  });
  // A drop outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const files = Array.from(event.clipboardData ? event.clipboardData.files : []);
    if (files.length) {
      event.preventDefault();
      classifyFiles(files.map((f, i) => namedPaste(f, i)));
    }
  });
  clearResults.addEventListener("click", () => {
    results.replaceChildren();
    clearResults.hidden = true;
    emptyNote.hidden = false;
  });

  function namedPaste(file, index) {
    if (file.name && file.name !== "image.png") return file;
    return new File([file], `pasted-${Date.now()}-${index}.${(file.type.split("/")[1] || "png")}`, { type: file.type });
  }

  // --- classification queue -------------------------------------------------
  const queue = [];
  let running = 0;

  function classifyFiles(files) {
    files.forEach((file) => queue.push({ blob: file, name: file.name || "photo", card: addCard(file) }));
    pump();
  }

  window.classifyBlob = function (blob, name) {
    queue.push({ blob, name, card: addCard(blob, name) });
    pump();
  };

  function pump() {
    while (running < PARALLEL && queue.length) {
      const job = queue.shift();
      running += 1;
      classifyOne(job).finally(() => {
        running -= 1;
        pump();
      });
    }
  }

  async function classifyOne({ blob, name, card }) {
    const problem = checkFile(blob, name);
    if (problem) return showError(card, problem.title, problem.detail);
    let response;
    try {
      response = await (window.authFetch || fetch)(predictUrl, {
        method: "POST",
        headers: { "Content-Type": blob.type || "application/octet-stream", "X-Source": "ui", Accept: "application/json" },
        body: blob,
      });
    } catch (err) {
      return showError(card, "The service could not be reached.", "Check that the gateway is running, then try again.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok || !body || body.error) return showError(card, ...describeFailure(response.status, body));
    showResult(card, body);
  }

  function checkFile(blob, name) {
    const looksImage = blob.type ? blob.type.startsWith("image/") : IMAGE_EXT.test(name);
    if (!looksImage) {
      return {
        title: "Unsupported file.",
        detail: `“${name}” is ${blob.type ? "a " + blob.type + " file" : "not an image"}; choose a JPEG, PNG, WebP, BMP, GIF or TIFF photo.`,
      };
    }
    if (blob.size === 0) return { title: "Empty file.", detail: `“${name}” has no bytes; choose another photo.` };
    if (blob.size > maxBytes) {
      return {
        title: "File too large.",
        detail: `“${name}” is ${formatBytes(blob.size)}; the limit is ${formatBytes(maxBytes)}. Make it smaller and try again.`,
      };
    }
    return null;
  }

  function describeFailure(status, body) {
    let message = body && body.error ? String(body.error.message || "") : `The service answered with HTTP ${status}.`;
    if (!/[.!?]$/.test(message)) message += ".";
    const code = body && body.error ? body.error.code : "";
    if (status === 415) return ["Unsupported file.", message];
    if (status === 413) return ["File too large.", message];
    if (status === 400 || status === 422) return ["The photo could not be read.", message];
    if (status === 503) return ["The service is unavailable right now.", `${message} Try again in a moment.`];
    if (status === 504) return ["The service took too long to answer.", `${message} Try again in a moment.`];
    if (status >= 500) return [`The service failed (${code || "HTTP " + status}).`, message];
    return [`The request was refused (HTTP ${status}).`, message];
  }

  // --- rendering --------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    });
    children.flat().forEach((child) => child != null && node.append(child));
    return node;
  }

  function addCard(blob, name) {
    name = name || blob.name || "photo";
    const noPreview = () => el("div", { class: "result-preview result-preview-none", text: "No preview" });
    let preview = noPreview();
    if (blob.type && blob.type.startsWith("image/")) {
      preview = el("img", { class: "result-preview", alt: `Preview of ${name}` });
      preview.addEventListener("error", () => preview.replaceWith(noPreview()), { once: true });
      preview.src = URL.createObjectURL(blob);
    }
    const card = el(
      "li",
      { class: "result is-pending", "aria-busy": "true" },
      preview,
      el("div", { class: "result-body" },
        el("p", { class: "result-name", text: name }),
        el("p", { class: "result-summary", text: "Classifying…" }),
        el("div", { class: "result-detail" }))
    );
    results.prepend(card);
    emptyNote.hidden = true;
    clearResults.hidden = false;
    return card;
  }

  function finish(card, summary, detail) {
    card.classList.remove("is-pending");
    card.removeAttribute("aria-busy");
    card.querySelector(".result-summary").replaceChildren(...summary);
    card.querySelector(".result-detail").replaceChildren(...detail);
  }

  function showError(card, title, detail) {
    card.classList.add("is-error");
    finish(card, [el("span", { class: "failed", text: "Not classified" })], [
      el("div", { class: "notice notice-error", role: "alert" }, el("strong", { text: title }), el("span", { text: detail })),
    ]);
  }

  function showResult(card, body) {
    const summary = [
      el("span", { class: "label", text: body.label }),
      " ",
      el("span", { class: "proba", text: formatPct(body.proba) }),
    ];
    const detail = [
      el("p", { class: "result-meta", text: metaLine(body) }),
      ...warnings(body),
      probaTable(body),
    ];
    finish(card, summary, detail);
    card.dataset.label = body.label;
    card.dataset.requestId = body.request_id || "";
  }

  function metaLine(body) {
    const parts = [`${Math.round(body.latency_ms || 0)} ms`];
    if (body.request_id) parts.push(`request ${body.request_id}`);
    if (body.class_id) parts.push(`class_id ${body.class_id[0]}`);
    return parts.join(" · ");
  }

  function warnings(body) {
    const out = [];
    if (body.degraded) {
      const failed = Object.entries(body.failed || {}).map(([name, why]) => `${name} (${why})`).join(", ");
      out.push(el("div", { class: "notice notice-warn", role: "alert" },
        el("strong", { text: "Degraded answer." }),
        el("span", { text: `Made without ${failed || "some members"}; the result may be less accurate.` })));
    }
    if (body.synthetic_weights) {
      const parts = Object.entries(body.weights || {});
      const fake = parts.filter(([, what]) => what === "synthetic").map(([kind]) => PART_LABELS[kind] || kind);
      const which = fake.length ? `${fake.join(" and ")} ${fake.length > 1 ? "run" : "runs"}` : "Some parts run";
      out.push(el("div", { class: "notice notice-synthetic" },
        el("strong", { text: `${weightsNote(body.weights) || "Synthetic weights"}.` }),
        el("span", { text: `${which} on randomly initialised weights (offline test setup): what rests on them says nothing about real accuracy.` })));
    }
    return out;
  }

  // As pages.py's weights_note: "CLIP: synthetic weights · OCR: real", synthetic parts first.
  function weightsNote(weights) {
    const parts = Object.entries(weights || {}).sort((a, b) => (b[1] === "synthetic") - (a[1] === "synthetic"));
    return parts.map(([kind, what]) => `${PART_LABELS[kind] || kind}: ${what === "synthetic" ? "synthetic weights" : "real"}`).join(" · ");
  }

  function probaTable(body) {
    const members = Object.entries(body.members || {});
    const order = Object.entries(body.probas || {}).sort((a, b) => b[1] - a[1]).map(([label]) => label);
    const head = el("tr", {},
      el("th", { scope: "col", text: "Class" }),
      el("th", { scope: "col" }, "Stack", el("span", { class: "sub", text: "final" })),
      members.map(([name, m]) => el("th", { scope: "col" }, name, memberNote(m))));
    const rows = order.map((label, i) => el("tr", { class: i === 0 ? "is-top" : "" },
      el("th", { scope: "row", text: label }),
      el("td", {}, barCell(body.probas[label], "")),
      members.map(([, m]) => el("td", {}, m.ok === false ? el("span", { class: "failed", text: "—" }) : barCell(memberProba(m, label, order), "member")))));
    return el("div", { class: "probas-wrap" },
      el("table", { class: "probas" },
        el("caption", { class: "visually-hidden", text: "Probability of every class: the stack and each member side by side" }),
        el("thead", {}, head), el("tbody", {}, rows)));
  }

  function memberNote(m) {
    if (m.ok !== false) return el("span", { class: "sub", text: `${Math.round(m.latency_ms || 0)} ms` });
    // The full reason is in the degraded notice above; the column keeps a short one so the table stays narrow.
    const reason = m.error || "no answer";
    const short = reason.length > 32 ? reason.slice(0, 30) + "…" : reason;
    return el("span", { class: "sub failed", title: reason, text: `failed: ${short}` });
  }

  function memberProba(member, label, order) {
    const probas = member.probas;
    if (!probas) return null;
    if (Array.isArray(probas)) return probas[order.indexOf(label)];
    return probas[label];
  }

  function barCell(p, kind) {
    const width = p == null ? 0 : Math.max(0, Math.min(100, p * 100));
    return el("div", { class: "cell-bar" },
      el("div", { class: `bar ${kind}`, "aria-hidden": "true" }, el("span", { style: `width:${width.toFixed(1)}%` })),
      el("span", { class: "pct", text: formatPct(p) }));
  }

  function formatPct(p) {
    return p == null ? "—" : `${(p * 100).toFixed(1)}%`;
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} bytes`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1048576).toFixed(1)} MB`;
  }

  // --- service status: warn up front when the gateway is not ready -------------
  function readinessReason(body) {
    if (body.error) return typeof body.error === "string" ? body.error : body.error.message || "";
    if (body.draining) return "it is shutting down";
    if (body.loaded === false) return "it is still loading its models";
    if (body.warmed_up === false) return "it is warming up";
    return "";
  }

  fetch("/v2/health/ready", { headers: { Accept: "application/json" } })
    .then(async (response) => {
      if (response.ok) return;
      let detail = "";
      try {
        detail = readinessReason(await response.json());
      } catch (err) { /* not JSON: the status code says enough */ }
      const status = document.getElementById("service-status");
      status.className = "notice notice-warn";
      status.textContent = `The service is not ready (HTTP ${response.status})${detail ? ": " + detail : ""}. Predictions may fail or be degraded.`;
      status.hidden = false;
    })
    .catch(() => {});
})();

// --- drawing pad --------------------------------------------------------------
(function () {
  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const ink = document.getElementById("ink");
  const paper = document.getElementById("paper");
  const pen = document.getElementById("pen");
  let drawing = false;
  let dirty = false;

  function clearPad() {
    ctx.fillStyle = paper.value;
    ctx.fillRect(0, 0, pad.width, pad.height);
    dirty = false;
  }

  function point(event) {
    const rect = pad.getBoundingClientRect();
    return [(event.clientX - rect.left) * (pad.width / rect.width), (event.clientY - rect.top) * (pad.height / rect.height)];
  }

  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    pad.setPointerCapture(event.pointerId);
    ctx.strokeStyle = ink.value;
    ctx.lineWidth = Number(pen.value);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...point(event));
    ctx.lineTo(...point(event)); // a tap leaves a dot
    ctx.stroke();
    dirty = true;
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    ctx.lineTo(...point(event));
    ctx.stroke();
  });
  ["pointerup", "pointercancel", "pointerleave"].forEach((type) => pad.addEventListener(type, () => { drawing = false; }));
  pen.addEventListener("input", () => pen.setAttribute("aria-valuetext", `${pen.value} pixels`));
  paper.addEventListener("change", clearPad);
  document.getElementById("clear").addEventListener("click", clearPad);
  document.getElementById("classify-drawing").addEventListener("click", () => {
    const status = document.getElementById("draw-status");
    if (!dirty) {
      status.textContent = "The drawing is empty: draw something first, then classify it.";
      return;
    }
    status.textContent = "Drawing sent; its result is at the top of the results.";
    pad.toBlob((blob) => window.classifyBlob(blob, `drawing-${new Date().toISOString().slice(11, 19)}.png`), "image/png");
  });
  clearPad();
})();
