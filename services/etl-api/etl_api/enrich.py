"""Pure lookups that turn one raw value into warehouse attributes; no network, no clock, no env.

- :func:`parse_user_agent`: device type / browser / OS, with ``ua-parser`` (uap-core regexes
  bundled by ``ua-parser-builtins``) plus a bot pattern for crawlers uap-core does not flag.
- :func:`classify_referrer`: registered domain (``tldextract`` with its bundled public-suffix
  snapshot, never fetched) and a medium, decided in this order: direct (no referrer), internal
  (one of the shop's own sites), paid (ad click ids, ``utm_medium`` cpc/ppc/paid/display, ad
  networks), email (webmail hosts, ``utm_medium=email``), search, social, other.
- :func:`site_of_url`: a shop URL's site domain and the country/region of the site
  (``data/site_countries.csv``); :func:`country_of_code` for seed-shaped ISO-code store ids.
- :func:`product_of_url`: the product page slug, a display name and a category.

The Spark transforms call these on *distinct* values only (a few thousand user agents, not
millions of events), so pure-Python parsing costs little.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

import tldextract
from ua_parser import parse as ua_parse

# ---------------------------------------------------------------------------- user agents

_BOT_RE = re.compile(
    r"bot/|bot\.html?|crawl|spider|slurp|facebookexternalhit|facebookcatalog|headless|python-requests|python-urllib|"
    r"curl/|wget/|go-http-client|okhttp|java/|scrapy|phantomjs|httpclient|preview|monitor|pingdom|lighthouse",
    re.IGNORECASE,
)
_TABLET_RE = re.compile(r"ipad|tablet|kindle|silk/|playbook|sm-t\d|nexus (7|9|10)", re.IGNORECASE)
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS", "Tizen"})
_DESKTOP_OS = frozenset({"Windows", "Mac OS X", "macOS", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian", "FreeBSD", "OpenBSD"})


@dataclass(frozen=True)
class DeviceInfo:
    device_type: str  # desktop | mobile | tablet | bot | other | unknown
    browser: str | None  # family, e.g. "Chrome", "Mobile Safari"
    browser_info: str | None  # "Chrome 83.0 / Windows 10"
    os: str | None  # "Windows 10", "iOS 13.3"
    is_bot: bool


def _version(*parts: str | None) -> str:
    return ".".join(p for p in parts if p)


@functools.lru_cache(maxsize=65536)
def parse_user_agent(user_agent: str | None) -> DeviceInfo:
    """Device type, browser and OS of a user-agent string; ``unknown`` when there is none."""
    if not user_agent or not user_agent.strip():
        return DeviceInfo("unknown", None, None, None, False)
    result = ua_parse(user_agent)
    ua, os_, dev = result.user_agent, result.os, result.device
    browser = ua.family if ua and ua.family != "Other" else None
    browser_version = _version(ua.major, ua.minor) if ua and browser else ""
    os_family = os_.family if os_ and os_.family != "Other" else None
    os_name = f"{os_family} {_version(os_.major, os_.minor)}".strip() if os_ and os_family else None
    is_bot = bool((dev and dev.family == "Spider") or _BOT_RE.search(user_agent))
    if is_bot:
        device_type = "bot"
    elif (
        _TABLET_RE.search(user_agent)
        or (dev and dev.brand and "Tablet" in dev.brand)
        or (os_family == "Android" and "Mobile" not in user_agent)
    ):
        device_type = "tablet"
    elif os_family in _MOBILE_OS or "Mobile" in user_agent:
        device_type = "mobile"
    elif os_family in _DESKTOP_OS:
        device_type = "desktop"
    else:
        device_type = "other"
    if browser or os_name:
        info = " / ".join(x for x in (f"{browser} {browser_version}".strip() if browser else None, os_name) if x)
    else:
        info = None
    return DeviceInfo(device_type, browser, info, os_name, is_bot)


# ---------------------------------------------------------------------------- URLs


@functools.lru_cache(maxsize=1)
def _tld_extractor() -> tldextract.TLDExtract:
    # suffix_list_urls=() and no cache dir: the snapshot bundled with tldextract, never the network.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _host_of(url: str) -> str | None:
    text = url.strip()
    if not text:
        return None
    if "://" not in text:
        text = "http://" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    return host or None


@dataclass(frozen=True)
class ReferrerInfo:
    domain: str | None
    medium: str  # search | social | email | paid | internal | direct | other


_SEARCH = frozenset(
    {
        "google",
        "bing",
        "yahoo",
        "duckduckgo",
        "yandex",
        "baidu",
        "ecosia",
        "qwant",
        "seznam",
        "naver",
        "ask",
        "startpage",
        "aol",
        "so",
        "sogou",
        "daum",
        "coccoc",
        "search",
        "brave",
        "msn",
    }
)
_SOCIAL = frozenset(
    {
        "facebook",
        "fb",
        "instagram",
        "pinterest",
        "twitter",
        "x",
        "t",
        "linkedin",
        "youtube",
        "reddit",
        "tiktok",
        "vk",
        "ok",
        "whatsapp",
        "messenger",
        "snapchat",
        "tumblr",
        "weibo",
        "line",
        "telegram",
        "quora",
        "zalo",
    }
)
_SOCIAL_DOMAINS = frozenset({"t.co", "lnkd.in", "youtu.be", "pin.it"})
_EMAIL_DOMAINS = frozenset(
    {
        "outlook.live.com",
        "outlook.office.com",
        "mail.google.com",
        "mail.yahoo.com",
        "gmx.net",
        "gmx.de",
        "web.de",
        "t-online.de",
        "mail.ru",
        "seznam.cz",
    }
)
_EMAIL_HOST_PREFIXES = ("mail.", "webmail.", "email.", "outlook.", "mailbox.")
_PAID_DOMAINS = frozenset(
    {"googleadservices.com", "doubleclick.net", "googlesyndication.com", "adform.net", "criteo.com", "awin1.com", "bingads.com"}
)
_PAID_PARAMS = frozenset({"gclid", "gbraid", "wbraid", "msclkid", "dclid", "yclid"})
_PAID_MEDIA = frozenset({"cpc", "ppc", "paid", "paidsearch", "paid_search", "display", "cpm", "banner", "paid_social", "paidsocial"})


def registered_domain(host: str) -> str:
    ext = _tld_extractor()(host)
    return ext.top_domain_under_public_suffix or host


def classify_referrer(url: str | None, internal_domains: tuple[str, ...] = ("glamira",)) -> ReferrerInfo:  # noqa: PLR0911
    """Registered domain and medium of a referrer URL (see the module docstring for the order)."""
    if url is None or not url.strip():
        return ReferrerInfo(None, "direct")
    host = _host_of(url)
    if host is None:
        return ReferrerInfo(None, "other")
    host = host.lower().rstrip(".")
    ext = _tld_extractor()(host)
    domain = ext.top_domain_under_public_suffix or host
    name = ext.domain
    if name in internal_domains:
        return ReferrerInfo(domain, "internal")
    try:
        query = {k.lower(): [v.lower() for v in vs] for k, vs in parse_qs(urlsplit(url.strip()).query).items()}
    except ValueError:
        query = {}
    media = set(query.get("utm_medium", []))
    if domain in _PAID_DOMAINS or _PAID_PARAMS & query.keys() or media & _PAID_MEDIA:
        return ReferrerInfo(domain, "paid")
    if (
        domain in _EMAIL_DOMAINS
        or host in _EMAIL_DOMAINS
        or host.startswith(_EMAIL_HOST_PREFIXES)
        or "email" in media
        or "newsletter" in media
    ):
        return ReferrerInfo(domain, "email")
    if name in _SEARCH:
        return ReferrerInfo(domain, "search")
    if name in _SOCIAL or domain in _SOCIAL_DOMAINS:
        return ReferrerInfo(domain, "social")
    return ReferrerInfo(domain, "other")


# ---------------------------------------------------------------------------- stores / countries


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    region: str


@functools.lru_cache(maxsize=1)
def _country_tables() -> tuple[dict[str, Country], dict[str, Country]]:
    by_tld: dict[str, Country] = {}
    by_code: dict[str, Country] = {}
    # importlib.resources, not a path: on a cluster this module runs from the zip the job ships
    text = resources.files("etl_api").joinpath("data", "site_countries.csv").read_text(encoding="utf-8")
    for row in csv.DictReader(line for line in text.splitlines() if not line.startswith("#")):
        country = Country(row["country_code"], row["country_name"], row["region"])
        by_tld[row["tld"]] = country
        by_code.setdefault(row["country_code"], country)
    return by_tld, by_code


def country_of_site(site_domain: str) -> Country | None:
    """Country of a shop site domain (``glamira.com.vn`` → Vietnam), or None when unmapped."""
    suffix = _tld_extractor()(site_domain).suffix
    if not suffix:
        return None
    return _country_tables()[0].get(suffix.rsplit(".", 1)[-1].lower())


def country_of_code(store_id: str | None) -> Country | None:
    """Country of a seed-shaped store id that is an ISO 3166-1 alpha-2 code ("US")."""
    if store_id and len(store_id) == 2 and store_id.isalpha():
        return _country_tables()[1].get(store_id.upper())
    return None


def site_of_url(url: str | None) -> str | None:
    """The shop site's registered domain of a page URL: https://www.glamira.fr/x → glamira.fr."""
    if not url:
        return None
    host = _host_of(url)
    return registered_domain(host.lower().rstrip(".")) if host else None


