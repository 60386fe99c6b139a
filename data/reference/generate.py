"""Regenerate the sample geo and campaign files (deterministic): `python data/reference/generate.py`.

The data is synthetic. IP ranges sit inside the address blocks each regional registry
really administers (so an APNIC block maps to an Asian city), but which network belongs to
which city is made up: never use these files to locate anyone. The documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) get fixed cities so docs
and tests can rely on them.
"""

from __future__ import annotations

import csv
import ipaddress
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20260301

# (country, region, city) by registry region.
CITIES = {
    "arin": [
        ("US", "California", "San Francisco"),
        ("US", "California", "Los Angeles"),
        ("US", "California", "San Diego"),
        ("US", "New York", "New York"),
        ("US", "Illinois", "Chicago"),
        ("US", "Texas", "Houston"),
        ("US", "Texas", "Austin"),
        ("US", "Texas", "Dallas"),
        ("US", "Washington", "Seattle"),
        ("US", "Massachusetts", "Boston"),
        ("US", "Georgia", "Atlanta"),
        ("US", "Florida", "Miami"),
        ("US", "Colorado", "Denver"),
        ("US", "Arizona", "Phoenix"),
        ("US", "Pennsylvania", "Philadelphia"),
        ("US", "Oregon", "Portland"),
        ("US", "Minnesota", "Minneapolis"),
        ("US", "Virginia", "Ashburn"),
        ("US", "Michigan", "Detroit"),
        ("US", "Utah", "Salt Lake City"),
        ("CA", "Ontario", "Toronto"),
        ("CA", "Quebec", "Montreal"),
        ("CA", "British Columbia", "Vancouver"),
        ("CA", "Alberta", "Calgary"),
        ("CA", "Ontario", "Ottawa"),
    ],
    "ripe": [
        ("GB", "England", "London"),
        ("GB", "England", "Manchester"),
        ("GB", "Scotland", "Edinburgh"),
        ("GB", "England", "Birmingham"),
        ("DE", "Berlin", "Berlin"),
        ("DE", "Bavaria", "Munich"),
        ("DE", "Hamburg", "Hamburg"),
        ("DE", "Hesse", "Frankfurt am Main"),
        ("DE", "North Rhine-Westphalia", "Cologne"),
        ("FR", "Île-de-France", "Paris"),
        ("FR", "Auvergne-Rhône-Alpes", "Lyon"),
        ("FR", "Provence-Alpes-Côte d'Azur", "Marseille"),
        ("NL", "North Holland", "Amsterdam"),
        ("NL", "South Holland", "Rotterdam"),
        ("BE", "Brussels-Capital", "Brussels"),
        ("ES", "Community of Madrid", "Madrid"),
        ("ES", "Catalonia", "Barcelona"),
        ("IT", "Lombardy", "Milan"),
        ("IT", "Lazio", "Rome"),
        ("PT", "Lisbon", "Lisbon"),
        ("IE", "Leinster", "Dublin"),
        ("SE", "Stockholm County", "Stockholm"),
        ("NO", "Oslo", "Oslo"),
        ("DK", "Capital Region", "Copenhagen"),
        ("FI", "Uusimaa", "Helsinki"),
        ("PL", "Masovian", "Warsaw"),
        ("PL", "Lesser Poland", "Kraków"),
        ("CZ", "Prague", "Prague"),
        ("AT", "Vienna", "Vienna"),
        ("CH", "Zurich", "Zürich"),
        ("CH", "Geneva", "Geneva"),
        ("GR", "Attica", "Athens"),
        ("RO", "Bucharest", "Bucharest"),
        ("HU", "Budapest", "Budapest"),
        ("TR", "Istanbul", "Istanbul"),
        ("AE", "Dubai", "Dubai"),
        ("IL", "Tel Aviv", "Tel Aviv"),
        ("SA", "Riyadh", "Riyadh"),
        ("UA", "Kyiv City", "Kyiv"),
    ],
    "apnic": [
        ("JP", "Tokyo", "Tokyo"),
        ("JP", "Osaka", "Osaka"),
        ("JP", "Aichi", "Nagoya"),
        ("KR", "Seoul", "Seoul"),
        ("KR", "Busan", "Busan"),
        ("CN", "Shanghai", "Shanghai"),
        ("CN", "Beijing", "Beijing"),
        ("CN", "Guangdong", "Shenzhen"),
        ("HK", "Hong Kong", "Hong Kong"),
        ("TW", "Taipei", "Taipei"),
        ("SG", "Singapore", "Singapore"),
        ("IN", "Maharashtra", "Mumbai"),
        ("IN", "Karnataka", "Bengaluru"),
        ("IN", "Delhi", "New Delhi"),
        ("IN", "Tamil Nadu", "Chennai"),
        ("ID", "Jakarta", "Jakarta"),
        ("TH", "Bangkok", "Bangkok"),
        ("VN", "Ho Chi Minh City", "Ho Chi Minh City"),
        ("PH", "Metro Manila", "Manila"),
        ("MY", "Kuala Lumpur", "Kuala Lumpur"),
        ("AU", "New South Wales", "Sydney"),
        ("AU", "Victoria", "Melbourne"),
        ("AU", "Queensland", "Brisbane"),
        ("AU", "Western Australia", "Perth"),
        ("NZ", "Auckland", "Auckland"),
        ("NZ", "Wellington", "Wellington"),
    ],
    "lacnic": [
        ("BR", "São Paulo", "São Paulo"),
        ("BR", "Rio de Janeiro", "Rio de Janeiro"),
        ("BR", "Minas Gerais", "Belo Horizonte"),
        ("MX", "Mexico City", "Mexico City"),
        ("MX", "Jalisco", "Guadalajara"),
        ("MX", "Nuevo León", "Monterrey"),
        ("AR", "Buenos Aires", "Buenos Aires"),
        ("CL", "Santiago Metropolitan", "Santiago"),
        ("CO", "Bogotá", "Bogotá"),
        ("CO", "Antioquia", "Medellín"),
        ("PE", "Lima", "Lima"),
        ("UY", "Montevideo", "Montevideo"),
    ],
    "afrinic": [
        ("ZA", "Gauteng", "Johannesburg"),
        ("ZA", "Western Cape", "Cape Town"),
        ("NG", "Lagos", "Lagos"),
        ("KE", "Nairobi", "Nairobi"),
        ("EG", "Cairo", "Cairo"),
        ("MA", "Casablanca-Settat", "Casablanca"),
        ("GH", "Greater Accra", "Accra"),
    ],
}

