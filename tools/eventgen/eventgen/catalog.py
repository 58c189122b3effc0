"""Static tables the generator draws from: event types, products, user agents, referrers.

Everything here is fixed data or derived from a fixed catalog seed, so the product catalog
(ids, slugs, names, prices) is the same for every ``--seed``: runs with different seeds describe
the same shop, only the traffic differs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

# ---- event types -------------------------------------------------------------------------------

# The 27 ``collection`` values with their counts in the full dataset (thousands of events).
COLLECTION_COUNTS: Final[dict[str, float]] = {
    "view_listing_page": 11_260,
    "view_product_detail": 10_940,
    "select_product_option": 8_840,
    "select_product_option_quality": 2_230,
    "view_static_page": 1_450,
    "view_landing_page": 1_430,
    "product_detail_recommendation_visible": 1_300,
    "view_home_page": 1_050,
    "listing_page_recommendation_visible": 718,
    "product_detail_recommendation_noticed": 491,
    "view_shopping_cart": 343,
    "landing_page_recommendation_visible": 315,
    "search_box_action": 238,
    "add_to_cart_action": 188,
    "product_detail_recommendation_clicked": 179,
    "view_my_account": 112,
    "checkout": 88.5,
    "landing_page_recommendation_noticed": 58,
    "listing_page_recommendation_noticed": 40,
    "view_all_recommend": 34,
    "checkout_success": 26,
    "listing_page_recommendation_clicked": 25.5,
    "landing_page_recommendation_clicked": 20,
    "product_view_all_recommend_clicked": 16.7,
    "view_sorting_relevance": 15,
    "sorting_relevance_click_action": 1.7,
    "back_to_product_action": 0.561,
}
COLLECTIONS: Final = tuple(COLLECTION_COUNTS)
COLLECTION_CUM: Final = tuple(accumulate(COLLECTION_COUNTS.values()))


def collection_share(collection: str) -> float:
    """The collection's share of all Glamira events in the real dataset."""
    return COLLECTION_COUNTS[collection] / COLLECTION_CUM[-1]


# ``option`` is a list on these (≈22 M events in the dataset) …
OPTION_LIST_TYPES: Final = frozenset({"view_product_detail", "select_product_option", "select_product_option_quality"})
# … a dict {alloy, diamond, shapediamond} on these (≈12.7 M), absent on every other type.
OPTION_DICT_TYPES: Final = frozenset({"view_listing_page", "view_landing_page"})

# Types whose page is a product page (current_url is the product's URL).
PRODUCT_PAGE_TYPES: Final = frozenset(
    {
        "view_product_detail",
        "select_product_option",
        "select_product_option_quality",
        "add_to_cart_action",
        "product_detail_recommendation_visible",
        "product_detail_recommendation_noticed",
        "product_detail_recommendation_clicked",
        "product_view_all_recommend_clicked",
        "back_to_product_action",
    }
)
LISTING_PAGE_TYPES: Final = frozenset(
    {
        "view_listing_page",
        "listing_page_recommendation_visible",
        "listing_page_recommendation_noticed",
        "listing_page_recommendation_clicked",
        "view_sorting_relevance",
        "sorting_relevance_click_action",
    }
)
LANDING_PAGE_TYPES: Final = frozenset(
    {
        "view_landing_page",
        "landing_page_recommendation_visible",
        "landing_page_recommendation_noticed",
        "landing_page_recommendation_clicked",
    }
)
RECOMMENDATION_TYPES: Final = frozenset(c for c in COLLECTIONS if "_recommendation_" in c)

# ---- products ----------------------------------------------------------------------------------

CATALOG_SEED: Final = 20200401
PRODUCT_COUNT: Final = 2000
ZIPF_EXPONENT: Final = 1.07  # popularity of the product at rank r ∝ 1 / r**s

