// Line plots on a canvas, for the overview's last 15 minutes. Our own small module: no library.
//
// drawPlot(canvas, times, lines, options)
//   times: sample times in seconds since the epoch, oldest first
//   lines: [{values: [...], color: "#hex", label: "name"}], one value per time
//   options: {windowSeconds: 900, now: seconds, unit: ""}

const PAD = { left: 38, right: 6, top: 6, bottom: 16 };

export const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"];

export function formatNumber(value) {
  const abs = Math.abs(value);
  if (abs >= 1e9) return (value / 1e9).toFixed(abs >= 1e10 ? 0 : 1) + "G";
  if (abs >= 1e6) return (value / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + "M";
  if (abs >= 1e4) return (value / 1e3).toFixed(0) + "k";
  if (abs >= 100 || Number.isInteger(value)) return String(Math.round(value));
  return value.toFixed(abs >= 10 ? 1 : 2);
}

// A round upper bound for the y axis: 1, 2 or 5 times a power of ten, at least `top`.
function niceCeiling(top) {
  if (top <= 1) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(top)));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= top) return step * power;
  }
  return 10 * power;
}

export function drawPlot(canvas, times, lines, options = {}) {
  const windowSeconds = options.windowSeconds ?? 900;
  const now = options.now ?? Date.now() / 1000;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const start = now - windowSeconds;
  let top = 0;
  for (const line of lines) {
    line.values.forEach((v, i) => { if (times[i] >= start && v > top) top = v; });
  }
  top = niceCeiling(top * 1.05);
  const plotWidth = width - PAD.left - PAD.right, plotHeight = height - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + ((t - start) / windowSeconds) * plotWidth;
  const y = (v) => PAD.top + plotHeight - (v / top) * plotHeight;

  ctx.font = "10px system-ui, sans-serif";
  ctx.fillStyle = "#6b7385";
  ctx.strokeStyle = "#e5e7eb";
  ctx.lineWidth = 1;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction, yy = Math.round(y(value)) + 0.5;
    ctx.beginPath(); ctx.moveTo(PAD.left, yy); ctx.lineTo(width - PAD.right, yy); ctx.stroke();
    ctx.fillText(formatNumber(value), PAD.left - 4, yy);
  }
  ctx.textBaseline = "alphabetic";
  ctx.textAlign = "left";
  ctx.fillText("-15 min", PAD.left, height - 3);
  ctx.textAlign = "right";
  ctx.fillText("now", width - PAD.right, height - 3);

  ctx.lineWidth = 1.5;
  ctx.lineJoin = "round";
  lines.forEach((line, n) => {
    ctx.strokeStyle = line.color || COLORS[n % COLORS.length];
    ctx.beginPath();
    let drawing = false;
    line.values.forEach((v, i) => {
      if (times[i] < start) return;
      const px = x(times[i]), py = y(v);
      if (drawing) ctx.lineTo(px, py); else { ctx.moveTo(px, py); drawing = true; }
    });
    ctx.stroke();
  });
}
