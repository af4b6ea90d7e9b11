// Import page: upload with a progress bar (XHR upload events), then poll the import until it lands.
"use strict";
(() => {
  const form = document.getElementById("import-form");
  if (form) {
    const bar = document.getElementById("upload-progress");
    const message = document.getElementById("upload-message");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const file = form.querySelector("input[type=file]").files[0];
      const limit = Number(form.getAttribute("data-max-bytes"));
      if (file && limit && file.size > limit) {
        message.textContent = `The file is ${file.size} bytes; the upload limit is ${limit} bytes.`;
        return;
      }
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false;
      bar.value = 0;
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
        message.textContent = `Uploading… ${Math.round(e.loaded / 1048576)} MiB`;
      });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { body = null; }
        if (xhr.status === 202 && body && body.result_url) {
          window.location.assign(body.result_url);
        } else {
          bar.hidden = true;
          message.textContent = body && body.error ? body.error.message : `Upload refused (HTTP ${xhr.status}).`;
        }
      });
      xhr.addEventListener("error", () => {
        bar.hidden = true;
        message.textContent = "The upload was interrupted; nothing was kept. Try again.";
      });
      xhr.send(new FormData(form));
    });
  }
  const state = document.getElementById("import-state");
  const poll = state && state.getAttribute("data-poll");
  if (poll) {
    const tick = () => {
      fetch(poll, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then((r) => r.json())
        .then((status) => {
          if (status.done) window.location.reload();
          else setTimeout(tick, 1000);
        })
        .catch(() => setTimeout(tick, 3000));
    };
    setTimeout(tick, 1000);
  }
})();
