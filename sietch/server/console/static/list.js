// The sandboxes list: its rows refresh every 2 s (htmx), but not while a person is
// choosing rows or has focus in them, which a refresh would take away.
"use strict";
document.body.addEventListener("htmx:beforeRequest", (event) => {
  const rows = document.getElementById("rows");
  if (event.detail.elt !== rows) return;
  if (rows.querySelector("input:checked") || rows.contains(document.activeElement)) {
    event.preventDefault();
  }
});
