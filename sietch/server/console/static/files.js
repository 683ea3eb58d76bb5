// The files tab: upload by drag-and-drop (or the file input) with PUT, then show the list.
"use strict";
(() => {
  const drop = document.getElementById("drop");
  if (!drop) return;
  const status = document.getElementById("upload-status");
  const upload = async (files) => {
    for (const file of files) {
      const path = `${drop.dataset.dir.replace(/\/$/, "")}/${file.name}`;
      status.textContent = `uploading ${file.name}…`;
      const answer = await fetch(`${drop.dataset.upload}?path=${encodeURIComponent(path)}`, {
        method: "PUT", body: file, headers: { "X-Console": "1" },
      });
      if (!answer.ok) {
        status.textContent = `${file.name}: ${await answer.text()}`;
        status.className = "error";
        return;
      }
    }
    location.reload();
  };
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload(event.dataTransfer.files);
  });
  document.getElementById("upload").addEventListener("change", (event) => upload(event.target.files));
})();