# First octets of IPv4 /8s each registry administers (IANA's registry), and IPv6 /12s.
IPV4_POOLS = {
    "arin": [
        3,
        4,
        8,
        12,
        13,
        23,
        24,
        50,
        63,
        64,
        65,
        66,
        67,
        68,
        69,
        70,
        71,
        72,
        73,
        74,
        75,
        76,
        96,
        97,
        98,
        99,
        104,
        107,
        108,
        173,
        174,
        184,
        199,
        204,
        205,
        206,
        207,
        208,
        209,
        216,
    ],
    "ripe": [
        2,
        5,
        31,
        37,
        46,
        62,
        77,
        78,
        79,
        80,
        81,
        82,
        83,
        84,
        85,
        86,
        87,
        88,
        89,
        90,
        91,
        92,
        93,
        94,
        95,
        109,
        176,
        178,
        185,
        188,
        193,
        194,
        195,
        212,
        213,
        217,
    ],
    "apnic": [
        1,
        14,
        27,
        36,
        39,
        42,
        49,
        58,
        59,
        60,
        61,
        101,
        103,
        106,
        110,
        111,
        112,
        113,
        114,
        115,
        116,
        117,
        118,
        119,
        120,
        121,
        122,
        123,
        124,
        125,
        175,
        180,
        182,
        183,
        202,
        210,
        211,
        218,
        219,
        220,
        221,
        222,
    ],
    "lacnic": [177, 179, 181, 186, 187, 189, 190, 191, 200, 201],
    "afrinic": [41, 102, 105, 154, 196, 197],
}
IPV6_POOLS = {"arin": 0x2600, "ripe": 0x2A00, "apnic": 0x2400, "lacnic": 0x2800, "afrinic": 0x2C00}
IPV4_BLOCKS = {"arin": 1500, "ripe": 1400, "apnic": 1100, "lacnic": 450, "afrinic": 250}
IPV6_BLOCKS = {"arin": 450, "ripe": 450, "apnic": 350, "lacnic": 150, "afrinic": 100}

