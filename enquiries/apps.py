from django.apps import AppConfig


class EnquiriesConfig(AppConfig):
    name = "enquiries"
    verbose_name = "Enquiries"

    def ready(self):
        # The consultations' admin registers itself (admin modules may look up the floors).
        from enquiries import admin_consultations  # noqa: F401
