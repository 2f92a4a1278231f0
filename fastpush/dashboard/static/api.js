// Talking to the server: JSON calls under /dashboard/api, and what the page shows when the
// session has ended (every call then stops until the operator logs in again).

let ended = false;

export function sessionEnded() {
  return ended;
}

export function showBanner(text) {
  const banner = document.getElementById("banner");
  banner.textContent = text;
  banner.hidden = false;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// GET (no body) or POST (a JSON body); the JSON answer, or null for an empty one.
export async function api(path, body) {
  if (ended) throw new ApiError(401, "The dashboard session has ended.");
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch("api/" + path, init);
  if (response.status === 401) {
    ended = true;
    showBanner("The dashboard session has ended. Log in again with a new URL (`fastpush dashboard` prints one).");
    throw new ApiError(401, "The dashboard session has ended.");
  }
  const text = await response.text();
  const answer = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, (answer && answer.message) || response.statusText);
  return answer;
}

export function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

export function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.append(td);
  }
  return tr;
}

export function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function setResult(node, text, good) {
  node.textContent = text;
  node.className = "result " + (good ? "good" : "bad");
}
