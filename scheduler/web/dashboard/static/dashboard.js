// The dashboard works without this file; it only adds conveniences. Loaded as a file because
// the Content-Security-Policy allows no inline script.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const selectAll = document.getElementById("select-all");
  if (selectAll) {
    selectAll.addEventListener("change", () => {
      for (const box of document.querySelectorAll("input.select-job")) {
        box.checked = selectAll.checked;
      }
    });
  }
});
