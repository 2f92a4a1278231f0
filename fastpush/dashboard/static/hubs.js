// The hub view: the hubs of this node, then one hub's connections and groups a page at a time
// (paged by the server), closing a connection, and sending to the hub, a group, a user or a connection.
import { api, element, row, sessionEnded, setResult } from "./api.js";

const PAGE = 50;
const state = { hub: null, connOffset: 0, groupOffset: 0, by: "", value: "" };
let visible = false;

const enc = encodeURIComponent;

function age(seconds) {
  if (seconds < 60) return seconds.toFixed(0) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(0) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

async function loadHubs() {
  const answer = await api("hubs");
  document.getElementById("hub-total").textContent = answer.total;
  const body = document.querySelector("#hub-table tbody");
  body.replaceChildren(...answer.hubs.map((hub) => {
    const tr = row([hub.name, hub.connections, hub.groups, hub.users]);
    tr.className = "selectable" + (hub.name === state.hub ? " selected" : "");
    tr.dataset.hub = hub.name;
    tr.addEventListener("click", () => select(hub.name));
    return tr;
  }));
}

async function loadConnections() {
  const filter = state.by && state.value ? "&" + state.by + "=" + enc(state.value) : "";
  const answer = await api(`hubs/${enc(state.hub)}/connections?offset=${state.connOffset}&limit=${PAGE}${filter}`);
  document.getElementById("conn-total").textContent = answer.total;
  const body = document.querySelector("#conn-table tbody");
  body.replaceChildren(...answer.connections.map((c) => {
    const close = element("button", "Close", "quiet");
    close.type = "button";
    close.addEventListener("click", () => closeConnection(c.connectionId));
    const groups = c.groups.join(", ") + (c.groupCount > c.groups.length ? ` (+${c.groupCount - c.groups.length})` : "");
    const tr = row([c.connectionId, c.userId, groups, c.subprotocol || "raw", age(c.ageSeconds), c.queuedBytes, close]);
    tr.dataset.connection = c.connectionId;
    return tr;
  }));
  pagerText("conn-pager", state.connOffset, answer.connections.length, answer.total);
}

async function loadGroups() {
  const answer = await api(`hubs/${enc(state.hub)}/groups?offset=${state.groupOffset}&limit=${PAGE}`);
  document.getElementById("group-total").textContent = answer.total;
  document.querySelector("#group-table tbody").replaceChildren(...answer.groups.map((g) => row([g.name, g.members])));
  pagerText("group-pager", state.groupOffset, answer.groups.length, answer.total);
}

function pagerText(id, offset, shown, total) {
  const pager = document.getElementById(id);
  pager.querySelector("span").textContent = total ? `${offset + 1}–${offset + shown} of ${total}` : "none";
  pager.querySelector('[data-step="-1"]').disabled = offset === 0;
  pager.querySelector('[data-step="1"]').disabled = offset + shown >= total;
}

async function refresh() {
  await loadHubs();
  if (state.hub) await Promise.all([loadConnections(), loadGroups()]);
}

function select(hub) {
  state.hub = hub;
  state.connOffset = state.groupOffset = 0;
  document.getElementById("hub-name").textContent = hub;
  document.getElementById("hub-detail").hidden = false;
  refresh().catch(report);
}

async function closeConnection(connectionId) {
  try {
    await api(`hubs/${enc(state.hub)}/connections/${enc(connectionId)}/close`, { reason: "Closed from the dashboard." });
    setResult(document.getElementById("send-result"), `closed ${connectionId}`, true);
  } catch (error) {
    setResult(document.getElementById("send-result"), error.message, false);
  }
  refresh().catch(report);
}

function report(error) {
  if (!sessionEnded()) setResult(document.getElementById("send-result"), error.message, false);
}

export function startHubs() {
  const form = document.getElementById("send-form");
  const to = form.elements.namedItem("to"), who = form.elements.namedItem("who");
  to.addEventListener("change", () => { who.disabled = to.value === "all"; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const target = to.value;
    const body = { target, data: form.elements.namedItem("data").value,
      contentType: form.elements.namedItem("contentType").value };
    if (target !== "all") body.name = who.value;
    const result = document.getElementById("send-result");
    try {
      await api(`hubs/${enc(state.hub)}/send`, body);
      setResult(result, "sent", true);
    } catch (error) {
      setResult(result, error.message, false);
    }
  });
  const filter = document.getElementById("conn-filter");
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    state.by = filter.elements.namedItem("by").value;
    state.value = filter.elements.namedItem("what").value;
    state.connOffset = 0;
    loadConnections().catch(report);
  });
  for (const [id, key, load] of [["conn-pager", "connOffset", loadConnections], ["group-pager", "groupOffset", loadGroups]]) {
    document.getElementById(id).addEventListener("click", (event) => {
      const step = Number(event.target.dataset.step || 0);
      if (!step) return;
      state[key] = Math.max(0, state[key] + step * PAGE);
      load().catch(report);
    });
  }
  const tick = async () => {
    if (visible) await refresh().catch(report);
    if (!sessionEnded()) setTimeout(tick, 3000);
  };
  tick();
  return { shown: () => { visible = true; refresh().catch(report); }, hidden: () => { visible = false; } };
}
