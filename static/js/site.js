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

  // <button data-copy="element-id">: copy that element's text (with a fallback where the Clipboard API
  // is missing, e.g. a plain-HTTP address other than localhost).
  const copyText = async (text) => {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const scratch = document.createElement("textarea");
    scratch.value = text;
    scratch.setAttribute("readonly", "");
    scratch.className = "visually-hidden";
    document.body.appendChild(scratch);
    scratch.select();
    const copied = document.execCommand("copy");
    scratch.remove();
    if (!copied) throw new Error("copy refused");
  };
  document.querySelectorAll("[data-copy]").forEach((button) => button.addEventListener("click", async () => {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    try {
      await copyText(document.getElementById(button.dataset.copy).textContent.trim());
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Select and copy by hand";
    }
    window.setTimeout(() => { button.textContent = label; }, 2500);
  }));

  // Tables on a phone: every cell learns its column's name (data-label), so the stylesheet can lay a
  // row out as a small card (.stack-table). Without this script a table scrolls inside itself instead.
  document.querySelectorAll("table.table:not(.stack-table):not([data-no-stack])").forEach((table) => {
    const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    if (!names.length) return;
    table.querySelectorAll("tbody tr").forEach((row) => {
      let column = 0;
      [...row.cells].forEach((cell) => {
        if (cell.colSpan === 1 && names[column] && !cell.hasAttribute("data-label")) {
          cell.dataset.label = names[column];
        }
        column += cell.colSpan;
      });
    });
    table.classList.add("stack-table");
  });

  // A form shown again with errors: bring the first one into view and put the cursor in its field.
  const firstError = document.querySelector(
    "form .has-error :is(input, select, textarea):not([type=hidden]), form .form-errors:not([hidden])");
  if (firstError) {
    firstError.scrollIntoView({ block: "center" });
    if (firstError.matches("input, select, textarea")) {
      firstError.focus({ preventScroll: true });
    } else {
      firstError.setAttribute("tabindex", "-1");
      firstError.focus({ preventScroll: true });
    }
  }
})();