_PRODUCT_TYPES: Final = (
    # slug word, URL category path, weight, base price in EUR (low, high)
    ("ring", "rings", 30, (250, 2500)),
    ("engagement-ring", "engagement-rings", 14, (400, 5000)),
    ("wedding-ring", "wedding-rings", 8, (300, 1800)),
    ("earring", "earrings", 14, (120, 1500)),
    ("pendant", "pendants", 12, (150, 1600)),
    ("necklace", "necklaces", 8, (200, 2200)),
    ("bracelet", "bracelets", 7, (200, 2000)),
    ("bangle", "bangles", 3, (300, 2500)),
    ("brooch", "brooches", 1, (150, 900)),
    ("men-ring", "mens-rings", 3, (300, 2000)),
)
_SYLLABLES: Final = (
    "an", "bel", "ca", "da", "el", "fa", "gia", "ha", "ia", "jo", "ka", "la", "ma", "na", "o", "pe", "ri", "sa",
    "ta", "u", "vi", "wen", "xa", "ya", "za", "lor", "mir", "nel", "ros", "tor", "vik", "lin", "mon", "sel", "dor",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str  # string of an int, as in the dataset ("110474")
    slug: str  # URL slug, e.g. "glamira-pendant-viktor"; the ETL derives the name from it
    name: str  # "Glamira Pendant Viktor"
    category: str  # URL category path of its listing page
    price_eur: float
    alloy_option_id: str
    diamond_option_id: str


def _build_products() -> tuple[Product, ...]:
    rng = random.Random(CATALOG_SEED)
    type_cum = list(accumulate(t[2] for t in _PRODUCT_TYPES))
    ids = rng.sample(range(10_000, 130_000), PRODUCT_COUNT)
    seen: set[str] = set()
    products = []
    for product_id in ids:
        word, category, _, (low, high) = rng.choices(_PRODUCT_TYPES, cum_weights=type_cum)[0]
        while True:
            name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
            slug = f"glamira-{word}-{name}"
            if slug not in seen:
                seen.add(slug)
                break
        products.append(
            Product(
                product_id=str(product_id),
                slug=slug,
                name=" ".join(part.capitalize() for part in slug.split("-")),
                category=category,
                price_eur=round(rng.uniform(low, high), -1) - 0.01 * rng.choice((0, 0, 100)),
                alloy_option_id=str(rng.randint(100_000, 999_999)),
                diamond_option_id=str(rng.randint(100_000, 999_999)),
            )
        )
    return tuple(products)


PRODUCTS: Final = _build_products()
"""The catalog in popularity order: ``PRODUCTS[0]`` is the most viewed product."""
PRODUCT_BY_ID: Final = {p.product_id: p for p in PRODUCTS}
PRODUCT_CUM: Final = tuple(accumulate(1.0 / rank**ZIPF_EXPONENT for rank in range(1, PRODUCT_COUNT + 1)))
CATEGORIES: Final = tuple(sorted({t[1] for t in _PRODUCT_TYPES}))

ALLOYS: Final = (
    "white-375", "yellow-375", "red-375", "white-585", "yellow-585", "red-585", "white-750", "yellow-750",
    "red-750", "platin", "silber", "white-yellow-585", "white-red-585",
)  # fmt: skip
DIAMONDS: Final = (
    "diamond-Brillant", "diamond-Brillant", "diamond-Brillant", "lab-grown-diamond", "sapphire", "ruby", "emerald",
    "swarovsky", "zirconia", "amethyst", "topaz", "black-diamond", "pearl",
)  # fmt: skip
SHAPES: Final = ("round", "princess", "oval", "heart", "pear", "emerald-cut", "cushion", "marquise")
# value_id of each option value: stable numbers, as in the shop's attribute tables.
VALUE_IDS: Final = {value: str(6000 + i) for i, value in enumerate(dict.fromkeys(ALLOYS + DIAMONDS + SHAPES))}
QUALITIES: Final = (("AAA", "Premium"), ("AA", "Very good"), ("A", "Good"), ("AAAA", "Heirloom"))

LANDING_PATHS: Final = (
    "glamira-collection-love", "glamira-collection-promise", "diamond-jewelry", "gemstone-jewelry", "gifts-for-her",
    "gifts-for-him", "personalised-jewelry", "sale", "new-arrivals", "bridal-sets", "birthstone-jewelry",
)  # fmt: skip
STATIC_PATHS: Final = (
    "about-us", "faq", "shipping", "returns", "ring-size-guide", "contact", "privacy-policy", "terms",
    "jewelry-care", "diamond-guide", "payment-methods",
)  # fmt: skip
ACCOUNT_PATHS: Final = ("customer/account", "customer/account/login", "customer/account/create", "sales/order/history", "wishlist")
SEARCH_TERMS: Final = (
    "engagement ring", "wedding rings", "verlobungsring", "eheringe", "bague de fiançailles", "alliance", "anello",
    "anillo de compromiso", "trouwring", "pendant", "halskette", "collier", "heart necklace", "name necklace",
    "solitaire", "diamond earrings", "ohrringe", "boucles d'oreilles", "bracelet", "armband", "men ring",
    "infinity", "rose gold", "white gold ring", "moissanite", "sapphire ring", "ruby", "nhẫn cưới", "dây chuyền",
    "pierścionek zaręczynowy", "förlovningsring", "gift", "viktor", "eternity ring",
)  # fmt: skip

# ---- user agents -------------------------------------------------------------------------------

# (template, weight inside its device class). Placeholders: {chrome} {edge} {firefox} full browser
# versions of spring 2020, {mac} / {ios} OS minor versions, {android}, {model} / {samsung} phones.
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko)"
_APPLE = "AppleWebKit/605.1.15 (KHTML, like Gecko)"
_WIN10 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{mac})"
_IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 13_{ios} like Mac OS X)"
_SAMSUNG_BROWSER = "SamsungBrowser/11.2 Chrome/75.0.3770.143"
_DESKTOP: Final = (
    (f"{_WIN10} {_WEBKIT} Chrome/{{chrome}} Safari/537.36", 44),
    (f"Mozilla/5.0 (Windows NT 6.1; Win64; x64) {_WEBKIT} Chrome/{{chrome}} Safari/537.36", 6),
    (f"{_MAC} {_WEBKIT} Chrome/{{chrome}} Safari/537.36", 9),
    (f"{_MAC} {_APPLE} Version/13.1 Safari/605.1.15", 10),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{firefox}) Gecko/20100101 Firefox/{firefox}", 11),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:{firefox}) Gecko/20100101 Firefox/{firefox}", 2),
    (f"{_WIN10} {_WEBKIT} Chrome/{{chrome}} Safari/537.36 Edg/{{edge}}", 12),
    (f"Mozilla/5.0 (X11; Linux x86_64) {_WEBKIT} Chrome/{{chrome}} Safari/537.36", 2),
    (f"{_WIN10} {_WEBKIT} Chrome/{{chrome}} Safari/537.36 OPR/68.0.3618.125", 4),
)
_MOBILE: Final = (
    (f"{_IPHONE} {_APPLE} Version/13.1 Mobile/15E148 Safari/604.1", 34),
    (f"Mozilla/5.0 (Linux; Android {{android}}; {{model}}) {_WEBKIT} Chrome/{{chrome}} Mobile Safari/537.36", 36),
    (f"Mozilla/5.0 (Linux; Android {{android}}; SAMSUNG {{samsung}}) {_WEBKIT} {_SAMSUNG_BROWSER} Mobile Safari/537.36", 12),
    (f"{_IPHONE} {_APPLE} CriOS/{{chrome}} Mobile/15E148 Safari/604.1", 6),
    (
        f"{_IPHONE} {_APPLE} Mobile/15E148 "
        "[FBAN/FBIOS;FBDV/iPhone11,8;FBMD/iPhone;FBSN/iOS;FBSV/13.{ios};FBSS/2;FBID/phone;FBLC/en_US;FBOP/5]",
        6,
    ),
    ("Mozilla/5.0 (Android {android}; Mobile; rv:68.0) Gecko/68.0 Firefox/68.0", 3),
    (f"Mozilla/5.0 (iPhone; CPU iPhone OS 12_4_{{ios}} like Mac OS X) {_APPLE} Version/12.1.2 Mobile/15E148 Safari/604.1", 3),
)
_TABLET: Final = (
    (f"Mozilla/5.0 (iPad; CPU OS 13_{{ios}} like Mac OS X) {_APPLE} Version/13.1 Mobile/15E148 Safari/604.1", 55),
    (f"Mozilla/5.0 (Linux; Android {{android}}; SM-T510) {_WEBKIT} Chrome/{{chrome}} Safari/537.36", 20),
    (f"Mozilla/5.0 (Linux; Android {{android}}; SAMSUNG SM-T820) {_WEBKIT} {_SAMSUNG_BROWSER} Safari/537.36", 15),
    (f"Mozilla/5.0 (Linux; Android {{android}}; Lenovo TB-X505F) {_WEBKIT} Chrome/{{chrome}} Safari/537.36", 10),
)
CHROME_VERSIONS: Final = ("83.0.4103.97", "83.0.4103.61", "83.0.4103.106", "81.0.4044.138", "81.0.4044.129", "80.0.3987.163")
EDGE_VERSIONS: Final = ("83.0.478.45", "83.0.478.37", "81.0.416.72")
FIREFOX_VERSIONS: Final = ("77.0", "76.0", "75.0")
BOT_AGENTS: Final = (
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.118 "
    "Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)
# First octets of the crawlers' real address blocks, same order as BOT_AGENTS.
BOT_IP_PREFIXES: Final = ("69.171", "66.249", "66.249", "157.55")
BOT_FRACTION: Final = 0.02

DEVICE_CLASSES: Final = (("desktop", 45, _DESKTOP), ("mobile", 48, _MOBILE), ("tablet", 7, _TABLET))
RESOLUTIONS: Final = {
    "desktop": ("1920x1080", "1920x1080", "1366x768", "1536x864", "1440x900", "1280x720", "2560x1440", "1680x1050"),
    "mobile": ("375x667", "414x896", "375x812", "360x640", "360x780", "412x869", "393x851", "414x736"),
    "tablet": ("768x1024", "810x1080", "834x1112", "1024x1366", "800x1280", "1280x800"),
}
ANDROID_MODELS: Final = ("Pixel 3a", "Pixel 4", "Mi 9T", "Redmi Note 8 Pro", "ELE-L29", "VOG-L29", "moto g(7)", "CPH2009", "ONEPLUS A6013")
SAMSUNG_MODELS: Final = ("SM-G973F", "SM-G960F", "SM-A505FN", "SM-A515F", "SM-G975F", "SM-N960F", "SM-A405FN")

# ---- referrers ---------------------------------------------------------------------------------

# medium → (weight among non-empty referrers, URLs). ``{own}`` is the store's own site (internal
# navigation), ``{tld_google}`` the store country's Google. Paid links carry gclid / aclk.
REFERRER_EMPTY_FRACTION: Final = 0.09
REFERRER_MEDIA: Final = {
    "internal": (55, ("https://www.{own}/", "https://www.{own}/{category}/", "https://www.{own}/{product}.html")),
    "search": (
        24,
        (
            "https://www.google.com/",
            "https://{tld_google}/",
            "https://{tld_google}/",
            "https://www.bing.com/",
            "https://duckduckgo.com/",
            "https://search.yahoo.com/",
            "https://www.ecosia.org/",
            "https://yandex.ru/",
        ),
    ),
    "social": (
        8,
        (
            "https://www.facebook.com/",
            "https://m.facebook.com/",
            "https://l.facebook.com/",
            "https://www.instagram.com/",
            "https://l.instagram.com/",
            "https://www.pinterest.com/",
            "https://t.co/",
            "https://www.youtube.com/",
        ),
    ),
    "paid": (
        8,
        (
            "https://www.googleadservices.com/pagead/aclk?sa=L&ai={token}",
            "https://{tld_google}/?gclid={token}",
            "https://www.google.com/aclk?sa=l&ai={token}",
        ),
    ),
    "email": (3, ("https://mail.google.com/", "https://outlook.live.com/", "https://mail.yahoo.com/", "https://webmail.gmx.net/")),
    "other": (2, ("https://www.idealo.de/", "https://www.pricerunner.com/", "https://www.reddit.com/", "https://www.trustpilot.com/")),
}
# UTM tags a landing carries when it came from that medium (else utm_* are False).
UTM_BY_MEDIUM: Final = {"paid": ("google", "cpc"), "social": ("facebook", "social"), "email": ("newsletter", "email")}
