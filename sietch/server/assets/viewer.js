// Sietch's desktop viewer: noVNC's RFB on the page's own WebSocket, the password supplied.
// The config comes from the page (a JSON script element), so no inline script is needed.
const config = JSON.parse(document.getElementById("sietch-viewer").textContent);
const { default: RFB } = await import(config.rfb);

const status = document.getElementById("status");
const socket = new URL(config.websocket, location.href);
socket.protocol = location.protocol === "https:" ? "wss:" : "ws:";

const rfb = new RFB(document.getElementById("screen"), socket.href, {
  credentials: { password: config.password },
  shared: true,
});
rfb.viewOnly = config.view_only;
rfb.scaleViewport = true;
rfb.resizeSession = false;
rfb.focusOnClick = !config.view_only;
window.sietchViewer = rfb; // for scripts driving the page (tests, the web console)

const say = (text) => { status.textContent = text; document.body.dataset.state = text; };
rfb.addEventListener("connect", () => say(config.view_only ? "connected (view only)" : "connected"));
rfb.addEventListener("disconnect", (e) => say(e.detail.clean ? "disconnected" : "connection lost"));
rfb.addEventListener("securityfailure", (e) => say(`refused: ${e.detail.reason || "security failure"}`));
rfb.addEventListener("credentialsrequired", () => say("refused: the VNC password is out of date, reload"));