DOCUMENTATION_RANGES = [
    ("192.0.2.0", "192.0.2.127", "US", "California", "San Francisco"),
    ("192.0.2.128", "192.0.2.255", "US", "New York", "New York"),
    ("198.51.100.0", "198.51.100.255", "DE", "Berlin", "Berlin"),
    ("203.0.113.0", "203.0.113.127", "JP", "Tokyo", "Tokyo"),
    ("203.0.113.128", "203.0.113.255", "AU", "New South Wales", "Sydney"),
    ("2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff", "GB", "England", "London"),
    ("2001:db8:1::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff", "FR", "Île-de-France", "Paris"),
    ("2001:db8:2::", "2001:db8:2:ffff:ffff:ffff:ffff:ffff", "BR", "São Paulo", "São Paulo"),
]


def _ipv4_block(rng: random.Random, first_octet: int) -> tuple[int, int]:
    prefix = rng.choices([16, 18, 19, 20, 21, 22, 23, 24], weights=[1, 2, 3, 5, 6, 8, 8, 10])[0]
    size = 1 << (32 - prefix)
    start = (first_octet << 24) + rng.randrange(0, 1 << 24, size)
    return start, start + size - 1


def _ipv6_block(rng: random.Random, top12: int) -> tuple[int, int]:
    prefix = rng.choice([29, 32, 32, 32, 36, 40, 44, 48])
    size = 1 << (128 - prefix)
    base = top12 << 112
    start = base + rng.randrange(0, 1 << 116, size)
    return start, start + size - 1


def _disjoint(
    blocks: list[tuple[int, int, tuple[str, str, str]]],
) -> list[tuple[int, int, tuple[str, str, str]]]:
    kept: list[tuple[int, int, tuple[str, str, str]]] = []
    for start, end, city in sorted(blocks):
        if kept and start <= kept[-1][1]:
            continue
        kept.append((start, end, city))
    return kept


def geo_rows(rng: random.Random) -> list[tuple[str, str, str, str, str]]:
    reserved = [
        ipaddress.ip_network(n)
        for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
    ]
    v4: list[tuple[int, int, tuple[str, str, str]]] = []
    v6: list[tuple[int, int, tuple[str, str, str]]] = []
    for registry, cities in CITIES.items():
        for _ in range(IPV4_BLOCKS[registry]):
            v4.append((*_ipv4_block(rng, rng.choice(IPV4_POOLS[registry])), rng.choice(cities)))
        for _ in range(IPV6_BLOCKS[registry]):
            v6.append((*_ipv6_block(rng, IPV6_POOLS[registry]), rng.choice(cities)))
    rows = []
    for version, blocks in ((4, v4), (6, v6)):
        for start, end, (country, region, city) in _disjoint(blocks):
            address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            first, last = address(start), address(end)
            if any(first in net or last in net for net in reserved):
                continue
            rows.append((str(first), str(last), country, region, city))
    rows.extend(DOCUMENTATION_RANGES)
    return rows


