"""A small recorded set of financial feeds for the offline demo, written as RSS 2.0 and Atom by this module.

The stories are fixed; their dates are laid out backwards from a chosen moment so the demo always looks
current. The set shows what ingestion deals with: a central bank, a newswire, a markets desk that
re-publishes wire stories under tracking-parameter links and lightly edited headlines, an EDGAR-style
Atom feed of filings, and one source that answers with an HTML page instead of a feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape

from pipeline.demo.feedserver import FeedServer
from pipeline.ingest.sources import Source


@dataclass(frozen=True)
class FeedItem:
    """One item of a feed: title, link, summary, age before the feed's moment, and optional GUID."""

    title: str
    link: str
    summary: str
    age: timedelta
    guid: str | None = None


def rss_document(title: str, link: str, items: list[FeedItem], now: datetime) -> bytes:
    """Return an RSS 2.0 document of ``items`` dated back from ``now``."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0">\n<channel>\n',
        f"<title>{escape(title)}</title>\n<link>{escape(link)}</link>\n",
        f"<description>{escape(title)}</description>\n<language>en-us</language>\n",
        f"<lastBuildDate>{format_datetime(now.astimezone(UTC), usegmt=True)}</lastBuildDate>\n",
    ]
    for item in items:
        guid = item.guid or item.link
        parts.append(
            "<item>\n"
            f"  <title>{escape(item.title)}</title>\n"
            f"  <link>{escape(item.link)}</link>\n"
            f'  <guid isPermaLink="{str(guid == item.link).lower()}">{escape(guid)}</guid>\n'
            f"  <pubDate>{format_datetime((now - item.age).astimezone(UTC), usegmt=True)}</pubDate>\n"
            # Summaries arrive HTML-escaped, as most publishers send them.
            f"  <description>{escape('<p>' + item.summary + '</p>')}</description>\n"
            "</item>\n"
        )
    parts.append("</channel>\n</rss>\n")
    return "".join(parts).encode("utf-8")


def atom_document(title: str, link: str, items: list[FeedItem], now: datetime) -> bytes:
    """Return an Atom 1.0 document of ``items`` dated back from ``now``."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n',
        f'<title>{escape(title)}</title>\n<link rel="alternate" href="{escape(link)}"/>\n',
        f"<id>{escape(link)}</id>\n<updated>{stamp}</updated>\n",
    ]
    for item in items:
        updated = (now - item.age).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts.append(
            "<entry>\n"
            f"  <title>{escape(item.title)}</title>\n"
            f'  <link rel="alternate" type="text/html" href="{escape(item.link)}"/>\n'
            f'  <summary type="html">{escape(item.summary)}</summary>\n'
            f"  <updated>{updated}</updated>\n"
            f"  <id>{escape(item.guid or item.link)}</id>\n"
            "</entry>\n"
        )
    parts.append("</feed>\n")
    return "".join(parts).encode("latin-1", errors="xmlcharrefreplace")


H = timedelta(hours=1)
M = timedelta(minutes=1)

CENTRAL_BANK = [
    FeedItem(
        "Federal Reserve issues FOMC statement",
        "https://demo-centralbank.example/newsevents/pressreleases/monetary20261126a.htm",
        "The Federal Open Market Committee decided to maintain the target range for the federal funds rate "
        "at 4-1/4 to 4-1/2 percent and said it will continue to assess incoming data.",
        26 * H,
    ),
    FeedItem(
        "Minutes of the Federal Open Market Committee, November 4-5",
        "https://demo-centralbank.example/monetarypolicy/fomcminutes20261105.htm",
        "Participants judged that inflation had eased substantially but remained somewhat elevated, and "
        "several noted downside risks to employment from slowing hiring.",
        50 * H,
    ),
    FeedItem(
        "Federal Reserve Board announces results of bank stress tests",
        "https://demo-centralbank.example/newsevents/pressreleases/bcreg20261120a.htm",
        "All large banks tested remained above their minimum capital requirements under a severely "
        "adverse scenario that included a sharp commercial real estate decline.",
        6 * H,
    ),
]

