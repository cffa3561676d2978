// django-celery-beat's periodic task page: show the chosen crontab in words under the field
// (its own template does this inline, which the Content-Security-Policy forbids).
(function ($) {
  const readableCrontabs = JSON.parse(document.getElementById("readable-crontabs").textContent);
  const originalHelp = document.getElementById("crontab-help-text").textContent;
  $(".field-crontab_translation").hide();
  $(".field-crontab").change(function () {
    $(".field-crontab .help").text(originalHelp + " Translation: " + readableCrontabs[$("#id_crontab").val()]);
  });
})(django.jQuery);
