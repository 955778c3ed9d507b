// The generate page's image-to-image part: the mode switch (Text / Image / Inpaint / Outpaint)
// showing each mode's fields, the source image (a chosen, dropped or pasted file, or a gallery
// image by "Use as input"), the mask editor on a canvas over the source (brush, eraser, size,
// undo, clear, invert, zoom; mouse, pen and touch through pointer events, two fingers zoom and
// pan) and the outpaint steppers with the extended canvas drawn around the source.
//
// The mask is painted at the source's own pixel size; on submit it goes as a PNG (white = repaint,
// black = keep) in the form's `mask` field: generate.js calls window.ldmSourceEditor.prepare(body)
// on the FormData it posts. Without this script the page still works: every field shows, and the
// source and mask are plain file inputs.
(function () {
  "use strict";
  const form = document.getElementById("generate-form");
  if (!form || !document.getElementById("source-panel")) return;
  const $ = (id) => document.getElementById(id);
  const SOURCE_MODES = ["img2img", "inpaint", "outpaint"];
  const MASK_RGB = [255, 70, 110]; // how painted pixels look over the source (the canvas is half transparent)
  const MAX_UNDO = 30;
  const MAX_ZOOM = 8;

  const panel = $("source-panel");
  const fileInput = $("id_init_image");
  const sourceId = $("id_source_image");
  const sourceJob = $("id_source_job");
  const maskInput = $("id_mask");
  const viewport = $("source-viewport");
  const stage = $("source-stage");
  const box = $("source-box");
  const img = $("source-preview");
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const sizeSlider = $("brush-size");
  const undoButton = $("mask-undo");

  const source = { width: 0, height: 0 };
  let tool = "brush";
  let zoom = 1;
  let painted = false; // the canvas holds the mask to send (painted, or loaded from a mask file)
  const undoStack = [];

  form.classList.add("scripted");
  form.querySelectorAll(".js-only").forEach((el) => { el.hidden = false; });

  // --- modes ---------------------------------------------------------------------------------------
  function currentMode() {
    const checked = form.querySelector("input[name=mode]:checked");
    return checked ? checked.value : "txt2img";
  }

  function setMode(mode) {
    const radio = form.querySelector(`input[name=mode][value="${mode}"]`);
    if (radio) radio.checked = true;
    applyMode();
  }

  function applyMode() {
    const mode = currentMode();
    form.dataset.mode = mode;
    form.querySelectorAll("[data-modes]").forEach((el) => {
      el.hidden = !el.dataset.modes.split(" ").includes(mode);
    });
    const hires = $("hires-settings");
    if (hires) hires.hidden = !$("id_enable_hr").checked;
    layout();
  }

  form.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener("change", applyMode));
  $("id_enable_hr").addEventListener("change", applyMode);

  // --- the source ----------------------------------------------------------------------------------
  function caption(parts) {
    const text = $("source-caption-text");
    text.innerHTML = "";
    text.append(...parts);
    $("source-caption").hidden = false;
  }

  // Width and height follow the source (rounded to a multiple of 8, within the model's limits),
  // as a canvas does: the job then keeps the source's shape.
  function fitSizeFields(width, height) {
    const option = $("id_model").selectedOptions[0];
    const maxW = Number(option && option.dataset.maxWidth) || width;
    const maxH = Number(option && option.dataset.maxHeight) || height;
    const scale = Math.min(1, maxW / width, maxH / height);
    const round8 = (v, max) => Math.min(max - (max % 8), Math.max(8, Math.round((v * scale) / 8) * 8));
    for (const [id, value] of [["id_width", round8(width, maxW)], ["id_height", round8(height, maxH)]]) {
      const input = $(id);
      if (input && String(input.value) !== String(value)) {
        input.value = value;
        input.dispatchEvent(new Event("input", { bubbles: true }));
      }
    }
  }

  function showSource(url, describe, fit, done) {
    img.onload = () => {
      img.onload = null;
      source.width = img.naturalWidth;
      source.height = img.naturalHeight;
      resetMask();
      viewport.hidden = false;
      caption(describe(source.width, source.height));
      if (fit) fitSizeFields(source.width, source.height);
      zoom = 1;
      layout();
      if (done) done();
    };
    img.onerror = () => {
      showSourceError("That file is not an image this browser can show. Choose a PNG, JPEG or WebP.");
    };
    img.src = url;
  }

  function showSourceError(message) {
    const list = form.querySelector('[data-errors-for="init_image"]');
    list.innerHTML = "";
    const li = document.createElement("li");
    li.textContent = message;
    list.appendChild(li);
    list.closest(".field").classList.add("has-error");
  }

  function clearSourceError() {
    const list = form.querySelector('[data-errors-for="init_image"]');
    list.innerHTML = "";
    list.closest(".field").classList.remove("has-error");
  }

  // A file chosen, dropped or pasted: it goes in the init_image input (so the form posts it).
  function useFile(file, fromInput) {
    if (!file) return;
    clearSourceError();
    if (file.type && !file.type.startsWith("image/")) {
      showSourceError(`${file.name || "That file"} is not an image. Choose a PNG, JPEG or WebP.`);
      return;
    }
    if (!fromInput) {
      const transfer = new DataTransfer();
      transfer.items.add(file);
      fileInput.files = transfer.files;
    }
    sourceId.value = "";
    sourceJob.value = "";
    if (!SOURCE_MODES.includes(currentMode())) setMode("img2img");
    // A data: URL, not a blob: one: the page's CSP allows images from the site and data: only.
    readAsDataUrl(file).then((url) => showSource(url, (w, h) => [`${file.name || "Pasted image"} · ${w}×${h}`], true));
  }

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  // A gallery image ("Use as input" on a result): posted by id, shown from its URL.
  function useImage(image) {
    clearSourceError();
    fileInput.value = "";
    sourceJob.value = "";
    sourceId.value = String(image.id);
    if (!SOURCE_MODES.includes(currentMode())) setMode("img2img");
    showSource(image.url, (w, h) => {
      const link = document.createElement("a");
      link.href = image.page || `/images/${image.id}/`;
      link.textContent = `image ${image.id}`;
      return ["From ", link, ` · ${w}×${h}`];
    }, true);
    panel.scrollIntoView({ block: "start", behavior: "auto" });
  }

  function removeSource() {
    fileInput.value = "";
    sourceId.value = "";
    sourceJob.value = "";
    maskInput.value = "";
    img.removeAttribute("src");
    source.width = source.height = 0;
    viewport.hidden = true;
    $("source-caption").hidden = true;
    resetMask();
  }

  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) useFile(fileInput.files[0], true);
  });
  $("source-remove").addEventListener("click", removeSource);

  // Drop on the source panel; paste anywhere on the page (an image on the clipboard, not text).
  panel.addEventListener("dragover", (event) => {
    if (![...event.dataTransfer.types].includes("Files")) return;
    event.preventDefault();
    panel.classList.add("dragging");
  });
  panel.addEventListener("dragleave", (event) => {
    if (!panel.contains(event.relatedTarget)) panel.classList.remove("dragging");
  });
  panel.addEventListener("drop", (event) => {
    panel.classList.remove("dragging");
    if (!event.dataTransfer.files.length) return;
    event.preventDefault();
    useFile(event.dataTransfer.files[0], false);
  });
  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? [...event.clipboardData.items] : [];
    const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item) return;
    event.preventDefault();
    useFile(item.getAsFile(), false);
  });

  // --- layout: the source (and, outpainting, the extended canvas) in the column, zoomed -------------
  function sideValue(side) {
    const value = Number($(`id_outpaint_${side}`).value);
    return Number.isFinite(value) && value > 0 ? value : 0;
  }

  function layout() {
    if (!source.width || viewport.hidden) return;
    const outpaint = currentMode() === "outpaint";
    const fitW = Number($("id_width").value) > 0 ? Number($("id_width").value) : source.width;
    const fitH = Number($("id_height").value) > 0 ? Number($("id_height").value) : source.height;
    const [left, right, top, bottom] = outpaint ? ["left", "right", "top", "bottom"].map(sideValue) : [0, 0, 0, 0];
    const totalW = outpaint ? fitW + left + right : source.width;
    const totalH = outpaint ? fitH + top + bottom : source.height;
    const available = viewport.clientWidth || panel.clientWidth || 300;
    const maxHeight = Math.min(440, Math.max(200, window.innerHeight * 0.55));
    const base = Math.max(64, Math.min(available, (maxHeight * totalW) / totalH));
    stage.style.width = `${Math.floor(base * zoom)}px`;
    stage.style.height = `${Math.floor((base * zoom * totalH) / totalW)}px`;
    stage.classList.toggle("outpainting", outpaint);
    box.style.left = `${(100 * (outpaint ? left : 0)) / totalW}%`;
    box.style.top = `${(100 * (outpaint ? top : 0)) / totalH}%`;
    box.style.width = `${(100 * (outpaint ? fitW : totalW)) / totalW}%`;
    box.style.height = `${(100 * (outpaint ? fitH : totalH)) / totalH}%`;
    viewport.classList.toggle("zoomed", zoom > 1);
    const size = $("outpaint-size");
    if (size) size.textContent = outpaint ? `The result: ${totalW}×${totalH} px (the source fitted to ${fitW}×${fitH}).` : "";
  }

  window.addEventListener("resize", layout);
  for (const id of ["id_width", "id_height", "id_outpaint_left", "id_outpaint_right", "id_outpaint_top", "id_outpaint_bottom"]) {
    const input = $(id);
    if (input) input.addEventListener("input", layout);
  }

  // Outpaint steppers: 8 pixels a press, never below 0.
  form.querySelectorAll("[data-step-for]").forEach((button) => {
    button.addEventListener("click", () => {
      const input = $(button.dataset.stepFor);
      const current = Math.max(0, Math.round((Number(input.value) || 0) / 8) * 8);
      input.value = Math.max(0, current + Number(button.dataset.step));
      input.dispatchEvent(new Event("input", { bubbles: true }));
    });
  });

  // --- zoom ------------------------------------------------------------------------------------------
  // Keep the content point at client (x, y) under (toX, toY) after zooming to `level`.
  function zoomTo(level, x, y, toX, toY) {
    const before = stage.getBoundingClientRect();
    const fx = before.width ? (x - before.left) / before.width : 0.5;
    const fy = before.height ? (y - before.top) / before.height : 0.5;
    zoom = Math.min(MAX_ZOOM, Math.max(1, level));
    layout();
    const after = stage.getBoundingClientRect();
    viewport.scrollLeft += after.left + fx * after.width - (toX === undefined ? x : toX);
    viewport.scrollTop += after.top + fy * after.height - (toY === undefined ? y : toY);
  }

  function zoomAtCentre(factor) {
    const rect = viewport.getBoundingClientRect();
    zoomTo(zoom * factor, rect.left + rect.width / 2, rect.top + rect.height / 2);
  }

  $("zoom-in").addEventListener("click", () => zoomAtCentre(1.5));
  $("zoom-out").addEventListener("click", () => zoomAtCentre(1 / 1.5));
  $("zoom-fit").addEventListener("click", () => { zoom = 1; layout(); viewport.scrollLeft = viewport.scrollTop = 0; });

  // --- the mask --------------------------------------------------------------------------------------
  function resetMask() {
    canvas.width = source.width || 1;
    canvas.height = source.height || 1;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    painted = false;
    undoStack.length = 0;
    undoButton.disabled = true;
    const longest = Math.max(source.width, source.height, 8);
    sizeSlider.max = String(Math.max(4, Math.round(longest / 2)));
    sizeSlider.value = String(Math.max(1, Math.round(longest / 10)));
    showBrushSize();
  }

  function showBrushSize() {
    $("brush-size-value").textContent = `${sizeSlider.value} px`;
  }
  sizeSlider.addEventListener("input", showBrushSize);

  function pushUndo() {
    undoStack.push({ pixels: ctx.getImageData(0, 0, canvas.width, canvas.height), painted });
    if (undoStack.length > MAX_UNDO) undoStack.shift();
    undoButton.disabled = false;
  }

  function undo() {
    const last = undoStack.pop();
    if (last) {
      ctx.putImageData(last.pixels, 0, 0);
      painted = last.painted;
    }
    undoButton.disabled = undoStack.length === 0;
  }
  undoButton.addEventListener("click", undo);

  function setTool(name) {
    tool = name;
    $("mask-brush").setAttribute("aria-pressed", String(name === "brush"));
    $("mask-eraser").setAttribute("aria-pressed", String(name === "eraser"));
  }
  $("mask-brush").addEventListener("click", () => setTool("brush"));
  $("mask-eraser").addEventListener("click", () => setTool("eraser"));

  $("mask-clear").addEventListener("click", () => {
    pushUndo();
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    painted = true;
  });

  // Painted becomes unpainted and the other way round (partly painted edges too).
  $("mask-invert").addEventListener("click", () => {
    pushUndo();
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const d = pixels.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i] = MASK_RGB[0]; d[i + 1] = MASK_RGB[1]; d[i + 2] = MASK_RGB[2];
      d[i + 3] = 255 - d[i + 3];
    }
    ctx.putImageData(pixels, 0, 0);
    painted = true;
  });

  // A mask picture shown on the canvas (white = painted), where it can be edited further: a mask
  // file chosen (it becomes the mask to send), or the stored mask of a Remixed job (sent only if
  // edited: the server reuses the stored one otherwise).
  function loadMask(url, sendAsIs, done) {
    const picture = new Image();
    picture.onload = () => {
      const scratch = document.createElement("canvas");
      scratch.width = canvas.width;
      scratch.height = canvas.height;
      const s = scratch.getContext("2d", { willReadFrequently: true });
      s.drawImage(picture, 0, 0, scratch.width, scratch.height);
      const pixels = s.getImageData(0, 0, scratch.width, scratch.height);
      const d = pixels.data;
      for (let i = 0; i < d.length; i += 4) {
        const light = Math.round((d[i] + d[i + 1] + d[i + 2]) / 3) * (d[i + 3] / 255);
        d[i] = MASK_RGB[0]; d[i + 1] = MASK_RGB[1]; d[i + 2] = MASK_RGB[2]; d[i + 3] = light;
      }
      if (sendAsIs) pushUndo();
      ctx.putImageData(pixels, 0, 0);
      if (sendAsIs) painted = true;
      if (done) done();
    };
    picture.src = url;
  }

  maskInput.addEventListener("change", () => {
    const file = maskInput.files[0];
    if (!file || !source.width) return;
    readAsDataUrl(file).then((url) => loadMask(url, true));
  });

  function canvasPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * canvas.height) / rect.height,
    };
  }

  function paint(from, to) {
    const size = Number(sizeSlider.value);
    ctx.globalCompositeOperation = tool === "eraser" ? "destination-out" : "source-over";
    const colour = `rgb(${MASK_RGB.join(",")})`;
    ctx.fillStyle = colour;
    ctx.strokeStyle = colour;
    ctx.lineWidth = size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.arc(to.x, to.y, size / 2, 0, Math.PI * 2);
    ctx.fill();
    if (from.x !== to.x || from.y !== to.y) {
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.globalCompositeOperation = "source-over";
  }

  // One finger, the mouse or a pen paints; a second finger turns the gesture into pinch and pan
  // (and takes back what the first finger had begun to paint).
  const pointers = new Map();
  let stroke = null;
  let pinch = null;

  function pinchState() {
    const [a, b] = [...pointers.values()];
    return { distance: Math.hypot(a.x - b.x, a.y - b.y) || 1, x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pointers.size === 2) {
      if (stroke) { undo(); stroke = null; }
      pinch = { start: pinchState(), zoom };
      return;
    }
    if (pointers.size > 2 || pinch) return;
    pushUndo();
    const point = canvasPoint(event);
    stroke = { last: point };
    paint(point, point);
    painted = true;
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!pointers.has(event.pointerId)) return;
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pinch && pointers.size === 2) {
      const now = pinchState();
      // The point that was under the fingers' midpoint stays under it: zoom and pan in one.
      const level = (pinch.zoom * now.distance) / pinch.start.distance;
      zoomTo(level, pinch.last ? pinch.last.x : pinch.start.x, pinch.last ? pinch.last.y : pinch.start.y, now.x, now.y);
      pinch.last = now;
      return;
    }
    if (!stroke) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const point = canvasPoint(e);
      paint(stroke.last, point);
      stroke.last = point;
    }
  });

  function endPointer(event) {
    if (!pointers.delete(event.pointerId)) return;
    if (pointers.size < 2) pinch = null;
    if (pointers.size === 0) stroke = null;
  }
  canvas.addEventListener("pointerup", endPointer);
  canvas.addEventListener("pointercancel", endPointer);

  // Undo with Ctrl/Cmd+Z while inpainting (not inside a text field, where it undoes typing).
  document.addEventListener("keydown", (event) => {
    if (currentMode() !== "inpaint" || !(event.ctrlKey || event.metaKey) || event.key.toLowerCase() !== "z") return;
    if (event.target.closest && event.target.closest("input, textarea, select")) return;
    event.preventDefault();
    undo();
  });

  // The mask as the engine wants it: the source's size, white where painted, black elsewhere.
  function maskBlob() {
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    const o = out.getContext("2d");
    const painted = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const mask = o.createImageData(canvas.width, canvas.height);
    for (let i = 0; i < painted.length; i += 4) {
      const value = painted[i + 3] >= 128 ? 255 : 0;
      mask.data[i] = mask.data[i + 1] = mask.data[i + 2] = value;
      mask.data[i + 3] = 255;
    }
    o.putImageData(mask, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  // Called by generate.js with the FormData it is about to post.
  async function prepare(body) {
    const mode = currentMode();
    if (!SOURCE_MODES.includes(mode)) {
      for (const name of ["init_image", "mask", "source_image", "source_job"]) body.delete(name);
      return;
    }
    // One source: a chosen file wins over a gallery image or a Remixed job's picture.
    if (fileInput.files.length) { body.delete("source_image"); body.delete("source_job"); }
    if (mode !== "inpaint") { body.delete("mask"); return; }
    if (painted && source.width) {
      const blob = await maskBlob();
      if (blob) body.set("mask", new File([blob], "mask.png", { type: "image/png" }));
    }
  }

  // A source the server put on the page (?source_image=<id>): size the canvas to it.
  if (img.getAttribute("src")) {
    const describe = () => [...$("source-caption-text").childNodes];
    const storedMask = canvas.dataset.maskUrl;
    const ready = () => { if (storedMask) loadMask(storedMask, false); };
    if (img.complete && img.naturalWidth) {
      source.width = img.naturalWidth;
      source.height = img.naturalHeight;
      resetMask();
      caption(describe());
      ready();
    } else {
      showSource(img.getAttribute("src"), describe, false, ready);
    }
  } else {
    resetMask();
  }
  applyMode();

  window.ldmSourceEditor = { prepare, useImage, refresh: applyMode, mode: currentMode };
})();
