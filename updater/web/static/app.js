// Small progressive enhancements; every page works without them.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.getAttribute("data-copy"));
  if (source && navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent.trim()).then(() => { button.textContent = "Copied"; });
  }
});
document.querySelectorAll("time").forEach((element) => {
  const moment = new Date(element.textContent.trim());
  if (!Number.isNaN(moment.getTime())) {
    element.title = element.textContent.trim();
    element.textContent = moment.toLocaleString();
  }
});
