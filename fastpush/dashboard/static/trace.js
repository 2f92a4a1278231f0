// Live Trace: a WebSocket to /dashboard/trace streaming what happens on this node. The kinds, the
// hub, payloads and pause are told to the server (it sends nothing else); the text filter is the
// page's own. Lines the browser was too slow for are shown as one "dropped" marker.
import { clock, element, row, sessionEnded } from "./api.js";

const MAX_ROWS = 2000;
let socket = null;
let paused = false;

function controls() {
  return document.getElementById("trace-controls");
}

function settings() {
  const form = controls();
  const kinds = [...form.querySelectorAll('input[name="kind"]:checked')].map((box) => box.value);
  const hub = form.elements.namedItem("hub").value.trim();
  return { paused, payloads: form.elements.namedItem("payloads").checked, kinds, hub: hub || null };
}

function tell() {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(settings()));
}

function state(text) {
  document.getElementById("trace-state").textContent = text;
}

function outcomeOf(line) {
  if (line.status !== undefined) return String(line.status);
  if (line.code !== undefined) return String(line.code);
  return line.outcome || "";
}

function details(line) {
  const parts = [];
  for (const key of ["connection_id", "user", "subprotocol", "address", "reason", "url", "error", "durationMs"]) {
    if (line[key] !== undefined && line[key] !== null) parts.push(`${key}=${line[key]}`);
  }
  const cell = element("div", parts.join(" "));
  if (line.payload) {
    const shown = line.payload.text !== undefined ? line.payload.text : "base64:" + line.payload.base64;
    cell.append(element("pre", `payload (${line.payload.bytes} bytes): ${shown}`));
  }
  return cell;
}

function matches(tr, text) {
  return !text || tr.textContent.toLowerCase().includes(text);
}

function append(rows) {
  const body = document.querySelector("#trace-table tbody");
  const text = controls().elements.namedItem("text").value.trim().toLowerCase();
  for (const tr of rows) {
    tr.hidden = !matches(tr, text);
    body.prepend(tr);
  }
  while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
}

function receive(message) {
  const rows = [];
  if (message.dropped) {
    const tr = row(["", "", `${message.dropped} lines dropped`, "", "", "", "", "the browser did not keep up"]);
    tr.className = "dropped";
    rows.push(tr);
  }
  for (const line of message.lines) {
    const tr = row([clock(line.time), line.kind, line.event, line.hub || "", line.target || line.connection_id || "",
      line.size ?? "", outcomeOf(line), details(line)]);
    tr.dataset.kind = line.kind;
    tr.dataset.event = line.event;
    const outcome = outcomeOf(line);
    if (outcome === "invalid" || /^[45]\d\d$/.test(outcome) || line.error) tr.className = "failed";
    rows.push(tr);
  }
  append(rows);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/dashboard/trace`);
  document.getElementById("trace-connect").hidden = true;
  socket.addEventListener("open", () => { state(paused ? "paused" : "live"); tell(); });
  socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    socket = null;
    state(`closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
    if (!sessionEnded()) document.getElementById("trace-connect").hidden = false;
  });
}

export function startTrace() {
  const form = controls();
  form.addEventListener("change", (event) => {
    if (event.target.name === "text") return;
    tell();
  });
  form.elements.namedItem("text").addEventListener("input", () => {
    const text = form.elements.namedItem("text").value.trim().toLowerCase();
    for (const tr of document.querySelectorAll("#trace-table tbody tr")) tr.hidden = !matches(tr, text);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("trace-pause").addEventListener("click", (event) => {
    paused = !paused;
    event.target.textContent = paused ? "Resume" : "Pause";
    if (socket) state(paused ? "paused" : "live");
    tell();
  });
  document.getElementById("trace-clear").addEventListener("click", () => {
    document.querySelector("#trace-table tbody").replaceChildren();
  });
  document.getElementById("trace-connect").addEventListener("click", connect);
  return { shown: () => { if (!socket && !sessionEnded()) connect(); } };
}
