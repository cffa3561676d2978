from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "COPD cell-therapy pathway"
admin.site.site_title = "Pathway tracker"
admin.site.index_title = "Treatment pathway"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
]