# ---------------------------------------------------------------------------- products

_CATEGORIES = (
    ("engagement-ring", "engagement ring"),
    ("wedding-ring", "wedding ring"),
    ("ring", "ring"),
    ("pendant", "pendant"),
    ("necklace", "necklace"),
    ("earring", "earring"),
    ("bracelet", "bracelet"),
    ("bangle", "bracelet"),
    ("anklet", "anklet"),
    ("brooch", "brooch"),
    ("cufflink", "cufflinks"),
    ("charm", "charm"),
    ("watch", "watch"),
    ("piercing", "piercing"),
)
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class ProductInfo:
    slug: str
    name: str
    category: str | None


def product_of_url(url: str | None) -> ProductInfo | None:
    """Slug, name and category of a product page URL (``/glamira-pendant-viktor.html``), else None."""
    if not url:
        return None
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return None
    last = unquote(path.rstrip("/").rsplit("/", 1)[-1]).lower()
    slug = last.removesuffix(".html").removesuffix(".htm")
    if not slug or not _SLUG_RE.match(slug) or slug.isdigit():
        return None
    words = [w for w in slug.split("-") if w]
    name = " ".join(w.capitalize() for w in words)
    tokens = "-" + "-".join(words) + "-"
    category = next((cat for needle, cat in _CATEGORIES if f"-{needle}-" in tokens or f"-{needle}s-" in tokens), None)
    return ProductInfo(slug, name, category)


@functools.lru_cache(maxsize=65536)
def classify_referrer_cached(url: str | None, internal_domains: tuple[str, ...] = ("glamira",)) -> ReferrerInfo:
    return classify_referrer(url, internal_domains)


@functools.lru_cache(maxsize=65536)
def page_attributes(url: str | None) -> tuple[str | None, str | None, str | None, str | None, str | None, str | None, str | None]:
    """(site_domain, country_code, country_name, region, product_slug, product_name, category) of a page URL."""
    site = site_of_url(url or None)
    country = country_of_site(site) if site else None
    product = product_of_url(url or None)
    return (
        site,
        country.code if country else None,
        country.name if country else None,
        country.region if country else None,
        product.slug if product else None,
        product.name if product else None,
        product.category if product else None,
    )
