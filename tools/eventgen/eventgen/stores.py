"""The 85 Glamira stores: store_id → country site → country, region, UTC offset, currency.

This table is data, not generator logic: the ETL imports it to give ``dim_country`` a country
name and region for each ``store_id`` (and, through :data:`STORE_BY_DOMAIN`, for a
``current_url`` whose site domain names the country). Pure stdlib, no side effects on import.

``STORES[store_id]`` is a :class:`Store`, a named tuple whose first three fields are
``(domain, country, region)``, so ``domain, country, region = STORES["1"][:3]`` works too.

- ``store_id``: string of an int, ``"1"`` … ``"85"`` (the real dataset has 85 distinct values;
  the real numbering is not public, this one is ours and is stable).
- ``domain``: the country site without ``www.`` (``glamira.de``); unique per store.
- ``country``: English short name; ``region``: one of :data:`REGIONS` (continents, with the
  Middle East on its own and Central America/Caribbean in North America; Turkey, Cyprus and
  Russia in Europe).
- ``utc_offset``: hours, the country's *summer 2020* offset (the dataset spans April–June 2020),
  one fixed value per country: for countries with several zones it is the most populous zone
  (USA: Eastern, -4; Canada: Eastern, -4; Russia: Moscow, +3; Australia: Sydney, +10; Brazil:
  São Paulo, -3; Mexico: Mexico City, -5). ``local_time`` of an event = UTC time + this offset.
  Approximate on purpose: no DST switch inside the generated window.
- ``currency``: ISO 4217 code used on that site in 2020 (prices in add-to-cart and carts).
- ``weight``: relative traffic share used by the generator (big EU markets dominate).
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit


class Store(NamedTuple):
    domain: str
    country: str
    region: str
    utc_offset: float
    currency: str
    weight: float


REGIONS = ("Europe", "North America", "South America", "Asia", "Middle East", "Africa", "Oceania")

_EU, _NA, _SA, _AS, _ME, _AF, _OC = REGIONS

_ROWS: tuple[tuple[str, str, str, float, str, float], ...] = (
    # domain, country, region, utc_offset (summer 2020), currency, traffic weight
    ("glamira.de", "Germany", _EU, 2, "EUR", 14.0),
    ("glamira.fr", "France", _EU, 2, "EUR", 8.0),
    ("glamira.co.uk", "United Kingdom", _EU, 1, "GBP", 7.0),
    ("glamira.it", "Italy", _EU, 2, "EUR", 5.0),
    ("glamira.es", "Spain", _EU, 2, "EUR", 4.0),
    ("glamira.nl", "Netherlands", _EU, 2, "EUR", 4.0),
    ("glamira.be", "Belgium", _EU, 2, "EUR", 2.0),
    ("glamira.at", "Austria", _EU, 2, "EUR", 3.0),
    ("glamira.ch", "Switzerland", _EU, 2, "CHF", 4.0),
    ("glamira.se", "Sweden", _EU, 2, "SEK", 2.5),
    ("glamira.dk", "Denmark", _EU, 2, "DKK", 2.0),
    ("glamira.no", "Norway", _EU, 2, "NOK", 1.5),
    ("glamira.fi", "Finland", _EU, 3, "EUR", 1.0),
    ("glamira.pl", "Poland", _EU, 2, "PLN", 2.5),
    ("glamira.cz", "Czech Republic", _EU, 2, "CZK", 1.2),
    ("glamira.sk", "Slovakia", _EU, 2, "EUR", 0.6),
    ("glamira.hu", "Hungary", _EU, 2, "HUF", 1.0),
    ("glamira.ro", "Romania", _EU, 3, "RON", 1.5),
    ("glamira.bg", "Bulgaria", _EU, 3, "BGN", 0.6),
    ("glamira.gr", "Greece", _EU, 3, "EUR", 0.8),
    ("glamira.pt", "Portugal", _EU, 1, "EUR", 1.0),
    ("glamira.ie", "Ireland", _EU, 1, "EUR", 0.8),
    ("glamira.lu", "Luxembourg", _EU, 2, "EUR", 0.2),
    ("glamira.si", "Slovenia", _EU, 2, "EUR", 0.3),
    ("glamira.hr", "Croatia", _EU, 2, "HRK", 0.5),
    ("glamira.rs", "Serbia", _EU, 2, "RSD", 0.4),
    ("glamira.ba", "Bosnia and Herzegovina", _EU, 2, "BAM", 0.2),
    ("glamira.mk", "North Macedonia", _EU, 2, "MKD", 0.1),
    ("glamira.al", "Albania", _EU, 2, "ALL", 0.1),
    ("glamira.lt", "Lithuania", _EU, 3, "EUR", 0.4),
    ("glamira.lv", "Latvia", _EU, 3, "EUR", 0.3),
    ("glamira.ee", "Estonia", _EU, 3, "EUR", 0.3),
    ("glamira.com.cy", "Cyprus", _EU, 3, "EUR", 0.1),
    ("glamira.com.mt", "Malta", _EU, 2, "EUR", 0.1),
    ("glamira.is", "Iceland", _EU, 0, "ISK", 0.1),
    ("glamira.md", "Moldova", _EU, 3, "MDL", 0.1),
    ("glamira.ua", "Ukraine", _EU, 3, "UAH", 0.6),
    ("glamira.ru", "Russia", _EU, 3, "RUB", 1.2),
    ("glamira.com.tr", "Turkey", _EU, 3, "TRY", 0.8),
    ("glamira.com", "United States", _NA, -4, "USD", 6.0),
    ("glamira.ca", "Canada", _NA, -4, "CAD", 2.0),
    ("glamira.com.mx", "Mexico", _NA, -5, "MXN", 1.2),
    ("glamira.co.cr", "Costa Rica", _NA, -6, "CRC", 0.05),
    ("glamira.com.pa", "Panama", _NA, -5, "USD", 0.05),
    ("glamira.com.gt", "Guatemala", _NA, -6, "GTQ", 0.05),
    ("glamira.com.do", "Dominican Republic", _NA, -4, "DOP", 0.05),
    ("glamira.com.br", "Brazil", _SA, -3, "BRL", 1.5),
    ("glamira.com.ar", "Argentina", _SA, -3, "ARS", 0.5),
    ("glamira.cl", "Chile", _SA, -4, "CLP", 0.5),
    ("glamira.com.co", "Colombia", _SA, -5, "COP", 0.5),
    ("glamira.pe", "Peru", _SA, -5, "PEN", 0.3),
    ("glamira.ec", "Ecuador", _SA, -5, "USD", 0.1),
    ("glamira.com.uy", "Uruguay", _SA, -3, "UYU", 0.1),
    ("glamira.com.py", "Paraguay", _SA, -4, "PYG", 0.05),
    ("glamira.com.bo", "Bolivia", _SA, -4, "BOB", 0.05),
    ("glamira.com.vn", "Vietnam", _AS, 7, "VND", 2.0),
    ("glamira.jp", "Japan", _AS, 9, "JPY", 1.0),
    ("glamira.com.sg", "Singapore", _AS, 8, "SGD", 0.5),
    ("glamira.com.my", "Malaysia", _AS, 8, "MYR", 0.5),
    ("glamira.co.id", "Indonesia", _AS, 7, "IDR", 0.5),
    ("glamira.com.ph", "Philippines", _AS, 8, "PHP", 0.5),
    ("glamira.co.th", "Thailand", _AS, 7, "THB", 0.4),
    ("glamira.com.hk", "Hong Kong", _AS, 8, "HKD", 0.4),
    ("glamira.com.tw", "Taiwan", _AS, 8, "TWD", 0.3),
    ("glamira.co.kr", "South Korea", _AS, 9, "KRW", 0.3),
    ("glamira.in", "India", _AS, 5.5, "INR", 0.8),
    ("glamira.com.pk", "Pakistan", _AS, 5, "PKR", 0.1),
    ("glamira.lk", "Sri Lanka", _AS, 5.5, "LKR", 0.05),
    ("glamira.com.bd", "Bangladesh", _AS, 6, "BDT", 0.05),
    ("glamira.kz", "Kazakhstan", _AS, 6, "KZT", 0.1),
    ("glamira.ae", "United Arab Emirates", _ME, 4, "AED", 0.5),
    ("glamira.com.sa", "Saudi Arabia", _ME, 3, "SAR", 0.3),
    ("glamira.co.il", "Israel", _ME, 3, "ILS", 0.3),
    ("glamira.qa", "Qatar", _ME, 3, "QAR", 0.1),
    ("glamira.com.kw", "Kuwait", _ME, 3, "KWD", 0.1),
    ("glamira.com.bh", "Bahrain", _ME, 3, "BHD", 0.05),
    ("glamira.com.om", "Oman", _ME, 4, "OMR", 0.05),
    ("glamira.jo", "Jordan", _ME, 3, "JOD", 0.05),
    ("glamira.co.za", "South Africa", _AF, 2, "ZAR", 0.4),
    ("glamira.com.eg", "Egypt", _AF, 2, "EGP", 0.2),
    ("glamira.ma", "Morocco", _AF, 1, "MAD", 0.1),
    ("glamira.com.ng", "Nigeria", _AF, 1, "NGN", 0.1),
    ("glamira.co.ke", "Kenya", _AF, 3, "KES", 0.05),
    ("glamira.com.au", "Australia", _OC, 10, "AUD", 2.0),
    ("glamira.co.nz", "New Zealand", _OC, 12, "NZD", 0.4),
)

STORES: dict[str, Store] = {str(number): Store(*row) for number, row in enumerate(_ROWS, start=1)}
"""store_id → :class:`Store`; 85 entries, ids ``"1"`` … ``"85"``."""

STORE_BY_DOMAIN: dict[str, str] = {store.domain: store_id for store_id, store in STORES.items()}
"""Site domain (without ``www.``) → store_id."""

# Units of each currency per euro, rough mid-2020 rates: only to make prices look local.
CURRENCY_PER_EUR: dict[str, float] = {
    "EUR": 1.0, "GBP": 0.9, "CHF": 1.07, "SEK": 10.5, "DKK": 7.45, "NOK": 10.8, "PLN": 4.45, "CZK": 26.7,
    "HUF": 350.0, "RON": 4.84, "BGN": 1.96, "HRK": 7.57, "RSD": 117.0, "BAM": 1.96, "MKD": 61.5, "ALL": 123.0,
    "ISK": 153.0, "MDL": 19.3, "UAH": 30.2, "RUB": 79.0, "TRY": 7.7, "USD": 1.12, "CAD": 1.53, "MXN": 25.0,
    "CRC": 645.0, "GTQ": 8.6, "DOP": 65.0, "BRL": 6.0, "ARS": 78.0, "CLP": 900.0, "COP": 4200.0, "PEN": 3.9,
    "UYU": 48.0, "PYG": 7700.0, "BOB": 7.7, "VND": 26000.0, "JPY": 120.0, "SGD": 1.57, "MYR": 4.8, "IDR": 16000.0,
    "PHP": 56.0, "THB": 35.0, "HKD": 8.7, "TWD": 33.0, "KRW": 1350.0, "INR": 84.0, "PKR": 185.0, "LKR": 208.0,
    "BDT": 95.0, "KZT": 450.0, "AED": 4.1, "SAR": 4.2, "ILS": 3.9, "QAR": 4.1, "KWD": 0.35, "BHD": 0.42,
    "OMR": 0.43, "JOD": 0.79, "ZAR": 19.0, "EGP": 18.0, "MAD": 10.8, "NGN": 430.0, "KES": 120.0, "AUD": 1.63,
    "NZD": 1.74,
}  # fmt: skip


def store_id_for_url(url: str) -> str | None:
    """The store whose site serves ``url`` (``https://www.glamira.fr/…`` → its id), else None."""
    host = (urlsplit(url).hostname or "").lower()
    host = host.removeprefix("www.")
    return STORE_BY_DOMAIN.get(host)
