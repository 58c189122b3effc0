"""Deterministic generation of remote-topic records: Glamira events, seed-shape events, bad ones.

Pure: no clock, no I/O, no global random. Everything comes from one ``random.Random(seed)``
consumed in a fixed order, so the same arguments give byte-identical records on every run and
machine (only integer arithmetic and IEEE-754 basic operations feed the choices).

What a stream looks like:
- record ``i`` of ``count`` gets an event time from a diurnal curve over ``days`` days from
  ``start`` (UTC midnight): times rise with ``i``, busy in the European evening, quiet at night;
- kinds are interleaved at random with *exact* totals (see :func:`plan_counts`);
- a pool of ``max(16, count // 12)`` visitors (≈12 events per visitor, as in the dataset's
  41 M events / 3.2 M IPs); each has a stable device_id, user agent, resolution, IP, home store,
  local-time format (≈35 % of visitors' clients write unpadded hours) and account/e-mail that
  appears on ≈5 % of their events. Activity is skewed (a few visitors make many events).
  2 % of events come from crawlers (facebookexternalhit, Googlebot, bingbot): no cookie, so a
  fresh device_id each time, crawler IP blocks, empty referrer and resolution;
- products are drawn Zipf-like (s = 1.07) from the fixed 2000-product catalog;
- ``local_time`` = UTC + the store country's fixed summer-2020 offset (:mod:`eventgen.stores`).
"""

from __future__ import annotations

import base64
import time
import uuid
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import accumulate
from random import Random
from typing import Any, Final, TypeVar
from urllib.parse import quote_plus

import orjson

from eventgen.catalog import (
    ALLOYS,
    ANDROID_MODELS,
    BOT_AGENTS,
    BOT_FRACTION,
    BOT_IP_PREFIXES,
    CATEGORIES,
    CHROME_VERSIONS,
    COLLECTION_COUNTS,
    COLLECTION_CUM,
    COLLECTIONS,
    DEVICE_CLASSES,
    DIAMONDS,
    EDGE_VERSIONS,
    FIREFOX_VERSIONS,
    LANDING_PAGE_TYPES,
    LANDING_PATHS,
    LISTING_PAGE_TYPES,
    OPTION_DICT_TYPES,
    OPTION_LIST_TYPES,
    PRODUCT_CUM,
    PRODUCT_PAGE_TYPES,
    PRODUCTS,
    QUALITIES,
    RECOMMENDATION_TYPES,
    REFERRER_EMPTY_FRACTION,
    REFERRER_MEDIA,
    RESOLUTIONS,
    SAMSUNG_MODELS,
    SEARCH_TERMS,
    SHAPES,
    STATIC_PATHS,
    UTM_BY_MEDIUM,
    VALUE_IDS,
    Product,
)
from eventgen.stores import CURRENCY_PER_EUR, STORES
from shared.event import BAD_KINDS, MAX_EVENT_BYTES, PRODUCT_EVENT_TYPES

T = TypeVar("T")

GLAMIRA: Final = "glamira"
SEED: Final = "seed"
VALID_KINDS: Final = (GLAMIRA, SEED)
KINDS: Final = (*VALID_KINDS, *BAD_KINDS)

DEFAULT_START: Final = date(2020, 6, 1)
DEFAULT_DAYS: Final = 3

# Relative traffic per UTC hour (Europe-heavy shop): integers, so the curve is exact everywhere.
HOURLY_WEIGHTS: Final = (30, 22, 18, 15, 14, 16, 24, 36, 48, 56, 60, 62, 64, 66, 66, 68, 72, 78, 86, 94, 98, 92, 72, 46)
UNPADDED_HOUR_VISITORS: Final = 0.35
ACCOUNT_FRACTION: Final = 0.05  # user_id_db / email_address set on this share of events
OVERSIZED_BYTES: Final = (int(MAX_EVENT_BYTES * 1.15), int(MAX_EVENT_BYTES * 1.3))  # < 2 MiB broker limit

