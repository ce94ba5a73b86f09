// The panel page: draws the panel's state messages and sends taps over one WebSocket (server.py).
// No framework, no build step. Every update replaces content (textContent, replaceChildren, img.src):
// nothing is appended over time, so the page's size stays the same over a day.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const CONFIRM_MS = 3000;
  let ws = null, rid = 0, state = null, shownMessage = "", confirmUntil = 0, subtaskKey = "", streamsKey = "", takesKey = "";
  const pending = new Map();  // rid -> button waiting for its acknowledgement
  // For tests and bench/panel.py: when the page last started showing a lost stream (Date.now() ms).
  window.panelProbe = { lostSince: null, states: 0, thumbs: 0, acks: 0 };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function connect() {
    const token = new URLSearchParams(location.search).get("token");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
      (token ? "?token=" + encodeURIComponent(token) : "");
    ws = new WebSocket(url);
    ws.onopen = () => { $("link").textContent = "connected"; $("link").className = "link"; };
    ws.onclose = () => {
      $("link").textContent = "DISCONNECTED from the panel: retrying… (the take goes on in the recorder)";
      $("link").className = "link down";
      pending.forEach((button) => button.classList.remove("pending"));
      pending.clear();
      setTimeout(connect, 1000);
    };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "state") { state = msg; window.panelProbe.states++; render(msg); }
      else if (msg.type === "thumbs") { showThumbs(msg); }
      else if (msg.type === "ack") { acked(msg); }
    };
  }

  function send(action, args, button) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { say("not connected to the panel", true); return; }
    rid += 1;
    if (button) { button.classList.add("pending"); pending.set(rid, button); }
    ws.send(JSON.stringify({ action: action, args: args || {}, rid: rid }));
  }

  function acked(msg) {
    window.panelProbe.acks++;
    const button = pending.get(msg.rid);
    if (button) { button.classList.remove("pending"); pending.delete(msg.rid); }
    if (!msg.ok) say(msg.error, true);
    if (navigator.vibrate) navigator.vibrate(msg.ok ? 30 : [60, 60, 60]);
  }

  function say(text, error) {
    $("message").textContent = text || "";
    $("message").className = error ? "message error" : "message";
  }

  function clock(seconds) {
    const m = Math.floor(seconds / 60), s = seconds - 60 * m;
    return String(m).padStart(2, "0") + ":" + s.toFixed(1).padStart(4, "0");
  }

  function render(s) {
    const banner = $("banner");
    banner.textContent = s.banner.text;
    banner.className = "banner " + s.banner.level;
    const rec = $("rec");
    if (s.recording) {
      rec.className = "rec recording";
      $("rec-word").textContent = "● REC";
      $("rec-time").textContent = clock(s.elapsed_s);
    } else {
      rec.className = s.take_state === "stopping" ? "rec busy" : "rec idle";
      $("rec-word").textContent = s.take_state === "stopping" ? "saving…" : "not recording";
      $("rec-time").textContent = "";
    }
    // a hands-free input of the recorder not working (an unplugged pedal): the operator relies on it
    $("handsfree").textContent = s.handsfree_missing.length ? "hands-free: " + s.handsfree_missing.join(", ") +
      " missing" : "";
    $("task").textContent = s.task;
    $("current").textContent = s.current || "-";
    $("take-count").textContent = String(s.take_count);
    $("disk").textContent = s.free_disk_gb.toFixed(1) + " GB free" +
      (s.minutes_left !== null && s.minutes_left !== undefined ? ", ~" + Math.round(s.minutes_left) + " min" : "");
    $("instruction").textContent = (s.info.name && !s.recording ? "next: " + s.info.name + " · " : "") +
      (s.info.operator ? s.info.operator + " · " : "") + (s.instruction || "");
    if (s.message !== shownMessage) { shownMessage = s.message; say(s.message, s.message_error); }
    const record = $("btn-record");
    record.textContent = s.recording ? "Stop & save" : "Start";
    record.className = "big " + (s.recording ? "stop" : "start");
    record.dataset.action = s.recording ? "stop" : "start";
    record.disabled = s.take_state === "stopping" || s.take_state === "starting";
    $("btn-abort").disabled = !s.recording;
    const discard = $("btn-discard");
    discard.disabled = !s.recording;
    if (!s.recording || Date.now() > confirmUntil) { discard.classList.remove("confirm"); discard.textContent = "Discard"; }
    $("btn-end").disabled = !s.recording || !s.current;
    $("btn-undo").disabled = !s.recording;
    $("btn-next-task").disabled = s.take_state !== "idle";
    $("btn-edit").disabled = s.take_state !== "idle";
    renderSubtasks(s);
    renderLastTake(s);
    renderStreams(s.streams);
    renderTakes(s.takes);
  }

  function renderSubtasks(s) {
    const key = JSON.stringify([s.task, s.subtasks, s.current, s.recording]);
    if (key === subtaskKey) return;
    subtaskKey = key;
    const buttons = s.subtasks.map((label, i) => {
      const b = el("button", (i + 1) + " " + label, label === s.current ? "active" : "");
      b.dataset.action = "subtask";
      b.dataset.index = String(i);
      b.disabled = !s.recording;
      return b;
    });
    $("subtasks").replaceChildren(...buttons);
  }

  function renderLastTake(s) {
    const last = s.last_take;
    const box = $("last-take");
    if (!last) { box.textContent = "none yet"; box.className = "last-take"; $("reasons").replaceChildren(); return; }
    box.textContent = last.name + " — " + last.outcome + ": " + last.verdict;
    box.className = "last-take " + (last.verdict === "REDO" ? "redo" : last.verdict.startsWith("quality OK") ? "ok" : "");
    $("reasons").replaceChildren(...last.reasons.map((r) => el("li", r)));
  }

  function renderStreams(rows) {
    const key = JSON.stringify(rows.map((r) => [r.stream, r.state, Math.round(r.rate_hz), r.seq_gaps, r.rejected, r.reason]));
    const lost = rows.some((r) => r.level === "lost");
    if (lost && window.panelProbe.lostSince === null) window.panelProbe.lostSince = Date.now();
    if (!lost) window.panelProbe.lostSince = null;
    if (key === streamsKey) return;
    streamsKey = key;
    $("streams").replaceChildren(...rows.map((r) => {
      const tr = el("tr");
      tr.dataset.stream = r.stream;
      tr.dataset.state = r.state;
      const state = el("td", r.state, "state");
      state.style.background = r.colour;
      tr.append(el("td", r.stream), state, el("td", r.rate_hz.toFixed(0) + "/" + r.expected_rate_hz.toFixed(0)),
        el("td", String(r.seq_gaps)), el("td", String(r.rejected)), el("td", r.reason));
      tr.title = r.reason;
      return tr;
    }));
  }

  function renderTakes(takes) {
    const key = JSON.stringify(takes);
    if (key === takesKey) return;
    takesKey = key;
    $("takes").replaceChildren(...takes.map((t) => el("li", t.name + " [" + t.outcome + "; " + t.verdict + "]")));
  }

  function showThumbs(msg) {
    window.panelProbe.thumbs++;
    if (msg.ego) $("ego").src = msg.ego;
    if (msg.top) $("top").src = msg.top;
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button || button.disabled) return;
    if (button.id === "btn-edit") { openInfo(); return; }
    if (button.id === "info-save") { saveInfo(); return; }
    if (button.id === "info-cancel") { $("info-dialog").hidden = true; return; }
    const action = button.dataset.action;
    if (!action) return;
    if (action === "discard") {
      if (Date.now() > confirmUntil) {
        confirmUntil = Date.now() + CONFIRM_MS;
        button.classList.add("confirm");
        button.textContent = "Tap again to discard";
        say("tap Discard again within 3 s to discard this take (no file is kept)", false);
        setTimeout(() => { if (Date.now() > confirmUntil) { button.classList.remove("confirm"); button.textContent = "Discard"; } }, CONFIRM_MS + 50);
        return;
      }
      confirmUntil = 0;
      send("discard", { confirmed: true }, button);
      return;
    }
    if (action === "subtask") { send("subtask", { index: Number(button.dataset.index) }, button); return; }
    send(action, {}, button);
  });

  function openInfo() {
    if (!state) return;
    $("info-name").value = state.info.name;
    $("info-operator").value = state.info.operator;
    $("info-instruction").value = state.info.instruction;
    $("info-dialog").hidden = false;
  }

  function saveInfo() {
    send("set_info", { name: $("info-name").value.trim(), operator: $("info-operator").value.trim(),
                       instruction: $("info-instruction").value.trim() }, $("info-save"));
    $("info-dialog").hidden = true;
  }

  connect();
})();
