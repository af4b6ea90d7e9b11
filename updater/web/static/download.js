// Updates page: while a release downloads, poll its progress; reload when it ends (staged → "Update to X").
// A download just queued (data-since: when it was asked for) is waited for until the worker starts it.
"use strict";
(() => {
  const QUEUE_WAIT_MS = 60000;
  for (const box of document.querySelectorAll(".download[data-poll]")) {
    const url = box.getAttribute("data-poll");
    const since = Date.parse(box.getAttribute("data-since") || "") || 0;
    const bar = box.querySelector("progress");
    const message = box.querySelector(".download-message");
    const waiting = () => since && Date.now() - since < QUEUE_WAIT_MS;
    const tick = () => {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then((r) => (r.status === 404 ? null : r.json()))
        .then((d) => {
          const started = d && Date.parse(d.started_at) >= since - 1000;
          if (!started && waiting()) {
            setTimeout(tick, 1000);
          } else if (!d || !d.active) {
            window.location.replace(window.location.pathname);
          } else {
            bar.value = d.percent;
            message.textContent = `Downloading… ${d.percent} % (${d.bytes_done} of ${d.bytes_total} bytes)`;
            setTimeout(tick, 1000);
          }
        })
        .catch(() => setTimeout(tick, 3000));
    };
    setTimeout(tick, 1000);
  }
})();
