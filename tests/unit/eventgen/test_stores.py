"""The store table the ETL reuses for country names."""

from __future__ import annotations

from eventgen.stores import CURRENCY_PER_EUR, REGIONS, STORE_BY_DOMAIN, STORES, store_id_for_url


def test_85_stores_with_unique_country_sites() -> None:
    assert list(STORES) == [str(i) for i in range(1, 86)]
    domains = [s.domain for s in STORES.values()]
    assert len(set(domains)) == 85 and all(d.startswith("glamira.") for d in domains)
    assert len({s.country for s in STORES.values()}) == 85
    assert {s.region for s in STORES.values()} == set(REGIONS)
    assert all(s.currency in CURRENCY_PER_EUR for s in STORES.values())
    assert all(-12 <= s.utc_offset <= 14 for s in STORES.values())
    domain, country, region = STORES["1"][:3]
    assert (domain, country, region) == ("glamira.de", "Germany", "Europe")
    assert STORES[STORE_BY_DOMAIN["glamira.com.vn"]].country == "Vietnam"
    assert STORES[STORE_BY_DOMAIN["glamira.co.uk"]].utc_offset == 1


def test_store_id_for_url() -> None:
    assert store_id_for_url("https://www.glamira.fr/glamira-pendant-viktor.html?alloy=yellow-375") == STORE_BY_DOMAIN["glamira.fr"]
    assert store_id_for_url("https://glamira.com.vn/") == STORE_BY_DOMAIN["glamira.com.vn"]
    assert store_id_for_url("https://www.google.com/") is None
    assert store_id_for_url("") is None
