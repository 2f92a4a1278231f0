// The test client, as the Azure portal's: the server mints a client token for the chosen hub,
// user, roles and groups; the page connects with json.webpubsub.azure.v1, shows every message,
// joins and leaves groups and sends to them.
import { api, clock, element, row, setResult } from "./api.js";

const SUBPROTOCOL = "json.webpubsub.azure.v1";
let socket = null;
let ackId = 0;

function log(direction, message) {
  const body = document.querySelector("#client-log tbody");
  const tr = row([clock(Date.now()), direction, element("pre", JSON.stringify(message))]);
  tr.dataset.direction = direction;
  if (message && message.type) tr.dataset.type = message.type;
  body.prepend(tr);
  while (body.children.length > 500) body.lastElementChild.remove();
}

function list(text) {
  return text.split(",").map((item) => item.trim()).filter(Boolean);
}

function connected(yes) {
  for (const button of document.querySelectorAll("#client-join button, #client-send button")) button.disabled = !yes;
  document.getElementById("client-disconnect").disabled = !yes;
  document.getElementById("client-connect").disabled = yes;
}

function send(message) {
  if (message.ackId === undefined && message.type !== "sequenceAck") message.ackId = ++ackId;
  socket.send(JSON.stringify(message));
  log("sent", message);
}

async function connect(form) {
  const state = document.getElementById("client-state");
  const fields = form.elements;
  const roles = [...form.querySelectorAll('input[name="role"]:checked')].map((box) => box.value)
    .concat(list(fields.namedItem("moreRoles").value));
  const request = { hub: fields.namedItem("hub").value.trim(), roles, groups: list(fields.namedItem("groups").value) };
  const user = fields.namedItem("user").value.trim();
  if (user) request.userId = user;
  let minted;
  try {
    minted = await api("token", request);
  } catch (error) {
    setResult(state, error.message, false);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}${minted.path}`, SUBPROTOCOL);
  setResult(state, "connecting", true);
  socket.addEventListener("open", () => { connected(true); });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    log("received", message);
    if (message.type === "system" && message.event === "connected") {
      setResult(state, `connected as ${message.connectionId}${message.userId ? " (user " + message.userId + ")" : ""}`, true);
    }
  });
  socket.addEventListener("close", (event) => {
    socket = null;
    connected(false);
    setResult(state, `disconnected (${event.code}${event.reason ? ": " + event.reason : ""})`, event.code === 1000);
  });
}

export function startClient() {
  const form = document.getElementById("client-form");
  form.addEventListener("submit", (event) => { event.preventDefault(); connect(form); });
  document.getElementById("client-disconnect").addEventListener("click", () => { if (socket) socket.close(1000); });
  const join = document.getElementById("client-join");
  join.addEventListener("submit", (event) => {
    event.preventDefault();
    const type = event.submitter ? event.submitter.value : "joinGroup";
    send({ type, group: join.elements.namedItem("group").value.trim() });
  });
  const sender = document.getElementById("client-send");
  sender.addEventListener("submit", (event) => {
    event.preventDefault();
    const fields = sender.elements;
    const dataType = fields.namedItem("dataType").value;
    const text = fields.namedItem("data").value;
    let data = text;
    if (dataType === "json") {
      try { data = JSON.parse(text); } catch { setResult(document.getElementById("client-state"), "not JSON", false); return; }
    }
    send({ type: "sendToGroup", group: fields.namedItem("group").value.trim(), dataType, data,
      noEcho: fields.namedItem("noEcho").checked });
  });
  return {};
}
