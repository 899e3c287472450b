"""Text from outside — catalogs, servers, file names — made safe to show and to store.

Three rules, each in one place:

- ``printable``: nothing a terminal or a page would act on gets through (control characters,
  escape sequences, bidirectional overrides); lone surrogates, which cannot even be encoded,
  become U+FFFD.
- ``unsafe_character``: what the catalog refuses in its text fields, with a description the
  user can act on.
- ``redact``: credentials in URLs (``https://user:token@host``) are never echoed.

And one reading of what is a URL (``url_scheme``), for the catalog and the fetcher alike.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

# Bidirectional embeddings, overrides and isolates: they reorder what follows them, so
# text can be made to read as something else (CVE-2021-42574, "Trojan Source").
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# Schemes recognised even without "//" (a bare "name:" prefix could be part of a file name).
_BARE_SCHEMES = {"file", "data", "ftp", "ftps", "sftp", "javascript", "mailto"}
WEB_SCHEMES = ("http", "https")
# A DNS label as hosts are written (underscores appear in real hosts, so they pass).
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")
# An IPv6 literal (with a zone) and an optional port: what follows `//` when it opens with `[`.
_BRACKETED = re.compile(r"\[[0-9A-Fa-f:.]+(?:%25[^\]]+)?\](?::\d*)?")
# Anything printable() changes or unsafe_character() may refuse: Unicode's control characters
# (category Cc is exactly U+0000–U+001F and U+007F–U+009F), bidi controls, lone surrogates.
# A search for it is the fast path of both; the loops below run only when it finds one.
_SUSPECT = re.compile("[\x00-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS)) + "\ud800-\udfff]")


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with control characters (but newline and tab), bidi controls and lone
    surrogates replaced, so that printing or rendering it cannot act on the reader."""

    def replace(found: re.Match[str]) -> str:
        char = found.group()
        if char in "\n\t" and keep_newlines:
            return char
        return "\ufffd" if char == "\x1b" or "\ud800" <= char <= "\udfff" else ""

    return _SUSPECT.sub(replace, str(text))


def unsafe_character(text: str) -> str:
    """A description of the first character a catalog text field may not hold, or ""."""
    found = _SUSPECT.search(text)
    if not found:
        return ""
    for position, char in enumerate(text[found.start() :], start=found.start()):
        if "\ud800" <= char <= "\udfff":
            return f"an undecodable character (a lone surrogate) at position {position + 1}"
        if char in BIDI_CONTROLS:
            return (
                f"the bidirectional control U+{ord(char):04X} at position {position + 1}, "
                "which can make text read as something else"
            )
        if (
            unicodedata.category(char) == "Cc" and char not in "\n\t\r"
        ):  # line breaks, tabs: whitespace
            return f"the control character U+{ord(char):04X} at position {position + 1}"
    return ""


def redact(text: str) -> str:
    """``text`` with the user part of every URL in it (where passwords and tokens go) as ***."""
    return _CREDENTIALS.sub(r"\1***@", str(text))


def url_scheme(src: str) -> str:
    """The URL scheme of ``src`` in lower case (``HTTPS://`` is https), or "" for a path."""
    match = _SCHEME.match(src)
    if not match:
        return ""
    scheme = match.group(1).lower()
    return scheme if src[match.end() :].startswith("//") or scheme in _BARE_SCHEMES else ""


def web_url_problem(text: str) -> str:
    """What makes ``text`` unusable as an http(s) address, in words, or "" when it is one.

    The one reading of a web address for the catalog, the fetcher (redirects included) and
    the site: a scheme of http or https (any letter case), a host that DNS could carry
    (labels of 1 to 63 characters, 253 in all, or a bracketed IPv6 address), a port in
    range, no spaces or control characters. Never raises, whatever the text.
    """
    if not text:
        return "is empty"
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in text):
        return "contains spaces or control characters"
    if url_scheme(text) not in WEB_SCHEMES:
        return "is not an http(s) address"
    if "\\" in text.split("?", 1)[0].split("#", 1)[0]:
        # Browsers and urllib3 read a backslash as "/", Python's urlsplit does not: the
        # host shown would not be the host contacted.
        return "contains a backslash"
    try:
        parts = urlsplit(text)
        port = parts.port  # parsed lazily: out of range or not a number raises here
    except ValueError as exc:
        return f"is malformed ({exc})"
    host = parts.hostname or ""
    if not host:
        return "has no host"
    if port == 0:
        return "has port 0"
    authority = parts.netloc.rpartition("@")[2]
    if authority.startswith("[") and not _BRACKETED.fullmatch(authority):
        return f"has a malformed bracketed host {authority}"
    if ":" in host:  # an IPv6 address; urlsplit checked its brackets
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return f"has a malformed IPv6 address [{host}]"
        return ""
    ascii_host = host
    if not host.isascii():
        # As urllib3 reads it (IDNA 2008, strict): full-width letters, an ideographic full
        # stop or a soft hyphen pass Python's older IDNA codec and fail the request.
        import idna

        try:
            ascii_host = idna.encode(host, strict=True, std3_rules=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return f"has a host name that is not a valid international name ({host})"
    try:
        ascii_host.encode("idna")
    except UnicodeError:
        return "has a host name that cannot be encoded (a label over 63 characters?)"
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or any(not 1 <= len(label) <= 63 for label in labels):
        return "has a host name longer than DNS allows (63 characters a label, 253 in all)"
    if not all(_HOST_LABEL.match(label) for label in labels):
        return "has a host name with characters a host name cannot have"
    return ""


def is_web_url(src: str) -> bool:
    """Whether ``src`` is an http(s) address with a host (in any letter case), safe to
    fetch or to show as a link (``web_url_problem`` says why not)."""
    return not web_url_problem(src)


def has_credentials(url: str) -> bool:
    """Whether a URL carries a user name or password (``https://user:pw@host/``)."""
    try:
        parts = urlsplit(url)
        return bool(parts.username or parts.password)
    except ValueError:
        return False


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular or plural: "1 pair", "3 pairs", "2 variants"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
