from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    """The outbox's delivery: claim, render, send through a channel, record."""

    name = "delivery"
    verbose_name = "Delivery"
