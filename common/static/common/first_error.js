// A form refused: the page opens on the first field to correct, not on a message a screen
// above it.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var field = document.querySelector(
    ".errors input, .errors select, .errors textarea, .errorlist ~ input, .errorlist ~ select, .errorlist ~ textarea"
  );
  if (field) {
    field.scrollIntoView({ block: "center" });
    field.focus({ preventScroll: true });
  }
});
