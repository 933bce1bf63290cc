"""What SES accepts of templates and template data."""

# SES limits (SES v2 API reference and developer guide, "Using templates to send personalized
# email"). Template data is a JSON string per destination; the template itself is bounded by the
# request (inline) or by the stored template's size.
MAX_TEMPLATE_DATA_CHARS = 262_144  # TemplateData, and ReplacementTemplateData of a bulk entry
MAX_STORED_TEMPLATE_BYTES = 500 * 1024  # a stored template, text and HTML parts together
MAX_INLINE_TEMPLATE_BYTES = 1024 * 1024  # an inline template's input JSON, text and HTML parts
MAX_BULK_DESTINATIONS = 50  # BulkEmailEntries of one SendBulkEmail call