NEWSWIRE = [
    FeedItem(
        "Apple shares slide after iPhone sales miss forecasts in China",
        "https://demo-wire.example/markets/apple-iphone-china-sales-miss-2026-11-27/",
        "Apple Inc shares fell 4% in early trading on Friday after the company reported iPhone revenue in "
        "Greater China well below analyst estimates, citing intense competition from local brands.",
        3 * H,
    ),
    FeedItem(
        "Nvidia forecast tops estimates as data center demand stays strong",
        "https://demo-wire.example/technology/nvidia-forecast-data-center-2026-11-26/",
        "Nvidia projected fourth-quarter revenue above Wall Street expectations on Wednesday, as cloud "
        "providers kept spending heavily on its $NVDA AI accelerators.",
        20 * H,
    ),
    FeedItem(
        "Oil falls 3% as OPEC+ signals it may raise output next year",
        "https://demo-wire.example/business/energy/oil-opec-output-2026-11-27/",
        "Brent crude fell below $70 a barrel after delegates said the producer group was considering "
        "unwinding supply cuts, reviving worries about a glut in 2027.",
        4 * H,
    ),
    FeedItem(
        "Regional bank shares tumble as deposit outflows accelerate",
        "https://demo-wire.example/business/finance/regional-banks-deposits-2026-11-27/",
        "Shares of U.S. regional lenders dropped sharply after two banks disclosed larger-than-expected "
        "deposit outflows, rekindling memories of the 2023 banking turmoil.",
        2 * H,
    ),
    FeedItem(
        "Berkshire Hathaway builds record cash pile, trims $BRK.B buybacks",
        "https://demo-wire.example/business/berkshire-cash-pile-2026-11-25/",
        "Warren Buffett's conglomerate held more cash than ever at the end of the quarter and repurchased "
        "no shares, as it found few attractive acquisitions at current prices.",
        44 * H,
    ),
    FeedItem(
        "Target cuts annual outlook as shoppers pull back on discretionary spending",
        "https://demo-wire.example/business/retail/target-outlook-cut-2026-11-26/",
        "Target Corp lowered its full-year profit forecast on Wednesday and its shares fell 9%, saying "
        "customers were buying fewer clothes and home goods ahead of the holiday season.",
        22 * H,
    ),
    FeedItem(
        "ECB's Lagarde says euro zone inflation fight is not over",
        "https://demo-wire.example/markets/europe/ecb-lagarde-inflation-2026-11-27/",
        "European Central Bank President Christine Lagarde said price pressures in services remained "
        "sticky and warned against expecting rapid rate cuts in the new year.",
        5 * H,
    ),
    FeedItem(
        "Gold prices hit record high as investors seek safety",
        "https://demo-wire.example/markets/commodities/gold-record-2026-11-27/",
        "Spot gold rose 1.8% to a record on Friday as a weaker dollar and mounting geopolitical risks "
        "drove demand for the metal.",
        90 * M,
    ),
]

# The markets desk re-publishes wire stories: other URLs (with tracking parameters), edited headlines.
MARKETS_DESK = [
    FeedItem(
        "Apple shares slide after iPhone sales miss forecasts in China - Demo Wire",
        "https://demo-markets.example/news/apple-shares-slide-iphone-china?utm_source=rss&utm_medium=feed",
        "Apple Inc shares fell 4% in early trading on Friday after the company reported iPhone revenue in "
        "Greater China well below analyst estimates, citing intense competition from local brands.",
        150 * M,
    ),
    FeedItem(
        "Regional bank stocks tumble as deposit outflows speed up",
        "https://demo-markets.example/news/regional-bank-stocks-deposit-outflows?cmpid=rss",
        "Shares of U.S. regional lenders dropped sharply after two banks disclosed larger than expected "
        "deposit outflows, rekindling memories of the 2023 banking turmoil.",
        100 * M,
    ),
    FeedItem(
        "Stocks end week lower as bank worries weigh on Wall Street",
        "https://demo-markets.example/news/stocks-week-lower-bank-worries",
        "The S&P 500 fell 1.2% and the Dow Jones Industrial Average lost 450 points as financial shares "
        "led declines; Treasury yields slipped as investors bought government debt.",
        40 * M,
    ),
    FeedItem(
        "Tesla recalls 200,000 vehicles over rear-view camera fault",
        "https://demo-markets.example/news/tesla-recall-camera",
        "Tesla is recalling about 200,000 vehicles in the United States because the rear-view camera "
        "image may fail to display, the National Highway Traffic Safety Administration said.",
        8 * H,
    ),
    FeedItem(
        "Microsoft and OpenAI extend cloud partnership through 2032",
        "https://demo-markets.example/news/microsoft-openai-cloud-partnership",
        "Microsoft said on Thursday it had agreed a multi-year extension of its Azure cloud deal, sending "
        "its shares up 2% in after-hours trading.",
        30 * H,
    ),
]

