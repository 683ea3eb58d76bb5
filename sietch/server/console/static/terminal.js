// The terminal tab: xterm.js on the console's exec WebSocket (the API's exec_ws protocol),
// a login shell on a PTY that follows the window's size.
"use strict";
(() => {
  const box = document.getElementById("terminal");
  const status = document.getElementById("term-status");
  const term = new Terminal({ cursorBlink: true, scrollback: 5000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  box.dataset.size = `${term.rows} ${term.cols}`;
  const url = new URL(box.dataset.socket, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  const shell = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: "start", cmd: shell, pty: true, stdin: true,
      cols: term.cols, rows: term.rows, timeout: 86400, encoding: "binary",
    }));
  };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.type === "started") {
        status.textContent = "connected";
        box.dataset.state = "connected";
        term.focus();
      } else if (msg.type === "exit") {
        status.textContent = `the shell exited (${msg.exit_code})`;
      } else if (msg.type === "error") {
        status.textContent = msg.error.message;
      }
      return;
    }
    term.write(new Uint8Array(event.data).subarray(1));
  };
  ws.onclose = (event) => {
    if (box.dataset.state !== "connected") status.textContent = `not connected (${event.code})`;
    box.dataset.state = "closed";
  };
  term.onData((data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
    box.dataset.size = `${rows} ${cols}`; // as `stty size` says it
  });
  window.addEventListener("resize", () => fit.fit());
})();
