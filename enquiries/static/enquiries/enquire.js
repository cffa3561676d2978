// The browser's time zone, so that the nearest clinic can be proposed (no other data leaves).
document.addEventListener("DOMContentLoaded", function () {
  var field = document.getElementById("id_time_zone");
  if (!field || field.value) return;
  try {
    field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (error) {
    field.value = "";
  }
});
