import contextlib
import smtplib
from email.mime.image import MIMEImage

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from delivery.channels import DeliveryError, OutgoingMessage


class EmailChannel:
    """Django's email backend (`EMAIL_URL`), with a timeout on the connection.

    Used as a context manager (`with EmailChannel() as email:`), it keeps one connection to
    the mail server for every message sent inside the block, opened at the first and closed
    at the end: a batch pays for one SMTP session instead of one per message. Outside a block
    each `send` opens and closes a connection of its own.
    """

    def __init__(self):
        self._batch_connection = None

    def __enter__(self):
        self._batch_connection = get_connection(timeout=settings.EMAIL_TIMEOUT)
        return self

    def __exit__(self, *exc):
        self._close_batch_connection()
        self._batch_connection = None

    def _close_batch_connection(self) -> None:
        # Closing says QUIT; a connection that already broke cannot, and need not.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self._batch_connection.close()

    def _connection(self):
        if self._batch_connection is None:
            return get_connection(timeout=settings.EMAIL_TIMEOUT)
        # Opened here, not by the backend's send_messages, so that it outlives the message;
        # a no-op while it is open.
        self._batch_connection.open()
        return self._batch_connection

    def send(self, message: OutgoingMessage) -> str:
        """Send; returns the Message-ID used.

        The Message-ID carries the outbox's idempotency key, so a re-send after a crash is
        recognisable as the same message.
        """
        message_id = f"<{message.idempotency_key}@pathway-tracker>"
        try:
            email = EmailMultiAlternatives(
                subject=message.subject,
                body=message.text,
                from_email=settings.DEFAULT_FROM_EMAIL,
                to=[message.to],
                headers={"Message-ID": message_id},
                connection=self._connection(),
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
            email.send()
        except smtplib.SMTPRecipientsRefused as error:
            # The server refused the address itself: 5xx is for good (no such mailbox), 4xx
            # is "try later" (a full mailbox, greylisting). The session itself is still good.
            codes = [code for code, _ in error.recipients.values()]
            permanent = bool(codes) and all(500 <= code < 600 for code in codes)
            raise DeliveryError(f"email: {error}", permanent=permanent) from error
        except (smtplib.SMTPException, OSError) as error:
            # The session may be broken: the next message of the batch opens a new one rather
            # than failing on this one too.
            if self._batch_connection is not None:
                self._close_batch_connection()
            raise DeliveryError(f"email: {error}") from error
        return message_id
