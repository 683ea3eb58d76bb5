"""Run inside a desktop guest: a test page and the server that records what it sees.

``python3 page.py PORT DIR``: GET / is a page whose top 60 % has the background
COLOUR and whose bottom 40 % is a text box; the page posts the box's text to
/typed and every mouse press (screen coordinates, button) to /click, and this
server writes them to DIR/typed and appends them to DIR/clicks.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COLOUR = "#3366cc"
PAGE = f"""<!doctype html><html><head><title>sietch-test-page</title><style>
html, body {{ margin: 0; height: 100%; background: {COLOUR}; overflow: hidden; }}
textarea {{ position: fixed; left: 0; top: 60%; width: 100%; height: 40%; border: 0;
  margin: 0; padding: 0; background: #ffffff; font-size: 24px; }}
</style></head><body><textarea id="box" autofocus></textarea><script>
const post = (path, body) => fetch(path, {{method: "POST", body}});
document.getElementById("box").addEventListener("input", e => post("/typed", e.target.value));
document.addEventListener("mousedown", e =>
  post("/click", JSON.stringify({{x: e.screenX, y: e.screenY, button: e.button}})));
</script></body></html>"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        out = Path(sys.argv[2])
        if self.path == "/typed":
            (out / "typed").write_text(data)
        elif self.path == "/click":
            with (out / "clicks").open("a") as f:
                f.write(json.dumps(json.loads(data)) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
