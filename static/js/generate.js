// The generate page and the job page: submit without reloading, follow jobs over a websocket and
// show each one as a card -- queued (position, why), loading the model, running (step, ETA,
// preview, Cancel), done (the images with Save / Download / Remix), failed (why, what to do),
// cancelled (what it kept). The generate page shows every job started from it, newest first; the
// job page (#job-page) follows its one job over the same events.
(function () {
  "use strict";
  const form = document.getElementById("generate-form");
  const jobPage = document.getElementById("job-page");
  const stack = document.getElementById("job-stack");
  const template = document.getElementById("job-card-template");
  if (!stack || !template || (!form && !jobPage)) return;
  const $ = (id) => document.getElementById(id);
  const jobs = new Map(); // job id -> latest state (snapshot merged with events)
  const cards = new Map(); // job id -> card element
  const singleJob = jobPage ? Number(jobPage.dataset.job) : null;
  let retryDelay = 500;

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // --- signed out or expired session -----------------------------------------------------------
  function loginUrl() {
    return stack.dataset.loginUrl || "/accounts/login/";
  }

  function isLoginPage(response) {
    const path = new URL(loginUrl(), location.href).pathname;
    return response.redirected && new URL(response.url).pathname === path;
  }

  function signedOutNotice(container, what) {
    container.innerHTML = "";
    const p = document.createElement(container.tagName === "UL" ? "li" : "p");
    p.append(`You are signed out, so ${what}. `);
    const link = document.createElement("a");
    link.href = loginUrl();
    link.textContent = "Log in again";
    link.className = "login-link";
    p.append(link, " and you will come back here.");
    container.appendChild(p);
    container.hidden = false;
  }

  function showSessionAlert(what) {
    const alert = $("session-alert");
    if (alert) signedOutNotice(alert, what);
  }

  // A POST from this page, answered as JSON. Returns {response, body}, or null after showing why
  // not (signed out: the login page answered instead; no connection).
  async function post(url, body) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST", body, credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
      });
    } catch (error) {
      return { error: "Could not reach the server. Check your connection and try again." };
    }
    if (isLoginPage(response) || response.status === 401) return { signedOut: true };
    const json = (response.headers.get("Content-Type") || "").includes("application/json");
    const data = json ? await response.json().catch(() => ({})) : {};
    if (!json && response.status === 403) {
      return { response, data, error: "The page has expired (its security token is stale). Reload the page and try again." };
    }
    return { response, data };
  }

  // --- the form ----------------------------------------------------------------------------------
  function clearErrors() {
    form.querySelectorAll("[data-errors-for]").forEach((ul) => (ul.innerHTML = ""));
    form.querySelectorAll(".has-error").forEach((el) => el.classList.remove("has-error"));
    const box = $("form-errors");
    box.hidden = true;
    box.innerHTML = "";
  }

  function showErrors(errors) {
    const box = $("form-errors");
    const seen = new Set();
    for (const [field, message] of Object.entries(errors)) {
      const text = message.charAt(0).toUpperCase() + message.slice(1);
      const list = form.querySelector(`[data-errors-for="${field}"]`);
      if (list) {
        if (seen.has(field + text)) continue;
        seen.add(field + text);
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
    focusFirstError();
  }

  // Bring the first error into view and put the cursor in its field (or on the message above the form).
  function focusFirstError() {
    const box = $("form-errors");
    const field = form.querySelector(".field.has-error");
    const target = !box.hidden ? box : field;
    if (!target) return;
    if (field) {
      const advanced = field.closest("details");
      if (advanced) advanced.open = true;
    }
    target.scrollIntoView({ block: "center", behavior: "auto" });
    const input = target === field ? field.querySelector("input:not([type=hidden]), select, textarea") : null;
    if (input) {
      input.focus({ preventScroll: true });
    } else {
      box.tabIndex = -1;
      box.focus({ preventScroll: true });
    }
  }

  function setUpForm() {
    // Errors the server rendered (a submit without the script): bring the first into view.
    if (form.querySelector(".field.has-error") || !$("form-errors").hidden) focusFirstError();

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors();
      const button = $("generate-button");
      button.disabled = true;
      try {
        const body = new FormData(form);
        // The image modes: the mask painted on the canvas, and only the fields of the chosen mode.
        if (window.ldmSourceEditor) await window.ldmSourceEditor.prepare(body);
        const result = await post(form.action, body);
        if (result.signedOut) {
          signedOutNotice($("form-errors"), "the job was not started");
          $("form-errors").scrollIntoView({ block: "center" });
          return;
        }
        if (result.error) { showErrors({ __all__: result.error }); return; }
        const { response, data } = result;
        if (response.status === 202 && data.job) {
          const card = cardFor(data.job.job, true);
          apply(data.job);
          bringIntoView(card);
        } else {
          showErrors(data.errors || { __all__: `The job could not be started (the server answered ${response.status}). Try again in a moment.` });
        }
      } finally {
        button.disabled = false;
      }
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

    // PNG-info: load parameters from a dropped or chosen PNG.
    const dropZone = $("drop-zone");
    async function importPng(file) {
      clearErrors();
      const body = new FormData();
      body.append("file", file);
      const result = await post(dropZone.dataset.url, body);
      if (result.signedOut) { signedOutNotice($("form-errors"), "the file was not read"); return; }
      if (result.error || !result.response.ok) {
        showErrors(result.error ? { __all__: result.error } : (result.data.errors || { __all__: "Could not read that file." }));
        return;
      }
      for (const [name, value] of Object.entries(result.data.fields)) {
        const input = form.elements.namedItem(name);
        if (!input) continue;
        if (input instanceof RadioNodeList) {
          if (name === "mode") input.value = value;
        } else if (input.type === "checkbox") {
          input.checked = [true, 1, "true", "True", "1", "on"].includes(value);
        } else if (input.type !== "file" && input.type !== "hidden") {
          input.value = value;
        }
      }
      if (window.ldmSourceEditor) window.ldmSourceEditor.refresh();
      // LoRAs of the PNG that this person cannot use were left out of the LoRA field: say so there.
      for (const problem of result.data.lora_problems || []) showErrors({ loras: problem });
      const clip = Number(result.data.fields.clip_guidance_scale || 0) > 0;
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
  }

  // A new job's card is scrolled into view when it is not already (a phone, where the output
  // column follows the form); on a wide screen the output column is sticky and already in view.
  function bringIntoView(card) {
    const topbar = document.querySelector(".topbar");
    const top = topbar && getComputedStyle(topbar).position !== "static" ? topbar.getBoundingClientRect().bottom : 0;
    const box = card.getBoundingClientRect();
    if (box.top < top || box.bottom > window.innerHeight) card.scrollIntoView({ block: "start", behavior: "auto" });
  }

  // --- cards ---------------------------------------------------------------------------------------
  function cardFor(id, create) {
    if (cards.has(id)) return cards.get(id);
    if (!create) return null;
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.job = String(id);
    const part = (role) => card.querySelector(`[data-role="${role}"]`);
    part("cancel").addEventListener("click", () => cancelJob(id, part("cancel")));
    // Newest first: before the first card of an older job.
    const older = [...stack.querySelectorAll(".job-card")].find((other) => Number(other.dataset.job) < id);
    stack.insertBefore(card, older || null);
    cards.set(id, card);
    const empty = $("empty-output");
    if (empty) empty.hidden = true;
    stack.hidden = false;
    markNewest();
    return card;
  }

  // The newest card carries the ids the page's older tests and bookmarks know (#job-status, #results, #preview).
  function markNewest() {
    for (const id of ["job-status", "results", "preview"]) {
      const old = document.getElementById(id);
      if (old && old.closest(".job-card")) old.removeAttribute("id");
    }
    const newest = stack.querySelector(".job-card");
    if (!newest) return;
    newest.querySelector('[data-role="state"]').id = "job-status";
    newest.querySelector('[data-role="results"]').id = "results";
    newest.querySelector('[data-role="preview"]').id = "preview";
  }

  async function cancelJob(id, button) {
    const job = jobs.get(id);
    if (!job || !job.cancel_url) return;
    button.disabled = true;
    const result = await post(job.cancel_url, null);
    if (result.signedOut) { showSessionAlert("the job was not cancelled"); button.disabled = false; return; }
    if (result.response && result.response.ok) apply(result.data);
    else button.disabled = false;
  }

  // --- live state ----------------------------------------------------------------------------------
  function apply(message) {
    const id = message.job;
    if (singleJob !== null && id !== singleJob) return;
    const known = jobs.get(id);
    if (known && message.type === "generation.snapshot" && message.seq < known.seq) {
      // The submit's answer can arrive after the stream's first events: its state is older than
      // theirs, but the job's prompt and links (which events do not carry) still count.
      jobs.set(id, Object.assign({}, message, known));
      const card = cardFor(id, false);
      if (card) renderCard(card, jobs.get(id));
      renderList();
      return;
    }
    if (known && message.type !== "generation.snapshot" && message.seq <= known.seq) return; // stale
    const state = Object.assign({}, known || {}, message);
    switch (message.type) {
      case "generation.snapshot":
        if (message.status === "running" && message.phase === "loading") state.status = "loading";
        break;
      case "generation.queued": state.status = "queued"; break;
      case "generation.started": state.status = "loading"; state.step = 0; state.position = null; break;
      case "generation.loading": state.status = "loading"; state.step = 0; state.position = null; break;
      case "generation.progress": state.status = "running"; state.position = null; break;
      case "generation.succeeded": state.status = "succeeded"; state.step = state.total; break;
      case "generation.failed": state.status = "failed"; state.error = message.message; break;
      case "generation.cancelled": state.status = "cancelled"; state.interrupted = Boolean(message.images && message.images.length); break;
    }
    jobs.set(id, state);
    renderList();
    // Cards: every job started here, the job of the job page, and jobs still in progress when the
    // page (re)connects; a finished job from before the page opened stays in the list only.
    const active = ["queued", "loading", "running"].includes(state.status);
    const card = cardFor(id, singleJob !== null || (message.type === "generation.snapshot" && active));
    if (card) renderCard(card, state);
  }

  const LABELS = {
    queued: "Queued", loading: "Loading the model", running: "Generating",
    succeeded: "Done", failed: "Failed", cancelled: "Cancelled",
  };

  function ordinal(n) {
    const s = ["th", "st", "nd", "rd"], v = n % 100;
    return n + (s[(v - 20) % 10] || s[v] || s[0]);
  }

  function seconds(value) {
    const s = Math.max(1, Math.round(value));
    return s < 90 ? `${s} s` : `${Math.round(s / 60)} min`;
  }

  function detailFor(state) {
    switch (state.status) {
      case "queued": {
        if (!state.position) return "waiting for a worker";
        const ahead = state.position - 1;
        const why = ahead === 0 ? "next in line, waiting for a free worker"
          : `${ordinal(state.position)} in line: ${ahead} job${ahead === 1 ? "" : "s"} ahead of it`;
        return why + (state.eta ? `, starts in about ${seconds(state.eta)}` : "");
      }
      case "loading": return "a worker is getting the model ready";
      case "running": {
        const step = `step ${state.step || 0} of ${state.total || "?"}`;
        return state.eta != null && state.step ? `${step} · about ${seconds(state.eta)} left` : step;
      }
      case "succeeded": {
        const n = (state.images || []).length;
        return n > 1 ? `${n} images` : "";
      }
      case "cancelled":
        return state.interrupted && state.images && state.images.length ? `stopped at step ${state.step} of ${state.total}` : "";
      default: return "";
    }
  }

  function placeholderFor(state) {
    switch (state.status) {
      case "queued": return "Waiting for its turn";
      case "loading": return "Loading the model — the first job on a worker takes longer";
      case "running": return "Starting the first step";
      case "cancelled": return "Stopped";
      default: return "";
    }
  }

  function renderCard(card, state) {
    const part = (role) => card.querySelector(`[data-role="${role}"]`);
    card.dataset.status = state.status;
    part("state").textContent = LABELS[state.status] || state.status;
    part("detail").textContent = detailFor(state);
    const prompt = part("prompt");
    if (!prompt.firstChild && (state.prompt || state.url) && singleJob === null) {
      const link = document.createElement("a");
      link.href = state.url || `/generations/${state.job}/`;
      link.textContent = state.prompt || `Job ${state.job}`;
      link.title = "The job's page";
      prompt.appendChild(link);
    }
    prompt.hidden = singleJob !== null;

    const percent = state.status === "succeeded" ? 100 : state.total ? Math.round((100 * (state.step || 0)) / state.total) : 0;
    part("bar").style.width = percent + "%";
    card.querySelector(".progress").setAttribute("aria-valuenow", String(percent));
    card.querySelector(".progress").hidden = ["succeeded", "failed"].includes(state.status);

    const preview = part("preview");
    if (state.preview && preview.getAttribute("src") !== state.preview) {
      preview.src = state.preview;
      preview.dataset.step = String(state.step || 0);
    }
    const images = state.images || [];
    const showImages = (state.status === "succeeded" || state.status === "cancelled") && images.length > 0;
    // A failed job, or one cancelled before its first step, has nothing to show: no empty box.
    part("visual").hidden = showImages || state.status === "failed" || (state.status === "cancelled" && !preview.getAttribute("src"));
    preview.hidden = !preview.getAttribute("src") || state.status === "failed";
    const placeholder = part("placeholder");
    placeholder.textContent = placeholderFor(state);
    placeholder.hidden = !preview.hidden || !placeholder.textContent;

    const cancel = part("cancel");
    const active = ["queued", "loading", "running"].includes(state.status);
    cancel.hidden = !active;
    if (!active) cancel.disabled = false;

    const message = part("message");
    message.className = "job-message";
    message.hidden = true;
    if (state.status === "failed") {
      message.textContent = `${state.error || "The job failed."} Change the settings or try again in a moment; the form still holds them.`;
      message.classList.add("error-text");
      message.hidden = false;
    } else if (state.status === "cancelled") {
      message.textContent = showImages ? "Cancelled: it kept the image of the step it reached (not finished)."
        : "Cancelled before its first step: nothing was kept.";
      message.hidden = false;
    }

    const results = part("results");
    if (showImages && results.dataset.rendered !== String(images.length)) renderResults(card, results, images);
    results.hidden = !showImages;
  }

  function renderResults(card, results, images) {
    results.dataset.rendered = String(images.length);
    const grid = card.querySelector('[data-role="images"]');
    grid.innerHTML = "";
    grid.dataset.count = String(images.length);
    const actions = card.querySelector('[data-role="actions"]');
    actions.innerHTML = "";
    const generateUrl = stack.dataset.generateUrl || "/generate/";
    images.forEach((image, index) => {
      const figure = document.createElement("figure");
      figure.className = "result";
      figure.dataset.image = image.id;
      const link = document.createElement("a");
      link.href = image.page;
      const img = document.createElement("img");
      img.src = image.url;
      img.alt = `Generated image, seed ${image.seed}`;
      img.width = image.width;
      img.height = image.height;
      link.appendChild(img);
      figure.appendChild(link);
      grid.appendChild(figure);

      const group = document.createElement("span");
      group.className = "tile-actions";
      if (images.length > 1) {
        const label = document.createElement("span");
        label.className = "result-label";
        label.textContent = `#${index + 1}`;
        group.appendChild(label);
      }
      const save = document.createElement("button");
      save.type = "button";
      save.className = "button small save-button";
      save.textContent = "Save";
      save.addEventListener("click", async () => {
        save.disabled = true;
        const result = await post(`/images/${image.id}/save/`, new URLSearchParams({ saved: "true" }));
        if (result.signedOut) { showSessionAlert("the image was not saved"); save.disabled = false; return; }
        if (result.response && result.response.ok) save.textContent = "Saved";
        else save.disabled = false;
      });
      const download = document.createElement("a");
      download.className = "button secondary small";
      download.href = `${image.url}?download=1`;
      download.textContent = "Download";
      const remix = document.createElement("a");
      remix.className = "button secondary small";
      remix.href = `${generateUrl}?remix=${image.id}`;
      remix.textContent = "Remix";
      const useAsInput = document.createElement("a");
      useAsInput.className = "button secondary small use-as-input";
      useAsInput.href = `${generateUrl}?source_image=${image.id}`;
      useAsInput.textContent = "Use as input";
      // On the generate page the image becomes the source in place; elsewhere the link opens it there.
      useAsInput.addEventListener("click", (event) => {
        if (!form || !window.ldmSourceEditor) return;
        event.preventDefault();
        window.ldmSourceEditor.useImage(image);
      });
      group.append(save, download, remix, useAsInput);
      actions.appendChild(group);
    });
  }

  function renderList() {
    const list = $("job-list");
    if (!list) return;
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
      const status = job.status === "loading" ? "running" : job.status;
      badge.className = `badge status-${status}`;
      badge.textContent = job.status === "loading" ? "Loading" : LABELS[job.status] || job.status;
      li.append(link, " ", badge);
      list.appendChild(li);
    }
  }

  // The job page: its badge follows the live state, and the static facts give way to the card.
  function renderJobPage() {
    const state = jobs.get(singleJob);
    if (!state) return;
    const badge = $("job-status-badge");
    const status = state.status === "loading" ? "running" : state.status;
    badge.className = `badge status-${status}`;
    badge.textContent = { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled" }[status] || status;
    const staticPart = $("job-static");
    if (staticPart) staticPart.hidden = true;
  }

  // --- the stream ------------------------------------------------------------------------------------
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = singleJob !== null ? `/ws/generations/${singleJob}/` : "/ws/generations/";
    const socket = new WebSocket(`${scheme}://${location.host}${path}`);
    socket.addEventListener("open", () => { retryDelay = 500; });
    socket.addEventListener("message", (event) => {
      apply(JSON.parse(event.data));
      if (singleJob !== null) renderJobPage();
    });
    socket.addEventListener("close", (event) => {
      // 4401 signed out (or suspended), 4403 origin not allowed, 4404 not found: trying again
      // cannot help. Otherwise reconnect with backoff; the server sends fresh snapshots on connect.
      if (event.code === 4401) { showSessionAlert("live updates stopped"); return; }
      if (event.code === 4403 || event.code === 4404) return;
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  if (form) setUpForm();
  connect();
})();
