// trio-echo's page: connects back to /ws on the same host, sends each line typed as a text
// message, shows its echo and round-trip time, then the session's summary. No library, no
// build step; every string from the network reaches the page as text, never as HTML.
"use strict";

const WORDS = {
  en: {
    connecting: "Connecting to {url} ...",
    open: "Connected to {url}. Type a line and press Enter; the line exit ends the session.",
    closed: "Closed: code {code}{reason}.",
    failed: "Could not connect to {url}: is the server running with --http?",
    label: "Line",
    send: "Send",
    hint: "Each line is one WebSocket text message; the server sends it back unchanged.",
    sent: "sent",
    echo: "echo",
    rtt: "round trip",
    summary: "Session summary",
    none: "No message was echoed.",
    total: "{n} messages echoed, {bytes} bytes each way; round trip min {min}, average {avg}, max {max} ms; {wrong} differed.",
    pending: "(waiting)",
  },
  ru: {
    connecting: "Подключение к {url} ...",
    open: "Подключено к {url}. Введите строку и нажмите Enter; строка exit завершает сеанс.",
    closed: "Соединение закрыто: код {code}{reason}.",
    failed: "Не удалось подключиться к {url}: запущен ли сервер с --http?",
    label: "Строка",
    send: "Отправить",
    hint: "Каждая строка — одно текстовое сообщение WebSocket; сервер возвращает его без изменений.",
    sent: "отправлено",
    echo: "эхо",
    rtt: "время отклика",
    summary: "Итоги сеанса",
    none: "Ни одно сообщение не вернулось.",
    total: "Сообщений вернулось: {n}, байт в каждую сторону: {bytes}; время отклика мин. {min}, сред. {avg}, макс. {max} мс; отличались: {wrong}.",
    pending: "(ожидание)",
  },
};

function language() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked && asked in WORDS) return asked;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const code = tag.toLowerCase().split("-")[0];
    if (code in WORDS) return code;
  }
  return "en";
}

const lang = language();
function say(key, values = {}) {
  return WORDS[lang][key].replace(/\{(\w+)\}/g, (_, name) => String(values[name]));
}

// Control characters and other invisible ones shown as escapes, as the server's log does.
function visible(text) {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

function start() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-text]")) {
    node.textContent = say(node.dataset.text);
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws`;
  const status = document.getElementById("status");
  const line = document.getElementById("line");
  const go = document.getElementById("go");
  const rows = document.querySelector("#log tbody");
  const waiting = [];  // sent, not echoed yet: echoes come back in order
  const rtts = [];
  let bytes = 0;
  let wrong = 0;
  let opened = false;

  function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }
  show("connecting", say("connecting", { url }));
  const socket = new WebSocket(url);

  socket.addEventListener("open", () => {
    opened = true;
    show("open", say("open", { url }));
    line.disabled = go.disabled = false;
    line.focus();
  });

  document.getElementById("send").addEventListener("submit", (event) => {
    event.preventDefault();
    if (socket.readyState !== WebSocket.OPEN) return;
    const text = line.value;
    const row = rows.insertRow();
    row.insertCell().textContent = visible(text);
    const echo = row.insertCell();
    echo.textContent = say("pending");
    row.insertCell().textContent = "";
    waiting.push({ text, row, began: performance.now() });
    socket.send(text);
    line.value = "";
  });

  socket.addEventListener("message", (event) => {
    const now = performance.now();
    const sent = waiting.shift();
    const text = typeof event.data === "string" ? event.data : "(binary)";
    if (!sent) return;
    const rtt = now - sent.began;
    rtts.push(rtt);
    bytes += new TextEncoder().encode(text).length;
    const [, echo, time] = sent.row.cells;
    echo.textContent = visible(text);
    echo.className = text === sent.text ? "same" : "differs";
    if (text !== sent.text) wrong += 1;
    time.textContent = `${rtt.toFixed(1)} ms`;
    sent.row.dataset.rtt = rtt.toFixed(3);
  });

  socket.addEventListener("close", (event) => {
    line.disabled = go.disabled = true;
    if (!opened) {
      show("closed", say("failed", { url }));
      return;
    }
    const reason = event.reason ? ` (${visible(event.reason)})` : "";
    show("closed", say("closed", { code: event.code, reason }));
    const summary = document.getElementById("summary");
    const total = document.getElementById("summary-text");
    if (rtts.length === 0) {
      total.textContent = say("none");
    } else {
      const sum = rtts.reduce((a, b) => a + b, 0);
      total.textContent = say("total", {
        n: rtts.length, bytes, wrong,
        min: Math.min(...rtts).toFixed(1),
        avg: (sum / rtts.length).toFixed(1),
        max: Math.max(...rtts).toFixed(1),
      });
    }
    summary.hidden = false;
    summary.dataset.messages = String(rtts.length);
  });
}

document.addEventListener("DOMContentLoaded", start);
