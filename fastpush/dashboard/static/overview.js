// The overview: one tile per figure, its current value and a plot of the last 15 minutes,
// from /dashboard/api/overview (samples the server takes every few seconds).
import { api, element, sessionEnded } from "./api.js";
import { COLORS, drawPlot, formatNumber } from "./plot.js";

const SUBPROTOCOLS = ["raw", "json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1",
  "protobuf.webpubsub.azure.v1", "protobuf.reliable.webpubsub.azure.v1"];

// id, title, the series it plots (the first is the value shown), how the value reads
const TILES = [
  ["connections", "Connections", ["connections"]],
  ["subprotocols", "Connections by subprotocol", SUBPROTOCOLS.map((p) => "connections:" + p)],
  ["hubs", "Hubs", ["hubs"]],
  ["users", "Users", ["users"]],
  ["groups", "Groups", ["groups"]],
  ["messagesIn", "Messages in from clients /s", ["messagesIn"]],
  ["messagesOut", "Messages out (sends fanned out) /s", ["messagesOut"]],
  ["deliveries", "Deliveries /s", ["deliveries"]],
  ["slowCloses", "Slow clients closed", ["slowCloses"]],
  ["recoveries", "Reliable recoveries (succeeded, refused)", ["recoveries", "recoveriesRefused"]],
  ["brokerUp", "Broker", ["brokerUp", "brokerReconnects"]],
];

const data = { time: [] };
let windowSeconds = 900;
let last = 0;

function buildTiles() {
  const tiles = document.getElementById("tiles");
  for (const [id, title, series] of TILES) {
    const tile = element("div", null, "tile");
    tile.id = "tile-" + id;
    tile.append(element("div", title, "title"));
    const value = element("div", "–", "value");
    value.id = "value-" + id;
    tile.append(value);
    tile.append(document.createElement("canvas"));
    if (series.length > 1) {
      const legend = element("div", null, "legend");
      series.forEach((name, i) => {
        const item = element("span", name.replace("connections:", "").replace("brokerUp", "up (1) / down (0)")
          .replace("brokerReconnects", "reconnects").replace("recoveriesRefused", "refused"));
        const swatch = document.createElement("i");
        swatch.style.background = COLORS[i % COLORS.length];
        item.prepend(swatch);
        legend.append(item);
      });
      tile.append(legend);
    }
    tiles.append(tile);
  }
}

function shownValue(id, latest) {
  if (id === "subprotocols") {
    return SUBPROTOCOLS.map((p) => latest("connections:" + p)).map(formatNumber).join(" / ");
  }
  if (id === "brokerUp") return latest("brokerUp") >= 1 ? "healthy" : "down";
  if (id === "recoveries") return formatNumber(latest("recoveries")) + " / " + formatNumber(latest("recoveriesRefused"));
  return formatNumber(latest(TILES.find((t) => t[0] === id)[2][0]));
}

function render() {
  const n = data.time.length;
  const latest = (name) => (n && data[name] ? data[name][n - 1] : 0);
  const now = Date.now() / 1000;
  for (const [id, , series] of TILES) {
    document.getElementById("value-" + id).textContent = n ? shownValue(id, latest) : "–";
    const canvas = document.querySelector("#tile-" + id + " canvas");
    if (canvas.clientWidth > 0) {
      drawPlot(canvas, data.time, series.map((name, i) => ({ values: data[name] || [], color: COLORS[i % COLORS.length] })),
        { windowSeconds, now });
    }
  }
}

async function poll() {
  const answer = await api("overview?since=" + last);
  const series = answer.series;
  windowSeconds = answer.sampleSeconds * answer.historySamples;
  document.getElementById("sample-seconds").textContent = answer.sampleSeconds;
  for (const [name, values] of Object.entries(series)) {
    data[name] = (data[name] || []).concat(values);
  }
  if (series.time.length) last = series.time[series.time.length - 1];
  const keep = data.time.findIndex((t) => t >= Date.now() / 1000 - windowSeconds);
  if (keep > 0) for (const name of Object.keys(data)) data[name] = data[name].slice(keep);
  render();
}

export function startOverview() {
  buildTiles();
  const tick = async () => {
    try { await poll(); } catch (error) { if (!sessionEnded()) console.warn("overview:", error.message); }
    if (!sessionEnded()) setTimeout(tick, 2000);
  };
  tick();
  window.addEventListener("resize", render);
  return { shown: render };
}
