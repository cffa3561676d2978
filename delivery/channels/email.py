import smtplib
from email.mime.image import MIMEImage

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from delivery.channels import DeliveryError, OutgoingMessage


class EmailChannel:
    """Django's email backend (`EMAIL_URL`), with a timeout on the connection."""

    def send(self, message: OutgoingMessage) -> str:
        """Send; returns the Message-ID used.

        The Message-ID carries the outbox's idempotency key, so a re-send after a crash is
        recognisable as the same message.
        """
        message_id = f"<{message.idempotency_key}@pathway-tracker>"
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[message.to],
            headers={"Message-ID": message_id},
            connection=get_connection(timeout=settings.EMAIL_TIMEOUT),
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        for filename, content, mimetype in message.attachments:
            if filename in message.inline:
                image = MIMEImage(content, _subtype=mimetype.split("/")[1])
                image.add_header("Content-ID", f"<{filename}>")
                image.add_header("Content-Disposition", "inline", filename=filename)
                email.attach(image)
            else:
                email.attach(filename, content, mimetype)
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as error:
            # The server refused the address itself: 5xx is for good (no such mailbox), 4xx
            # is "try later" (a full mailbox, greylisting).
            codes = [code for code, _ in error.recipients.values()]
            permanent = bool(codes) and all(500 <= code < 600 for code in codes)
            raise DeliveryError(f"email: {error}", permanent=permanent) from error
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"email: {error}") from error
        return message_id