FILINGS = [
    FeedItem(
        "8-K - APPLE INC (0000320193) (Filer)",
        "https://demo-filings.example/Archives/edgar/data/320193/000032019326000112-index.htm",
        "Filed: 2026-11-27 AccNo: 0000320193-26-000112 Size: 312 KB Item 2.02: Results of Operations and "
        "Financial Condition",
        3 * H,
        guid="urn:tag:demo-filings.example,2008:accession-number=0000320193-26-000112",
    ),
    FeedItem(
        "8-K - TARGET CORP (0000027419) (Filer)",
        "https://demo-filings.example/Archives/edgar/data/27419/000002741926000087-index.htm",
        "Filed: 2026-11-26 AccNo: 0000027419-26-000087 Size: 205 KB Item 7.01: Regulation FD Disclosure",
        23 * H,
        guid="urn:tag:demo-filings.example,2008:accession-number=0000027419-26-000087",
    ),
    FeedItem(
        "4 - Zhang Wei (0001899231) (Reporting)",
        "https://demo-filings.example/Archives/edgar/data/1899231/000189923126000004-index.htm",
        "Filed: 2026-11-27 AccNo: 0001899231-26-000004 Size: 9 KB",
        2 * H,
        guid="urn:tag:demo-filings.example,2008:accession-number=0001899231-26-000004",
    ),
]

MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1><p>Our feeds are unavailable while we upgrade.</p></body></html>"
)


def demo_documents(now: datetime) -> dict[str, tuple[bytes, str]]:
    """Return ``{path: (body, content type)}`` of the recorded feed set dated back from ``now``."""
    return {
        "/centralbank/press.xml": (
            rss_document(
                "Demo Central Bank: press releases", "https://demo-centralbank.example/", CENTRAL_BANK, now
            ),
            "application/rss+xml; charset=utf-8",
        ),
        "/wire/business.rss": (
            rss_document("Demo Wire: business news", "https://demo-wire.example/", NEWSWIRE, now),
            "application/rss+xml; charset=utf-8",
        ),
        "/markets/latest.rss": (
            rss_document("Demo Markets: latest", "https://demo-markets.example/", MARKETS_DESK, now),
            "application/rss+xml",
        ),
        "/filings/current.atom": (
            atom_document("Demo Filings: latest filings", "https://demo-filings.example/", FILINGS, now),
            "application/atom+xml",
        ),
        "/outage/feed.xml": (MAINTENANCE_PAGE, "text/html; charset=utf-8"),
    }


SOURCE_PATHS = {
    "demo-central-bank": ("/centralbank/press.xml", ["central bank", "us"]),
    "demo-wire": ("/wire/business.rss", ["news", "wire"]),
    "demo-markets-desk": ("/markets/latest.rss", ["news", "markets"]),
    "demo-filings": ("/filings/current.atom", ["filings"]),
    "demo-outage": ("/outage/feed.xml", ["news"]),
}


def serve_demo_feeds(server: FeedServer, now: datetime | None = None) -> list[Source]:
    """Return the demo sources after adding their recorded feeds to ``server``."""
    now = now or datetime.now(UTC).replace(second=0, microsecond=0)
    documents = demo_documents(now)
    sources = []
    for name, (path, tags) in SOURCE_PATHS.items():
        body, content_type = documents[path]
        sources.append(Source(name=name, url=server.add(path, body, content_type), tags=tags))
    return sources
