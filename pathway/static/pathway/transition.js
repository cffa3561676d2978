// The transplant and infusion forms: the dose per kg, worked out as the cells and the weight
// are typed.
(function () {
  "use strict";
  function update() {
    var out = document.getElementById("dose-per-kg");
    var cells = document.getElementById("id_cells_administered") ||
      document.getElementById("id_cells_given");
    var weight = document.getElementById("id_weight_kg");
    if (!out || !cells || !weight) { return; }
    var c = parseFloat(cells.value), w = parseFloat(weight.value);
    if (!(c > 0) || !(w > 0)) { out.textContent = "enter the cells and the weight"; return; }
    var perKg = c / w / 1e6;
    var low = parseFloat(out.dataset.min), high = parseFloat(out.dataset.max);
    var inRange = perKg >= low && perKg <= high;
    out.textContent = perKg.toFixed(2) + " × 10⁶ cells per kg" + (inRange ? " (within the range)" : " (OUTSIDE the range)");
    out.className = inRange ? "dose-ok" : "dose-out";
  }
  document.addEventListener("input", update);
  document.addEventListener("DOMContentLoaded", update);
})();
