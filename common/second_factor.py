"""The second factor (TOTP, django-otp) for staff: when `OTP_REQUIRED` is on (the default with
DEBUG off), a signed-in member of staff whose session is not yet verified is sent to enter a
code from their authenticator app, or, with no app set up yet, to set one up."""

import base64
from urllib.parse import urlencode

import segno
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp import login as otp_login
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice, default_key

DEVICE_NAME = "authenticator app"
# The key a session is enrolling with: kept in that session alone, so that nobody else who
# knows the password sees the key the user confirms.
ENROL_KEY = "second_factor_enrol_key"


class TokenForm(forms.Form):
    token = forms.CharField(
        label="6-digit code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


def _confirmed_device(user):
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).first()


def _next(request) -> str:
    """Where to go after the code: a path on this site, never another site."""
    target = request.GET.get("next", "")
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("admin:index")


@login_required(login_url="admin:login")
def second_factor_verify(request):
    device = _confirmed_device(request.user)
    if device is None:
        return redirect("second-factor-enrol")
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["token"]):
            otp_login(request, device)
            return redirect(_next(request))
        form.add_error("token", "That code is not right, or has expired: try the next one.")
    return _page(request, "Enter your code", form)


@login_required(login_url="admin:login")
def second_factor_enrol(request):
    """Set up an authenticator app: scan the code, then prove it with the first code. The
    device is made only then, once, under a lock on the user."""
    if _confirmed_device(request.user) is not None:
        return redirect("second-factor-verify")
    key = request.session.get(ENROL_KEY) or default_key()
    request.session[ENROL_KEY] = key
    pending = TOTPDevice(user=request.user, name=DEVICE_NAME, key=key)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if _code_matches(pending, form.cleaned_data["token"]):
            with transaction.atomic():
                get_user_model().objects.select_for_update().filter(pk=request.user.pk).first()
                if _confirmed_device(request.user) is None:
                    TOTPDevice.objects.filter(user=request.user, confirmed=False).delete()
                    pending.confirmed = True
                    pending.save()
            del request.session[ENROL_KEY]
            device = _confirmed_device(request.user)
            otp_login(request, device)
            return redirect("admin:index")
        form.add_error("token", "That code is not right: check the app's clock and try again.")
    qr = segno.make(pending.config_url, error="m").svg_inline(scale=4, border=2)
    manual_key = base64.b32encode(pending.bin_key).decode()
    return _page(request, "Set up your second factor", form, qr=qr, manual_key=manual_key)


def _code_matches(device: TOTPDevice, token: str) -> bool:
    """A code from the app being set up, checked without saving anything."""
    if not token.isdigit():
        return False
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return totp.verify(int(token), device.tolerance)


def _page(request, title, form, **extra):
    context = admin.site.each_context(request) | {"title": title, "form": form, **extra}
    return render(request, "common/second_factor.html", context)


# Pages a signed-in, unverified member of staff may still reach.
_OPEN = ("/admin/login/", "/admin/logout/", "/admin/second-factor/", "/admin/jsi18n/")


class SecondFactorMiddleware:
    """After django-otp's middleware: an unverified staff session is sent to verify or enrol.
    It reads `path_info`, the path within the application, which a URL prefix (SCRIPT_NAME)
    cannot change."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        path = request.path_info
        if (
            settings.OTP_REQUIRED
            and user is not None
            and user.is_authenticated
            and user.is_staff
            and path.startswith("/admin/")
            and not path.startswith(_OPEN)
            and not user.is_verified()
        ):
            target = reverse("second-factor-verify")
            if _confirmed_device(user) is None:
                target = reverse("second-factor-enrol")
            return redirect(f"{target}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