# (utm_source, utm_medium, channel, platform name)
SOURCES = [
    ("google", "cpc", "paid_search", "Google Ads"),
    ("google", "display", "display", "Google Display"),
    ("bing", "cpc", "paid_search", "Microsoft Ads"),
    ("facebook", "paid_social", "paid_social", "Meta Ads"),
    ("facebook", "social", "organic_social", "Facebook"),
    ("instagram", "paid_social", "paid_social", "Meta Ads"),
    ("instagram", "social", "organic_social", "Instagram"),
    ("tiktok", "paid_social", "paid_social", "TikTok Ads"),
    ("linkedin", "paid_social", "paid_social", "LinkedIn Ads"),
    ("pinterest", "paid_social", "paid_social", "Pinterest Ads"),
    ("reddit", "paid_social", "paid_social", "Reddit Ads"),
    ("youtube", "video", "video", "YouTube"),
    ("newsletter", "email", "email", "Newsletter"),
    ("klaviyo", "email", "email", "Klaviyo"),
    ("braze", "push", "push", "Braze"),
    ("braze", "sms", "sms", "Braze"),
    ("criteo", "display", "display", "Criteo"),
    ("taboola", "native", "native", "Taboola"),
    ("outbrain", "native", "native", "Outbrain"),
    ("awin", "affiliate", "affiliate", "Awin"),
    ("impact", "affiliate", "affiliate", "Impact"),
    ("partner_blog", "referral", "referral", "Partner blogs"),
]
THEMES = [
    "spring_sale",
    "summer_sale",
    "black_friday",
    "cyber_monday",
    "back_to_school",
    "holiday_gift_guide",
    "new_arrivals",
    "clearance",
    "brand",
    "retargeting_cart",
    "retargeting_viewers",
    "winback",
    "welcome_series",
    "product_launch",
    "free_shipping",
    "valentines",
    "mothers_day",
    "fathers_day",
    "loyalty_rewards",
    "flash_sale",
]
THEME_MONTHS = {
    "spring_sale": 3,
    "summer_sale": 6,
    "black_friday": 11,
    "cyber_monday": 11,
    "back_to_school": 8,
    "holiday_gift_guide": 12,
    "valentines": 2,
    "mothers_day": 5,
    "fathers_day": 6,
}
CATEGORIES = ["beauty", "books", "electronics", "grocery", "home", "shoes", "sports", "toys", "all"]
MARKETS = ["us", "gb", "de", "fr", "nl", "es", "it", "ca", "au", "jp", "br", "mx"]


def campaign_rows(rng: random.Random, count: int = 3200) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    while len(rows) < count:
        source, medium, channel, platform = rng.choice(SOURCES)
        theme, category, market, year = (
            rng.choice(THEMES),
            rng.choice(CATEGORIES),
            rng.choice(MARKETS),
            rng.choice([2024, 2025, 2026]),
        )
        campaign = f"{theme}_{year}_{category}_{market}"
        if (source, medium, campaign) in seen:
            continue
        seen.add((source, medium, campaign))
        start_month = THEME_MONTHS.get(theme) or rng.randint(1, 12)
        end_month = min(12, start_month + rng.randint(0, 2))
        rows.append(
            {
                "utm_source": source,
                "utm_medium": medium,
                "utm_campaign": campaign,
                "campaign_id": f"cmp_{len(rows) + 1:05d}",
                "name": (
                    f"{theme.replace('_', ' ').title()} {year} · {category.title()} · "
                    f"{market.upper()} ({platform})"
                ),
                "channel": channel,
                "start_date": f"{year}-{start_month:02d}-01",
                "end_date": f"{year}-{end_month:02d}-28",
            }
        )
    for source, medium, channel, platform in SOURCES:  # fallbacks: any other campaign of a source and medium
        rows.append(
            _fallback(
                source,
                medium,
                "*",
                f"cmp_{source}_{medium}_other",
                f"{platform} (other {medium} campaigns)",
                channel,
            )
        )
    for medium, channel in sorted({(m, c) for _, m, c, _ in SOURCES}):  # any source with a known medium
        rows.append(_fallback("*", medium, "*", f"cmp_any_{medium}", f"Unlisted {medium} traffic", channel))
    return rows


def _fallback(
    source: str, medium: str, campaign: str, campaign_id: str, name: str, channel: str
) -> dict[str, str]:
    return {
        "utm_source": source,
        "utm_medium": medium,
        "utm_campaign": campaign,
        "campaign_id": campaign_id,
        "name": name,
        "channel": channel,
        "start_date": "",
        "end_date": "",
    }


def main() -> None:
    rng = random.Random(SEED)
    with open(HERE / "geo_ranges.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["start_ip", "end_ip", "country", "region", "city"])
        writer.writerows(geo_rows(rng))
    with open(HERE / "campaigns.csv", "w", newline="") as fh:
        rows = campaign_rows(rng)
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