_STORE_IDS: Final = tuple(STORES)
_STORE_CUM: Final = tuple(accumulate(s.weight for s in STORES.values()))
_MEDIA: Final = tuple(REFERRER_MEDIA)
_MEDIA_CUM: Final = tuple(accumulate(weight for weight, _ in REFERRER_MEDIA.values()))
_DEVICE_CUM: Final = tuple(accumulate(weight for _, weight, _ in DEVICE_CLASSES))
_AGENT_CUMS: Final = tuple(tuple(accumulate(w for _, w in templates)) for _, _, templates in DEVICE_CLASSES)
_PRODUCT_TYPES_CUM: Final = tuple(accumulate(COLLECTION_COUNTS[c] for c in sorted(PRODUCT_EVENT_TYPES)))
_PRODUCT_TYPES: Final = tuple(sorted(PRODUCT_EVENT_TYPES))
_CATEGORY_IDS: Final = {category: str(3000 + 7 * i) for i, category in enumerate(CATEGORIES)}
_LANDING_IDS: Final = {path: str(20 + i) for i, path in enumerate(LANDING_PATHS)}
_IP_FIRST_OCTETS: Final = (2, 5, 31, 37, 46, 62, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 109,
                           113, 115, 117, 171, 176, 178, 185, 188, 193, 194, 195, 212, 213, 217)  # fmt: skip
_EMAIL_DOMAINS: Final = ("gmail.com", "yahoo.com", "web.de", "gmx.de", "hotmail.com", "outlook.com", "orange.fr", "icloud.com")
_NAMES: Final = ("anna", "marie", "lukas", "sophie", "paul", "emma", "jan", "laura", "nguyen", "tom", "lea", "max", "julia")
# latin-1-encodable non-ASCII text for the not_utf8 kind (a client that sent cp1252)
_LATIN1_TERMS: Final = ("bague de fiançailles", "förlovningsring", "aliança de noivado", "Ringgröße", "chaîne en or", "anillo diseño")
_GOOGLE_FIXES: Final = {"jp": "co.jp", "in": "co.in", "ma": "co.ma", "ec": "com.ec", "pe": "com.pe", "qa": "com.qa", "jo": "jo"}


def _choice(rng: Random, items: Sequence[T]) -> T:
    """``rng.choice`` without its rejection sampling: 3x faster, deterministic all the same."""
    return items[int(rng.random() * len(items))]


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One record for the remote topic.

    ``kind``: ``"glamira"``, ``"seed"`` or one of ``shared.event.BAD_KINDS``. ``key``: the
    visitor's device_id (every record has one; a bad record comes from a visitor too).
    ``event_id``: the ``_id`` of a valid Glamira record, else None (seed-shape ids depend on the
    Kafka coordinates, see :class:`eventgen.manifest.Manifest`). ``collection`` and ``event``
    (the parsed value) are set for valid records only.
    """

    kind: str
    key: bytes | None
    value: bytes
    event_id: str | None = None
    collection: str | None = None
    event: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return self.kind in VALID_KINDS


@dataclass(frozen=True, slots=True)
class _Visitor:
    device_id: str
    store_id: str
    user_agent: str
    resolution: str
    ip: str
    unpadded_hours: bool
    account_id: str
    email: str
    is_bot: bool = False


def plan_counts(count: int, bad_fraction: float = 0.0, seed_shape_fraction: float = 0.1) -> dict[str, int]:
    """Exact number of records of each kind (keys in :data:`KINDS` order).

    ``bad = round_half_up(count × bad_fraction)`` split evenly over BAD_KINDS (the first
    ``bad % 7`` kinds get one more); of the valid rest, ``round_half_up(valid × seed_shape_fraction)``
    are seed-shape and the others Glamira.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0.0 <= bad_fraction <= 1.0 or not 0.0 <= seed_shape_fraction <= 1.0:
        raise ValueError("fractions must be within [0, 1]")
    bad = int(count * bad_fraction + 0.5)
    valid = count - bad
    seed = int(valid * seed_shape_fraction + 0.5)
    counts = {GLAMIRA: valid - seed, SEED: seed}
    per_kind, extra = divmod(bad, len(BAD_KINDS))
    for i, kind in enumerate(BAD_KINDS):
        counts[kind] = per_kind + (1 if i < extra else 0)
    return counts


