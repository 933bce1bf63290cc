"""E-mail addresses: the one canonical form sesd stores and sends, and the suppression key.

Pure: no I/O. Two functions decide everything about an address:

- `canonical_address` is what intake stores and the sender hands to SES: the domain lower-cased
  and IDNA-encoded per UTS #46 (email-validator's `ascii_domain`), the local part as given. SES
  v2 takes 7-bit ASCII only and has no SMTPUTF8, so a non-ASCII local part cannot be delivered at
  all and is refused here, for every transport: the outbox accepts exactly what production would.
- `suppression_key` is what suppressions match on: the canonical domain plus the local part
  case-folded (full Unicode case folding, NFC). It works on any string, so bounce reports and
  manual entries that are not valid for sending still get a stable key. For every address
  `canonical_address` accepts, the key is the canonical form in ASCII lower case
  (`key_of_canonical`), which lets SQLite compute it with its ASCII-only `lower()`.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import idna
import orjson
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

MAX_ADDRESS_LENGTH = 254  # RFC 5321 path limit, less the angle brackets
MAX_LOCAL_LENGTH = 64
DOMAIN_CACHE_SIZE = 8192

# Control characters never belong in a value that becomes a header (CR/LF would inject headers).
# C1 controls (NEL \x85 among them) and U+2028/U+2029 are line boundaries too (str.splitlines):
# the outbox transport refuses them at send time, so they are refused before anything is stored.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# The fast path: a plain ASCII dot-atom local part, LDH domain labels and an alphabetic TLD.
# email-validator accepts every address it lets through (a hypothesis test keeps it so);
# anything else (IDN, quoted local parts, Punycode, special-use names such as .test) is decided
# by email-validator itself. Validating 100,000 addresses through email-validator alone takes
# seconds; through this regex, tens of milliseconds.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PLAIN_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
PLAIN_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")
# Names email-validator refuses or checks further: special-use domains (matched as suffixes
# with str.endswith, much faster than a regex alternation), and labels with "--" in third and
# fourth place (RFC 5890 reserves them; "xn--" Punycode must decode to valid IDNA).
_SPECIAL_USE_SUFFIXES = tuple(f".{name.lower()}" for name in SPECIAL_USE_DOMAIN_NAMES)
_RESERVED_HYPHENS = re.compile(r"(?:^|\.)..--")
# An RFC 2047 encoded word: "=?charset?B|Q?text?=". "=" and "?" are legal in a local part, but a
# mail reader decodes the word in the To: header, so "=?utf-8?q?victim=40target.example=2C?=@x"
# would show (and reply to) a different address than the one SES delivers to.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[BbQq]\?[^?]*\?=")


class AddressError(ValueError):
    """An address sesd will not store or send; the message names it and says why."""

    def __init__(self, address: str, problem: str) -> None:
        super().__init__(f"{shown(address)} {problem}")
        self.address = address
        self.problem = problem


def shown(address: str, limit: int = 100) -> str:
    """An address as reflected in an error: JSON-quoted (control characters escaped), cut short."""
    return orjson.dumps(address[:limit] + ("…" if len(address) > limit else "")).decode()


def is_plain(address: str) -> bool:
    """True only for addresses that are plainly valid; False means "ask email-validator"."""
    return _plain_canonical(address) is not None


def _plain_canonical(address: str) -> str | None:
    """The canonical form of a plainly valid ASCII address, or None: "ask email-validator"."""
    if (len(address) > MAX_ADDRESS_LENGTH or "=?" in address  # "=?" may open an encoded word
            or not PLAIN_EMAIL.fullmatch(address)):
        return None
    at = address.rindex("@")
    domain = address[at + 1:].lower()
    if (at > MAX_LOCAL_LENGTH or f".{domain}".endswith(_SPECIAL_USE_SUFFIXES)
            or ("--" in domain and _RESERVED_HYPHENS.search(domain))):
        return None
    return f"{address[:at]}@{domain}"


def canonical_address(address: str) -> str:
    """The form sesd stores and SES receives, or AddressError.

    Plain ASCII addresses take a regex and a lower(); others are checked by email-validator, the
    domain once per distinct spelling (cached), so a list of 20,000 recipients at a few IDN
    domains costs a few validations rather than 20,000."""
    plain = _plain_canonical(address)
    if plain is not None:
        return plain
    if CONTROL_CHARS.search(address):
        raise AddressError(address, "contains control characters or line breaks")
    if len(address) > MAX_ADDRESS_LENGTH:  # UTF-8 bytes are at least as many as characters
        raise AddressError(address, "is not a valid e-mail address")
    if _ENCODED_WORD.search(address):
        raise AddressError(address, "contains an RFC 2047 encoded word (=?charset?Q?...?=), "
                                    "which mail readers would show as a different address")
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        if not _email_validator_accepts(address, smtputf8=True):
            raise AddressError(address, "is not a valid e-mail address")
        raise AddressError(address, "has non-ASCII characters before the @, which SES cannot "
                                    "deliver (it has no SMTPUTF8)")
    if len(local) <= MAX_LOCAL_LENGTH and PLAIN_LOCAL.fullmatch(local):
        try:
            ascii_domain, unicode_domain = _domain_forms(domain)
        except EmailNotValidError:
            raise AddressError(address, "is not a valid e-mail address") from None
        # email-validator's length rule, on each form a mail system may use (UTF-8 bytes).
        forms = (address, f"{local}@{unicode_domain}", f"{local}@{ascii_domain}")
        if any(len(form.encode()) > MAX_ADDRESS_LENGTH for form in forms):
            raise AddressError(address, "is not a valid e-mail address")
        return f"{local}@{ascii_domain}"
    try:  # an unusual ASCII local part: email-validator decides it whole
        validated = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise AddressError(address, "is not a valid e-mail address") from None
    return f"{local}@{validated.ascii_domain}"


@functools.lru_cache(maxsize=DOMAIN_CACHE_SIZE)
def _domain_forms(domain: str) -> tuple[str, str]:
    """(ASCII, Unicode) forms of a domain, exactly as email-validator computes them, or
    EmailNotValidError. A plain local part ("a") cannot change the verdict on the domain; the
    length of the whole address is checked by the caller."""
    validated = validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=False)
    return validated.ascii_domain, validated.domain


def _email_validator_accepts(address: str, *, smtputf8: bool) -> bool:
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=smtputf8)
    except EmailNotValidError:
        return False
    return True


def valid_syntax(address: str) -> bool:
    """email-validator's verdict (no DNS) on an address that may not be sendable, such as a
    non-ASCII local part: what a manual suppression may name. Never a control character."""
    if is_plain(address):
        return True
    if CONTROL_CHARS.search(address) or len(address) > MAX_ADDRESS_LENGTH:
        return False
    return _email_validator_accepts(address, smtputf8=True)


def suppression_key(address: str) -> str:
    """The key suppressions match on, for any string: no spelling of one mailbox dodges it.

    Local part: NFC of the full Unicode case folding (of the NFD form, as Unicode's canonical
    caseless match asks). Domain: the canonical ASCII form when email-validator accepts it, else
    plain UTS #46 IDNA, else its case-folded NFC text (a garbled bounce report still gets a
    stable key, it just matches nothing sesd would send)."""
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return _fold(address)
    return f"{_fold(local)}@{_key_domain(domain)}"


def key_of_canonical(canonical: str) -> str:
    """suppression_key of an address `canonical_address` returned: its local part is ASCII and
    its domain lower-case ASCII already, so ASCII lower-casing is the whole fold. SQLite's
    built-in lower() does the same, which keeps the claim's check a plain index lookup."""
    return canonical.lower()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())


def _key_domain(domain: str) -> str:
    if is_plain(f"a@{domain}"):
        return domain.lower()
    try:
        return _domain_forms(domain)[0]
    except EmailNotValidError:
        pass
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return _fold(domain)
