// Small page actions, here rather than inline so that the Content-Security-Policy can forbid
// inline script: a button with data-print prints the page; a field with data-select-all
// selects its whole text when clicked (a link to copy).
document.addEventListener("click", (event) => {
  const target = event.target;
  if (target.closest("[data-print]")) {
    window.print();
  } else if (target.matches("[data-select-all]")) {
    target.select();
  }
});
