# ruff: noqa: E501
"""The offline lookups: user agent, referrer, site → country, product slug; and the store
mapping agrees with the generator's store table."""

from __future__ import annotations

import pytest
from etl_api.enrich import (
    Country,
    DeviceInfo,
    ProductInfo,
    ReferrerInfo,
    classify_referrer,
    country_of_code,
    country_of_site,
    parse_user_agent,
    product_of_url,
    site_of_url,
)


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.61 Safari/537.36",
            DeviceInfo("desktop", "Chrome", "Chrome 83.0 / Windows 10", "Windows 10", False),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.5 Mobile/15E148 Safari/604.1",
            DeviceInfo("mobile", "Mobile Safari", "Mobile Safari 13.0 / iOS 13.3", "iOS 13.3", False),
        ),
        (
            "Mozilla/5.0 (Linux; Android 9; SM-T510) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.101 Safari/537.36",
            DeviceInfo("tablet", "Chrome", "Chrome 83.0 / Android 9", "Android 9", False),
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 13_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Mobile/15E148 Safari/604.1",
            DeviceInfo("tablet", "Mobile Safari", "Mobile Safari 13.1 / iOS 13.5", "iOS 13.5", False),
        ),
        (
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            DeviceInfo("bot", "FacebookBot", "FacebookBot 1.1", None, True),
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            DeviceInfo("bot", "Googlebot", "Googlebot 2.1", None, True),
        ),
        ("python-requests/2.31.0", DeviceInfo("bot", "Python Requests", "Python Requests 2.31", None, True)),
        ("", DeviceInfo("unknown", None, None, None, False)),
        (None, DeviceInfo("unknown", None, None, None, False)),
        ("garbage", DeviceInfo("other", None, None, None, False)),
    ],
)
def test_parse_user_agent(ua: str | None, expected: DeviceInfo) -> None:
    assert parse_user_agent(ua) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, ReferrerInfo(None, "direct")),
        ("   ", ReferrerInfo(None, "direct")),
        ("https://www.google.com/", ReferrerInfo("google.com", "search")),
        ("https://www.google.com.vn/search?q=nhan", ReferrerInfo("google.com.vn", "search")),
        ("https://duckduckgo.com/", ReferrerInfo("duckduckgo.com", "search")),
        ("https://l.facebook.com/l.php?u=x", ReferrerInfo("facebook.com", "social")),
        ("https://t.co/abc", ReferrerInfo("t.co", "social")),
        ("https://mail.google.com/mail/u/0/", ReferrerInfo("google.com", "email")),
        ("https://example.org/news?utm_medium=email", ReferrerInfo("example.org", "email")),
        ("https://www.googleadservices.com/pagead/aclk?sa=L", ReferrerInfo("googleadservices.com", "paid")),
        ("https://www.google.com/?gclid=abc", ReferrerInfo("google.com", "paid")),
        ("https://www.glamira.de/ringe/", ReferrerInfo("glamira.de", "internal")),
        ("https://www.glamira.com.vn/", ReferrerInfo("glamira.com.vn", "internal")),
        ("https://some-blog.example.org/best-rings", ReferrerInfo("example.org", "other")),
        ("http://[broken", ReferrerInfo(None, "other")),
        ("www.bing.com/search?q=ring", ReferrerInfo("bing.com", "search")),
    ],
)
def test_classify_referrer(url: str | None, expected: ReferrerInfo) -> None:
    assert classify_referrer(url) == expected


def test_sites_and_seed_codes_map_to_countries() -> None:
    assert site_of_url("https://www.glamira.com.vn/glamira-ring.html?x=1") == "glamira.com.vn"
    assert site_of_url(None) is None
    assert country_of_site("glamira.com.vn") == Country("VN", "Vietnam", "Asia")
    assert country_of_site("glamira.co.uk") == Country("GB", "United Kingdom", "Europe")
    assert country_of_site("glamira.com") == Country("US", "United States", "North America")
    assert country_of_site("glamira.com.mx") == Country("MX", "Mexico", "North America")
    assert country_of_site("glamira.com.br") == Country("BR", "Brazil", "South America")
    assert country_of_site("glamira.xyz") is None
    assert country_of_code("US") == Country("US", "United States", "North America")
    assert country_of_code("gb") == Country("GB", "United Kingdom", "Europe")
    assert country_of_code("12") is None
    assert country_of_code(None) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://www.glamira.fr/glamira-pendant-viktor.html?alloy=yellow-375",
            ProductInfo("glamira-pendant-viktor", "Glamira Pendant Viktor", "pendant"),
        ),
        (
            "https://www.glamira.de/glamira-engagement-ring-aurea.html",
            ProductInfo("glamira-engagement-ring-aurea", "Glamira Engagement Ring Aurea", "engagement ring"),
        ),
        ("https://www.glamira.de/glamira-earrings-lumia.html", ProductInfo("glamira-earrings-lumia", "Glamira Earrings Lumia", "earring")),
        ("https://www.glamira.de/glamira-viktor.html", ProductInfo("glamira-viktor", "Glamira Viktor", None)),
        ("https://www.glamira.de/", None),
        ("https://www.glamira.de/catalog/product/view/id/123", None),
        (None, None),
    ],
)
def test_product_of_url(url: str | None, expected: ProductInfo | None) -> None:
    assert product_of_url(url) == expected


def test_store_mapping_agrees_with_the_generators_store_table() -> None:
    from eventgen import stores  # the generator's own table (tools/eventgen)

    ours = {sid: country_of_site(st.domain) for sid, st in stores.STORES.items()}
    disagree = {
        sid: (st[:3], ours[sid]) for sid, st in stores.STORES.items() if ours[sid] is None or (ours[sid].name, ours[sid].region) != st[1:3]
    }
    assert len(stores.STORES) == 85
    assert disagree == {}
