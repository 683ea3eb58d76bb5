// Every page: htmx answers with 4xx are messages to show, not to drop silently.
"use strict";
document.body.addEventListener("htmx:responseError", (event) => {
  const box = document.getElementById("messages");
  const text = event.detail.xhr.responseText || "request failed";
  box.replaceChildren(Object.assign(document.createElement("p"), {
    className: "error", role: "alert", textContent: text,
  }));
});