def generate(
    count: int,
    *,
    seed: int,
    bad_fraction: float = 0.0,
    seed_shape_fraction: float = 0.1,
    start: date = DEFAULT_START,
    days: int = DEFAULT_DAYS,
) -> Iterator[GeneratedRecord]:
    """``count`` records in production order; kinds exactly as :func:`plan_counts` says.

    Same arguments → the same records, byte for byte. Lazy: memory does not grow with ``count``
    beyond the visitor pool.
    """
    counts = plan_counts(count, bad_fraction, seed_shape_fraction)
    if days < 1:
        raise ValueError("days must be >= 1")
    return _Generator(count, seed=seed, start=start, days=days).run(counts)


class _Generator:
    def __init__(self, count: int, *, seed: int, start: date, days: int) -> None:
        self.rng = Random(seed)
        self.count = count
        self.start_epoch = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
        self.minute_cum = tuple(accumulate(HOURLY_WEIGHTS[(m // 60) % 24] for m in range(days * 1440)))
        self.pool_size = max(16, count // 12)
        self.visitors: dict[int, _Visitor] = {}
        self.minute_prefixes: dict[tuple[int, bool], str] = {}
        # ObjectId layout: 4-byte time, 5-byte per-process random, 3-byte counter.
        self.oid_process = f"{self.rng.getrandbits(40):010x}"
        self.oid_counter = self.rng.getrandbits(24)

    def run(self, counts: dict[str, int]) -> Iterator[GeneratedRecord]:
        kinds = list(counts)
        remaining = [counts[k] for k in kinds]
        total = sum(remaining)
        rng = self.rng
        builders = {
            GLAMIRA: self._valid_glamira,
            SEED: self._valid_seed,
            "not_json": self._not_json,
            "not_utf8": self._not_utf8,
            "json_array": self._json_array,
            "missing_product_id": self._missing_product_id,
            "wrong_types": self._wrong_types,
            "oversized": self._oversized,
            "empty": self._empty,
        }
        for i in range(total):
            # Sequential sampling without replacement: exact totals, O(1) memory.
            pick = int(rng.random() * (total - i))
            k = 0
            while pick >= remaining[k]:
                pick -= remaining[k]
                k += 1
            remaining[k] -= 1
            yield builders[kinds[k]](i)

    # ---- valid kinds ---------------------------------------------------------------------------

    def _valid_glamira(self, i: int) -> GeneratedRecord:
        event = self.glamira_event(i)
        return GeneratedRecord(GLAMIRA, event["device_id"].encode(), orjson.dumps(event), event["_id"], event["collection"], event)

    def _valid_seed(self, i: int) -> GeneratedRecord:
        event = self.seed_event(i)
        return GeneratedRecord(SEED, event["device_id"].encode(), orjson.dumps(event), None, None, event)

    # ---- bad kinds: each breaks exactly the rule it is named after ---------------------------------

    def _any_event(self, i: int) -> dict[str, Any]:
        return self.seed_event(i) if self.rng.random() < 0.25 else self.glamira_event(i)

    def _not_json(self, i: int) -> GeneratedRecord:
        event = self._any_event(i)
        text = orjson.dumps(event).decode()
        variant = self.rng.randrange(4)
        if variant == 0:  # cut off mid-record
            bad = text[: self.rng.randint(1, len(text) - 1)]
        elif variant == 1:  # a Python repr instead of JSON
            bad = repr(event)
        elif variant == 2:  # form-encoded
            bad = "&".join(f"{k}={quote_plus(str(v))}" for k, v in event.items() if not isinstance(v, list | dict))
        else:  # two documents glued together
            bad = text + "\n" + text
        return GeneratedRecord("not_json", event["device_id"].encode(), bad.encode())

    def _not_utf8(self, i: int) -> GeneratedRecord:
        event = self.glamira_event(i, collection="search_box_action")
        event["key_search"] = _choice(self.rng, _LATIN1_TERMS)
        text = orjson.dumps(event).decode()
        variant = self.rng.randrange(3)
        if variant == 0:  # a client that sent latin-1
            raw = text.encode("latin-1")
        elif variant == 1:  # UTF-16 with a byte-order mark
            raw = text.encode("utf-16")
        else:  # one stray 0xFF byte (never valid in UTF-8)
            cut = self.rng.randint(1, len(text) - 1)
            raw = text[:cut].encode() + b"\xff" + text[cut:].encode()
        return GeneratedRecord("not_utf8", event["device_id"].encode(), raw)

    def _json_array(self, i: int) -> GeneratedRecord:
        events = [self._any_event(i) for _ in range(_choice(self.rng, (0, 1, 2, 3)))]
        key = events[0]["device_id"].encode() if events else self._visitor().device_id.encode()
        return GeneratedRecord("json_array", key, orjson.dumps(events))

    def _missing_product_id(self, i: int) -> GeneratedRecord:
        if self.rng.random() < 0.25:
            event = self.seed_event(i)
        else:
            event = self.glamira_event(i, collection=self._pick(_PRODUCT_TYPES, _PRODUCT_TYPES_CUM))
        del event["product_id"]
        return GeneratedRecord("missing_product_id", event["device_id"].encode(), orjson.dumps(event))

    def _wrong_types(self, i: int) -> GeneratedRecord:
        rng = self.rng
        variant = rng.randrange(7)
        if variant == 6:
            event = self.seed_event(i)
            event["product_id"] = [event["product_id"]]
        else:
            event = self.glamira_event(i, collection=self._pick(_PRODUCT_TYPES, _PRODUCT_TYPES_CUM))
            if variant == 0:
                event["product_id"] = {"id": event["product_id"]}
            elif variant == 1:
                event["product_id"] = [event["product_id"], event["product_id"]]
            elif variant == 2:
                event["product_id"] = rng.random() < 0.5  # a bool is not an id (even though bool ⊂ int)
            elif variant == 3:
                event["product_id"] = int(event["product_id"]) + 0.5  # non-integral float
            elif variant == 4:
                event["time_stamp"] = _choice(rng, ("unknown", "yesterday", f"{event['time_stamp']}abc", "1.5e9x"))
            else:  # a store_id that is not an id no longer refuses an event (issue 29): the time does
                event["time_stamp"] = {"$numberLong": str(event["time_stamp"])}
        return GeneratedRecord("wrong_types", event["device_id"].encode(), orjson.dumps(event))

    def _oversized(self, i: int) -> GeneratedRecord:
        rng = self.rng
        target = rng.randint(*OVERSIZED_BYTES)
        if rng.random() < 0.5:  # a cart nobody could buy: the same line thousands of times
            event = self.glamira_event(i, collection="checkout")
            line = event["cart_products"][0]
            one = len(orjson.dumps(line)) + 1
            base = len(orjson.dumps(event))
            event["cart_products"] = [line] * ((target - base) // one + 1)
        else:  # tracking junk appended to the URL
            event = self.glamira_event(i, collection="view_product_detail")
            base = len(orjson.dumps(event)) + len("&_tr=")
            event["current_url"] += ("&" if "?" in event["current_url"] else "?") + "_tr=" + rng.randbytes((target - base) // 2 + 1).hex()
        raw = orjson.dumps(event)
        assert MAX_EVENT_BYTES < len(raw) < 2 * 1024 * 1024 - 1024
        return GeneratedRecord("oversized", event["device_id"].encode(), raw)

    def _empty(self, i: int) -> GeneratedRecord:
        self._event_time(i)  # keeps the stream's time/rng usage uniform across kinds
        return GeneratedRecord("empty", self._visitor().device_id.encode(), b"")

    # ---- events ----------------------------------------------------------------------------------

    def glamira_event(self, i: int, *, collection: str | None = None) -> dict[str, Any]:
        rng = self.rng
        t = self._event_time(i)
        visitor = self._visitor()
        store_id = visitor.store_id
        store = STORES[store_id]
        if collection is None:
            collection = self._pick(COLLECTIONS, COLLECTION_CUM)
        product = self._product()
        site = f"https://www.{store.domain}"
        search_term = ""
        alloy = _choice(rng, ALLOYS)
        if collection in PRODUCT_PAGE_TYPES:
            current_url = f"{site}/{product.slug}.html"
            if rng.random() < 0.55:
                current_url += f"?alloy={alloy}"
        elif collection in LISTING_PAGE_TYPES:
            current_url = f"{site}/{product.category}/"
            if collection in ("view_sorting_relevance", "sorting_relevance_click_action"):
                current_url += "?product_list_order=relevance"
        elif collection in LANDING_PAGE_TYPES:
            current_url = f"{site}/{_choice(rng, LANDING_PATHS)}/"
        elif collection == "view_home_page":
            current_url = f"{site}/"
        elif collection == "view_static_page":
            current_url = f"{site}/{_choice(rng, STATIC_PATHS)}/"
        elif collection == "view_shopping_cart":
            current_url = f"{site}/checkout/cart/"
        elif collection == "view_my_account":
            current_url = f"{site}/{_choice(rng, ('customer/account', 'customer/account/login', 'sales/order/history', 'wishlist'))}/"
        elif collection == "checkout":
            current_url = f"{site}/checkout/"
        elif collection == "checkout_success":
            current_url = f"{site}/checkout/onepage/success/"
        elif collection == "search_box_action":
            search_term = _choice(rng, SEARCH_TERMS)
            current_url = f"{site}/catalogsearch/result/?q={quote_plus(search_term)}"
        else:  # view_all_recommend
            current_url = f"{site}/recommendation/all/?product={product.product_id}"
        referrer_url, medium = self._referrer(visitor, product)
        with_account = not visitor.is_bot and rng.random() < ACCOUNT_FRACTION
        event: dict[str, Any] = {
            "_id": self._object_id(int(t)),
            "time_stamp": int(t),
            "ip": visitor.ip,
            "user_agent": visitor.user_agent,
            "resolution": visitor.resolution,
            "user_id_db": visitor.account_id if with_account else "",
            "device_id": visitor.device_id,
            "api_version": "1.0",
            "store_id": store_id,
            "local_time": self._local_time(int(t), store.utc_offset, visitor.unpadded_hours),
            "show_recommendation": _choice(rng, ("true", "true", "false", "false", None)),
            "current_url": current_url,
            "referrer_url": referrer_url,
            "email_address": visitor.email if with_account else "",
            "collection": collection,
        }
        if collection in PRODUCT_EVENT_TYPES:
            event["product_id"] = product.product_id
        if collection in OPTION_LIST_TYPES:
            event["option"] = self._option_list(product, alloy)
        elif collection in OPTION_DICT_TYPES:
            event["option"] = {
                "alloy": alloy if rng.random() < 0.3 else "",
                "diamond": _choice(rng, DIAMONDS) if rng.random() < 0.25 else "",
                "shapediamond": _choice(rng, SHAPES) if rng.random() < 0.15 else "",
            }
            if collection == "view_listing_page":
                event["cat_id"] = _CATEGORY_IDS[product.category]
                event["collect_id"] = ""
            else:
                path = current_url.rstrip("/").rsplit("/", 1)[1]
                event["cat_id"] = ""
                event["collect_id"] = _LANDING_IDS[path]
        if collection == "select_product_option_quality":
            event["quality"], event["quality_label"] = _choice(rng, QUALITIES)
        elif collection == "view_product_detail":
            utm = UTM_BY_MEDIUM.get(medium)
            event["recommendation"] = rng.random() < 0.06
            event["utm_source"] = utm[0] if utm else False
            event["utm_medium"] = utm[1] if utm else False
        elif collection == "add_to_cart_action":
            currency = store.currency
            event["price"] = f"{product.price_eur * CURRENCY_PER_EUR[currency]:.2f}"
            event["currency"] = currency
            event["is_paypal"] = rng.random() < 0.12
        elif collection in ("view_shopping_cart", "checkout", "checkout_success"):
            event["cart_products"] = self._cart(store.currency)
            if collection == "checkout_success":
                order = rng.randint(100_000_000, 109_999_999)
                event["order_id"] = _choice(rng, (str(order), order, float(order)))  # all three occur in the dataset
        elif collection == "search_box_action":
            event["key_search"] = search_term
        if collection in RECOMMENDATION_TYPES or collection in ("view_all_recommend", "product_view_all_recommend_clicked"):
            if collection.startswith("product_") or collection == "view_all_recommend":
                event["viewing_product_id"] = product.product_id
            if collection != "view_all_recommend":
                position = rng.randint(1, 12)
                event["recommendation_product_id"] = self._product().product_id
                event["recommendation_product_position"] = position
                if collection.endswith("_clicked"):
                    event["recommendation_clicked_position"] = position
        return event

    def seed_event(self, i: int) -> dict[str, Any]:
        """The seed's simplified document: ISO times, ``remote_ip``, no ``_id``/``collection``."""
        t = self._event_time(i)
        visitor = self._visitor()
        product = self._product()
        store = STORES[visitor.store_id]
        seconds = int(t)
        micros = int((t - seconds) * 1_000_000)
        local = time.gmtime(seconds + int(store.utc_offset * 3600))
        utc = time.gmtime(seconds)
        return {
            "product_id": product.product_id,
            "device_id": visitor.device_id,
            "store_id": visitor.store_id,
            "referrer_url": self._referrer(visitor, product)[0],
            "local_time": f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{micros:06d}",
            "remote_ip": visitor.ip,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", utc),
        }

    # ---- pieces ------------------------------------------------------------------------------------

    def _pick(self, items: tuple[str, ...], cum: tuple[float, ...]) -> str:
        return items[bisect_right(cum, self.rng.random() * cum[-1])]

    def _product(self) -> Product:
        return PRODUCTS[bisect_right(PRODUCT_CUM, self.rng.random() * PRODUCT_CUM[-1])]

    def _event_time(self, i: int) -> float:
        """Unix seconds of record ``i``: the inverse of the diurnal CDF at (i + U) / count."""
        cum = self.minute_cum
        x = (i + self.rng.random()) / max(self.count, 1) * cum[-1]
        minute = min(bisect_right(cum, x), len(cum) - 1)
        before = cum[minute - 1] if minute else 0
        within = min(max((x - before) / (cum[minute] - before), 0.0), 0.999999)
        return self.start_epoch + (minute + within) * 60

    def _object_id(self, seconds: int) -> str:
        self.oid_counter = (self.oid_counter + 1) & 0xFFFFFF
        return f"{seconds & 0xFFFFFFFF:08x}{self.oid_process}{self.oid_counter:06x}"

    def _local_time(self, seconds: int, utc_offset: float, unpadded: bool) -> str:
        local = seconds + int(utc_offset * 3600)
        minute, second = divmod(local, 60)
        prefix = self.minute_prefixes.get((minute, unpadded))
        if prefix is None:  # times rise, so a minute's prefix is reused by the next events
            if len(self.minute_prefixes) > 4096:
                self.minute_prefixes.clear()
            lt = time.gmtime(minute * 60)
            hour = str(lt.tm_hour) if unpadded else f"{lt.tm_hour:02d}"
            prefix = self.minute_prefixes[(minute, unpadded)] = f"{lt.tm_year:04d}-{lt.tm_mon:02d}-{lt.tm_mday:02d} {hour}:{lt.tm_min:02d}:"
        return f"{prefix}{second:02d}"

    def _visitor(self) -> _Visitor:
        rng = self.rng
        if rng.random() < BOT_FRACTION:
            b = rng.randrange(len(BOT_AGENTS))
            return _Visitor(
                device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                store_id=self._pick(_STORE_IDS, _STORE_CUM),
                user_agent=BOT_AGENTS[b],
                resolution="",
                ip=f"{BOT_IP_PREFIXES[b]}.{rng.randrange(256)}.{rng.randint(1, 254)}",
                unpadded_hours=False,
                account_id="",
                email="",
                is_bot=True,
            )
        index = int(self.pool_size * rng.random() ** 2)  # skewed: low indices are heavy users
        visitor = self.visitors.get(index)
        if visitor is None:
            visitor = self.visitors[index] = self._new_visitor()
        return visitor

    def _new_visitor(self) -> _Visitor:
        rng = self.rng
        c = bisect_right(_DEVICE_CUM, rng.random() * _DEVICE_CUM[-1])
        device_class, _, templates = DEVICE_CLASSES[c]
        cum = _AGENT_CUMS[c]
        template = templates[bisect_right(cum, rng.random() * cum[-1])][0]
        user_agent = template.format(
            chrome=_choice(rng, CHROME_VERSIONS),
            edge=_choice(rng, EDGE_VERSIONS),
            firefox=_choice(rng, FIREFOX_VERSIONS),
            mac=rng.randint(4, 5),
            ios=rng.randint(3, 5),
            android=_choice(rng, (8, 9, 10, 10)),
            model=_choice(rng, ANDROID_MODELS),
            samsung=_choice(rng, SAMSUNG_MODELS),
        )
        if rng.random() < 0.01:
            ip = "2a02:" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(3)) + f"::{rng.getrandbits(16):x}"
        else:
            ip = f"{_choice(rng, _IP_FIRST_OCTETS)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"
        name = _choice(rng, _NAMES)
        return _Visitor(
            device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            store_id=self._pick(_STORE_IDS, _STORE_CUM),
            user_agent=user_agent,
            resolution=_choice(rng, RESOLUTIONS[device_class]),
            ip=ip,
            unpadded_hours=rng.random() < UNPADDED_HOUR_VISITORS,
            account_id=str(rng.randint(10_000, 999_999)),
            email=f"{name}.{rng.randint(1, 9999)}@{_choice(rng, _EMAIL_DOMAINS)}",
        )

    def _referrer(self, visitor: _Visitor, product: Product) -> tuple[str, str]:
        """(referrer_url, medium); medium is what the ETL should classify the URL as."""
        rng = self.rng
        if visitor.is_bot or rng.random() < REFERRER_EMPTY_FRACTION:
            return "", "direct"
        medium = self._pick(_MEDIA, _MEDIA_CUM)
        template = _choice(rng, REFERRER_MEDIA[medium][1])
        domain = STORES[visitor.store_id].domain
        if "{" not in template:
            return template, medium
        tld = domain.split(".", 1)[1]
        url = template.format(
            own=domain,
            category=product.category,
            product=product.slug,
            tld_google=f"www.google.{_GOOGLE_FIXES.get(tld, tld)}",
            token=base64.urlsafe_b64encode(rng.getrandbits(120).to_bytes(15, "big")).decode(),
        )
        return url, medium

    def _option_list(self, product: Product, alloy: str) -> list[dict[str, str]]:
        options = [{"option_label": "alloy", "option_id": product.alloy_option_id, "value_label": alloy, "value_id": VALUE_IDS[alloy]}]
        if self.rng.random() < 0.7:
            stone = _choice(self.rng, DIAMONDS)
            options.append(
                {"option_label": "diamond", "option_id": product.diamond_option_id, "value_label": stone, "value_id": VALUE_IDS[stone]}
            )
        return options

    def _cart(self, currency: str) -> list[dict[str, Any]]:
        rng = self.rng
        lines = []
        for _ in range(_choice(rng, (1, 1, 1, 1, 1, 1, 1, 2, 2, 3))):
            product = self._product()
            lines.append(
                {
                    "product_id": int(product.product_id),
                    "amount": 2 if rng.random() < 0.05 else 1,
                    "price": f"{product.price_eur * CURRENCY_PER_EUR[currency]:.2f}",
                    "currency": currency,
                    "option": self._option_list(product, _choice(rng, ALLOYS)),
                }
            )
        return lines
