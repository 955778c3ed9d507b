// The generate page: submit without reloading, follow jobs over a websocket,
// show queue position, progress, ETA and the live preview; cancel; results.
(function () {
  "use strict";
  const form = document.getElementById("generate-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const jobs = new Map(); // job id -> latest state (snapshot merged with events)
  let currentJob = null;
  let socket = null;
  let retryDelay = 500;

  function csrfToken() {
    return form.querySelector("input[name=csrfmiddlewaretoken]").value;
  }

  function clearErrors() {
    form.querySelectorAll("[data-errors-for]").forEach((ul) => (ul.innerHTML = ""));
    form.querySelectorAll(".has-error").forEach((el) => el.classList.remove("has-error"));
    const box = $("form-errors");
    box.hidden = true;
    box.innerHTML = "";
  }

  function showErrors(errors) {
    const box = $("form-errors");
    for (const [field, message] of Object.entries(errors)) {
      const text = message.charAt(0).toUpperCase() + message.slice(1);
      const list = form.querySelector(`[data-errors-for="${field}"]`);
      if (list) {
        const li = document.createElement("li");
        li.textContent = text;
        list.appendChild(li);
        list.closest(".field").classList.add("has-error");
      } else {
        const p = document.createElement("p");
        p.textContent = field === "__all__" ? text : `${field.replace(/_/g, " ")}: ${message}`;
        box.appendChild(p);
        box.hidden = false;
      }
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const button = $("generate-button");
    button.disabled = true;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({}));
      if (response.status === 202 && body.job) {
        currentJob = body.job.job;
        $("results").innerHTML = "";
        $("preview").hidden = true;
        apply(body.job);
      } else {
        showErrors(body.errors || { __all__: `The server answered ${response.status}.` });
      }
    } catch (error) {
      showErrors({ __all__: "Could not reach the server. Check your connection and try again." });
    } finally {
      button.disabled = false;
    }
  });

  $("cancel-button").addEventListener("click", async () => {
    const job = jobs.get(currentJob);
    if (!job) return;
    $("cancel-button").disabled = true;
    const response = await fetch(job.cancel_url, {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
      credentials: "same-origin",
    });
    if (response.ok) apply(await response.json());
  });

  $("random-seed").addEventListener("click", () => {
    $("id_seed").value = "";
  });

  const modelSelect = $("id_model");
  function applyModelLimits(resetDefaults) {
    const option = modelSelect.selectedOptions[0];
    if (!option || !option.dataset.maxWidth) return;
    $("id_width").max = option.dataset.maxWidth;
    $("id_height").max = option.dataset.maxHeight;
    $("id_steps").max = option.dataset.maxSteps;
    if (resetDefaults) {
      $("id_width").value = option.dataset.width;
      $("id_height").value = option.dataset.height;
      $("id_steps").value = option.dataset.steps;
      $("id_guidance_scale").value = option.dataset.guidance;
      $("id_autoguidance_scale").value = option.dataset.autoguidance;
      $("id_sampler").value = option.dataset.sampler;
    }
    $("id_clip_guidance").disabled = option.dataset.clip !== "1";
    // A model without a guide UNet refuses autoguidance; a disabled field is not posted (= off).
    $("id_autoguidance_scale").disabled = option.dataset.guide !== "1";
  }
  modelSelect.addEventListener("change", () => applyModelLimits(true));
  applyModelLimits(false);

  // --- PNG-info: load parameters from a dropped or chosen PNG -------------------
  const dropZone = $("drop-zone");
  async function importPng(file) {
    clearErrors();
    const body = new FormData();
    body.append("file", file);
    const response = await fetch(dropZone.dataset.url, {
      method: "POST", body, credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) { showErrors(data.errors || { __all__: "Could not read that file." }); return; }
    for (const [name, value] of Object.entries(data.fields)) {
      const input = form.elements.namedItem(name);
      if (input && !(input instanceof RadioNodeList)) input.value = value;
    }
    const clip = Number(data.fields.clip_guidance_scale || 0) > 0;
    $("id_clip_guidance").checked = clip;
    if (clip) form.querySelector(".advanced").open = true;
  }
  dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("dragging"); });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    if (event.dataTransfer.files.length) importPng(event.dataTransfer.files[0]);
  });
  $("png-file").addEventListener("change", (event) => { if (event.target.files.length) importPng(event.target.files[0]); });

  // --- live state ----------------------------------------------------------
  function apply(message) {
    const id = message.job;
    const known = jobs.get(id);
    if (message.type !== "generation.snapshot" && known && message.seq <= known.seq) return; // stale
    const state = Object.assign({}, known || {}, message);
    switch (message.type) {
      case "generation.queued": state.status = "queued"; break;
      case "generation.started": state.status = "running"; state.step = 0; state.position = null; break;
      case "generation.progress": state.status = "running"; break;
      case "generation.succeeded": state.status = "succeeded"; state.step = state.total; break;
      case "generation.failed": state.status = "failed"; state.error = message.message; break;
      case "generation.cancelled": state.status = "cancelled"; break;
    }
    jobs.set(id, state);
    renderList();
    if (id === currentJob) renderPanel(state);
  }

  const LABELS = { queued: "Queued", running: "Generating", succeeded: "Done", failed: "Failed", cancelled: "Cancelled" };

  function renderPanel(state) {
    const panel = $("job-panel");
    panel.hidden = false;
    panel.dataset.status = state.status;
    $("job-status").textContent = LABELS[state.status] || state.status;
    let detail = "";
    if (state.status === "queued" && state.position) {
      detail = `position ${state.position} in the queue` + (state.eta != null ? `, about ${Math.round(state.eta)} s` : "");
    } else if (state.status === "running" && state.total) {
      detail = `step ${state.step || 0} of ${state.total}` + (state.eta != null && state.step ? `, ${Math.round(state.eta)} s left` : "");
    }
    $("job-detail").textContent = detail;
    const percent = state.total ? Math.round((100 * (state.step || 0)) / state.total) : 0;
    $("progress-bar").style.width = (state.status === "succeeded" ? 100 : percent) + "%";
    panel.querySelector(".progress").setAttribute("aria-valuenow", String(percent));
    if (state.preview) {
      const img = $("preview");
      img.src = state.preview;
      img.hidden = false;
      img.dataset.step = String(state.step || 0);
    }
    $("cancel-button").hidden = !(state.status === "queued" || state.status === "running");
    $("cancel-button").disabled = false;
    const error = $("job-error");
    error.hidden = !state.error;
    error.textContent = state.error || "";
    // The finished image (or what an interrupted job kept) replaces the rough step preview.
    const hasImages = (state.status === "succeeded" || state.status === "cancelled") && state.images && state.images.length;
    $("preview").closest(".preview-frame").hidden = Boolean(hasImages);
    if (hasImages) renderResults(state.images);
  }

  function renderResults(images) {
    const results = $("results");
    results.innerHTML = "";
    for (const image of images) {
      const figure = document.createElement("figure");
      figure.className = "tile result";
      figure.dataset.image = image.id;
      figure.innerHTML = `<a href="${image.page}"><img src="${image.url}" alt="Generated image" width="${image.width}" height="${image.height}"></a>
        <figcaption><span class="tile-meta">seed ${image.seed}${image.clip_score != null ? " · CLIP " + image.clip_score.toFixed(1) : ""}</span>
        <span class="tile-actions"><button type="button" class="button small save-button">Save</button>
        <a class="button secondary small" href="${image.url}?download=1">Download</a>
        <a class="button secondary small" href="${form.action}?remix=${image.id}">Remix</a></span></figcaption>`;
      figure.querySelector(".save-button").addEventListener("click", async (event) => {
        const body = new URLSearchParams({ saved: "true" });
        const response = await fetch(`/images/${image.id}/save/`, {
          method: "POST", body, credentials: "same-origin",
          headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
        });
        if (response.ok) { event.target.textContent = "Saved"; event.target.disabled = true; }
      });
      results.appendChild(figure);
    }
  }

  function renderList() {
    const list = $("job-list");
    const recent = [...jobs.values()].sort((a, b) => b.job - a.job).slice(0, 10);
    if (!recent.length) return;
    list.innerHTML = "";
    for (const job of recent) {
      const li = document.createElement("li");
      li.dataset.job = job.job;
      const link = document.createElement("a");
      link.href = job.url || `/generations/${job.job}/`;
      link.textContent = (job.prompt || `Job ${job.job}`).slice(0, 60);
      const badge = document.createElement("span");
      badge.className = `badge status-${job.status}`;
      badge.textContent = LABELS[job.status] || job.status;
      li.append(link, " ", badge);
      list.appendChild(li);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/generations/`);
    socket.addEventListener("open", () => { retryDelay = 500; });
    socket.addEventListener("message", (event) => apply(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      // 4401 signed out (or suspended), 4403 origin not allowed, 4404 not found: trying again
      // cannot help. Otherwise reconnect with backoff; the server sends fresh snapshots on connect.
      if ([4401, 4403, 4404].includes(event.code)) return;
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }
  connect();
})();
