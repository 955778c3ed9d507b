// A LoRA training's page (templates/generation/training.html): follows ws/trainings/<id>/ and
// redraws the progress, time left, the loss curve (a <canvas>) and the latest sample grid.
// The server sends a snapshot on connect, then training.* events with sequence numbers; the
// socket drops events older than the snapshot, so a reconnect simply starts from a new snapshot.
(function () {
  "use strict";
  const page = document.getElementById("training-page");
  if (!page) return;
  const $ = (id) => document.getElementById(id);
  const canvas = $("loss-chart");
  const STATUS_LABELS = { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled" };
  let points = JSON.parse(($("training-losses") || {}).textContent || "[]");
  let total = Number($("training-bar").max) || 1;
  let retryDelay = 500;
  let finished = false;

  function drawLoss() {
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const styles = getComputedStyle(document.body);
    const ink = styles.color || "#222";
    const pad = { left: 48, right: 12, top: 10, bottom: 24 };
    ctx.strokeStyle = ink;
    ctx.fillStyle = ink;
    ctx.globalAlpha = 0.4;
    ctx.beginPath();
    ctx.moveTo(pad.left, pad.top);
    ctx.lineTo(pad.left, height - pad.bottom);
    ctx.lineTo(width - pad.right, height - pad.bottom);
    ctx.stroke();
    ctx.globalAlpha = 1;
    ctx.font = "11px sans-serif";
    if (!points.length) {
      ctx.fillText("The loss appears here from the first step.", pad.left + 8, height / 2);
      return;
    }
    const losses = points.map((p) => p[1]);
    let low = Math.min(...losses);
    let high = Math.max(...losses);
    if (high - low < 1e-9) { high += 0.5; low = Math.max(0, low - 0.5); }
    const x = (step) => pad.left + (step / Math.max(total, 1)) * (width - pad.left - pad.right);
    const y = (loss) => height - pad.bottom - ((loss - low) / (high - low)) * (height - pad.top - pad.bottom);
    ctx.fillText(high.toFixed(3), 2, pad.top + 8);
    ctx.fillText(low.toFixed(3), 2, height - pad.bottom);
    ctx.fillText(`step ${total}`, width - pad.right - 60, height - 6);
    // Each step's loss depends on the noise level drawn for it, so the raw curve is jagged: draw it
    // faint, and over it a moving average (the trend a person is looking for).
    const line = (series, colour, width, alpha) => {
      ctx.strokeStyle = colour;
      ctx.lineWidth = width;
      ctx.globalAlpha = alpha;
      ctx.beginPath();
      series.forEach(([step, loss], index) => {
        if (index === 0) ctx.moveTo(x(step), y(loss)); else ctx.lineTo(x(step), y(loss));
      });
      ctx.stroke();
      ctx.globalAlpha = 1;
    };
    let average = null;
    const smoothing = 2 / (Math.min(50, Math.max(4, points.length / 10)) + 1);
    const trend = points.map(([step, loss]) => {
      average = average === null ? loss : average + smoothing * (loss - average);
      return [step, average];
    });
    line(points, "#2f6fdf", 1, 0.45);
    line(trend, "#f0a030", 2.5, 1);
    canvas.dataset.points = String(points.length);
  }

  function setStatus(status) {
    const badge = $("training-status");
    badge.className = `badge status-${status}`;
    badge.textContent = STATUS_LABELS[status] || status;
    const active = status === "queued" || status === "running";
    $("training-cancel-form").hidden = !active;
    if (!active) $("training-eta").textContent = "–";
  }

  function setProgress(step, stepTotal, eta, loss) {
    total = stepTotal || total;
    $("training-progress").textContent = `step ${step} of ${total}`;
    $("training-bar").max = total;
    $("training-bar").value = step;
    if (eta !== null && eta !== undefined) $("training-eta").textContent = `about ${Math.round(eta)} s`;
    if (loss !== null && loss !== undefined) $("training-loss").textContent = Number(loss).toFixed(4);
  }

  function setSamples(src, step) {
    const img = $("training-samples");
    img.src = src;
    img.hidden = false;
    img.dataset.step = String(step);
    $("samples-none").hidden = true;
    $("samples-step").textContent = `at step ${step}`;
  }

  function showResult(lora) {
    const result = $("training-result");
    result.textContent = "Done: use it with ";
    const code = document.createElement("code");
    code.textContent = lora.prompt_tag;
    result.append(code, " in a prompt — ");
    const link = document.createElement("a");
    link.href = lora.url;
    link.textContent = lora.name;
    result.append(link, ".");
    result.hidden = false;
  }

  function apply(event) {
    switch (event.type) {
      case "training.snapshot":
        points = event.losses || [];
        setStatus(event.status);
        setProgress(event.step, event.total, event.eta, points.length ? points[points.length - 1][1] : null);
        if (event.samples_url) setSamples(event.samples_url, event.samples_step);
        if (event.error) { $("training-error").textContent = event.error; $("training-error").hidden = false; }
        if (event.lora) showResult(event.lora);
        break;
      case "training.started":
        setStatus("running");
        break;
      case "training.progress":
        setStatus("running");
        if (event.start_step !== null && event.start_step !== undefined) {
          points = points.filter((p) => p[0] <= event.start_step);  // resumed: the checkpoint's curve
        }
        points = points.concat(event.points || []);
        setProgress(event.step, event.total, event.eta, event.loss);
        break;
      case "training.samples":
        setSamples(event.image, event.step);
        break;
      case "training.succeeded":
        setStatus("succeeded");
        setProgress(total, total, null, null);
        if (event.lora) showResult(event.lora);
        break;
      case "training.failed":
        setStatus("failed");
        $("training-error").textContent = event.message || "The training failed.";
        $("training-error").hidden = false;
        break;
      case "training.cancelled":
        setStatus("cancelled");
        break;
      case "training.queued":
        setStatus("queued");
        break;
      default:
        return;
    }
    drawLoss();
    finished = ["succeeded", "failed", "cancelled"].includes(event.status) ||
      ["training.succeeded", "training.failed", "training.cancelled"].includes(event.type);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${page.dataset.websocket}`);
    socket.addEventListener("open", () => { retryDelay = 500; });
    socket.addEventListener("message", (message) => apply(JSON.parse(message.data)));
    socket.addEventListener("close", (event) => {
      // 4401 signed out, 4403 origin refused, 4404 not yours: trying again cannot help.
      if (event.code === 4401 || event.code === 4403 || event.code === 4404 || finished) return;
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  drawLoss();
  window.addEventListener("resize", drawLoss);
  connect();
})();
