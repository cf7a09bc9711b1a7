"""Former name of :mod:`reprobox.redact` (it shadowed the standard library's ``secrets`` for
readers and tools); kept so that older imports keep working."""

from .redact import is_secret_name, redact_text, strip_url_credentials

__all__ = ["is_secret_name", "redact_text", "strip_url_credentials"]
