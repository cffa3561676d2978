"""The second factor (TOTP, django-otp) for staff: when `OTP_REQUIRED` is on (the default with
DEBUG off), a signed-in member of staff whose session is not yet verified is sent to enter a
code from their authenticator app, or, with no app set up yet, to set one up."""

import base64

import segno
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

DEVICE_NAME = "authenticator app"


class TokenForm(forms.Form):
    token = forms.CharField(
        label="6-digit code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


def _confirmed_device(user):
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).first()


@login_required(login_url="admin:login")
def second_factor_verify(request):
    device = _confirmed_device(request.user)
    if device is None:
        return redirect("second-factor-enrol")
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["token"]):
            otp_login(request, device)
            return redirect(request.GET.get("next") or "admin:index")
        form.add_error("token", "That code is not right, or has expired: try the next one.")
    return _page(request, "Enter your code", form)


@login_required(login_url="admin:login")
def second_factor_enrol(request):
    """Set up an authenticator app: scan the code, then prove it with the first code."""
    if _confirmed_device(request.user) is not None:
        return redirect("second-factor-verify")
    device, _ = TOTPDevice.objects.get_or_create(
        user=request.user, confirmed=False, defaults={"name": DEVICE_NAME}
    )
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["token"]):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            otp_login(request, device)
            return redirect("admin:index")
        form.add_error("token", "That code is not right: check the app's clock and try again.")
    qr = segno.make(device.config_url, error="m").svg_inline(scale=4, border=2)
    key = base64.b32encode(device.bin_key).decode()
    return _page(request, "Set up your second factor", form, qr=qr, manual_key=key)


def _page(request, title, form, **extra):
    context = admin.site.each_context(request) | {"title": title, "form": form, **extra}
    return render(request, "common/second_factor.html", context)


# Pages a signed-in, unverified member of staff may still reach.
_OPEN = ("/admin/login/", "/admin/logout/", "/admin/second-factor/", "/admin/jsi18n/")


class SecondFactorMiddleware:
    """After django-otp's middleware: an unverified staff session is sent to verify or enrol."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (
            settings.OTP_REQUIRED
            and user is not None
            and user.is_authenticated
            and user.is_staff
            and request.path.startswith("/admin/")
            and not request.path.startswith(_OPEN)
            and not user.is_verified()
        ):
            target = reverse("second-factor-verify")
            if _confirmed_device(user) is None:
                target = reverse("second-factor-enrol")
            return redirect(f"{target}?next={request.path}")
        return self.get_response(request)
