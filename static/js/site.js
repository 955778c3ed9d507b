// Behaviour every page shares. It lives here, not in the HTML, so that the Content-Security-Policy
// can forbid inline script and event-handler attributes (docs/SECURITY.md).
(function () {
  "use strict";

  // <form data-confirm="Delete this image for good?">: ask before a destructive action.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // <button data-copy="element-id">: copy that element's text.
  document.querySelectorAll("[data-copy]").forEach((button) => button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(document.getElementById(button.dataset.copy).textContent);
    button.textContent = "Copied";
  }));
})();
