// The dashboard page: tabs, the status line, logging out; each tab is its own module.
import { api, sessionEnded } from "./api.js";
import { startClient } from "./client.js";
import { startHubs } from "./hubs.js";
import { startOverview } from "./overview.js";
import { startTrace } from "./trace.js";

const tabs = { overview: startOverview(), hubs: startHubs(), trace: startTrace(), client: startClient() };

function show(name) {
  for (const button of document.querySelectorAll("nav button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const [tab, view] of Object.entries(tabs)) {
    const visible = tab === name;
    document.getElementById("tab-" + tab).hidden = !visible;
    if (visible && view.shown) view.shown();
    if (!visible && view.hidden) view.hidden();
  }
  history.replaceState(null, "", "#" + name);
}

for (const button of document.querySelectorAll("nav button")) button.addEventListener("click", () => show(button.dataset.tab));
document.getElementById("logout").addEventListener("click", async () => {
  if (!sessionEnded()) await api("logout", {}).catch(() => {});
  location.reload();
});
document.getElementById("status").textContent = location.host;
show(location.hash.slice(1) in tabs ? location.hash.slice(1) : "overview");
