"""Writes the offline proxies' sample data (run once; the JSON it writes is committed next to it).

The data is a demo set, not market data: prices are a seeded random walk that starts near each company's real
level in mid-2023; fundamentals, earnings and macro series are rounded approximations of published figures.
Run: python proxies/data/generate_offline_data.py
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path

HERE = Path(__file__).parent
END = dt.date(2025, 6, 30)
START = dt.date(2023, 7, 3)


def business_days(start: dt.date, end: dt.date) -> list[dt.date]:
    days, d = [], start
    while d <= end:
        if d.weekday() < 5:
            days.append(d)
        d += dt.timedelta(days=1)
    return days


def prices() -> dict[str, dict[str, list]]:
    out = {}
    for symbol, p0, p1, vol, volume in (("AAPL", 192.0, 205.2, 0.016, 55e6), ("MSFT", 338.0, 497.4, 0.015, 22e6),
                                        ("NVDA", 42.0, 157.9, 0.032, 300e6), ("GOOGL", 120.0, 176.2, 0.018, 30e6)):
        days = business_days(START, END)
        rng = random.Random(symbol)
        shocks = [rng.gauss(0, vol) for _ in days]
        # a random walk bent (in log space) to end at the real mid-2025 level p1
        bend = (math.log(p1 / p0) - sum(math.log1p(s) for s in shocks)) / len(days)
        cols: dict[str, list] = {k: [] for k in ("date", "open", "high", "low", "close", "volume")}
        close = p0
        for day, shock in zip(days, shocks):
            open_ = close * (1 + rng.gauss(0, vol / 6))
            close = close * (1 + shock) * math.exp(bend)
            high = max(open_, close) * (1 + abs(rng.gauss(0, vol / 3)))
            low = min(open_, close) * (1 - abs(rng.gauss(0, vol / 3)))
            for k, v in (("date", day.isoformat()), ("open", round(open_, 2)), ("high", round(high, 2)),
                         ("low", round(low, 2)), ("close", round(close, 2)),
                         ("volume", int(volume * rng.uniform(0.6, 1.6)))):
                cols[k].append(v)
        out[symbol] = cols
    return out


COMPANIES = {
    "AAPL": {"companyName": "Apple Inc.", "industry": "Consumer Electronics", "sector": "Technology",
             "ceo": "Timothy D. Cook", "fullTimeEmployees": "164000", "website": "https://www.apple.com",
             "shares": 14.94e9, "exchange": "NASDAQ",
             "description": "Apple designs, manufactures and markets smartphones, personal computers, tablets, "
                            "wearables and accessories, and sells a variety of related services.",
             "income": [("2024-09-28", "2024", 391.035e9, 180.683e9, 123.216e9, 93.736e9, 6.11),
                        ("2023-09-30", "2023", 383.285e9, 169.148e9, 114.301e9, 96.995e9, 6.16)],
             "balance": [("2024-09-28", "2024", 29.943e9, 364.980e9, 308.030e9, 56.950e9, 106.629e9),
                         ("2023-09-30", "2023", 29.965e9, 352.583e9, 290.437e9, 62.146e9, 111.088e9)],
             "earnings": [("2025-05-01", 1.65, 1.63, 95.36e9, 94.54e9), ("2025-01-30", 2.40, 2.35, 124.30e9, 124.12e9),
                          ("2024-10-31", 1.64, 1.60, 94.93e9, 94.58e9), ("2024-08-01", 1.40, 1.35, 85.78e9, 84.53e9)]},
    "MSFT": {"companyName": "Microsoft Corporation", "industry": "Software - Infrastructure", "sector": "Technology",
             "ceo": "Satya Nadella", "fullTimeEmployees": "228000", "website": "https://www.microsoft.com",
             "shares": 7.43e9, "exchange": "NASDAQ",
             "description": "Microsoft develops and supports software, services, devices and cloud solutions, "
                            "including Azure, Microsoft 365, Windows, LinkedIn and Xbox.",
             "income": [("2024-06-30", "2024", 245.122e9, 171.008e9, 109.433e9, 88.136e9, 11.86),
                        ("2023-06-30", "2023", 211.915e9, 146.052e9, 88.523e9, 72.361e9, 9.72)],
             "balance": [("2024-06-30", "2024", 18.315e9, 512.163e9, 243.686e9, 268.477e9, 67.127e9),
                         ("2023-06-30", "2023", 34.704e9, 411.976e9, 205.753e9, 206.223e9, 59.965e9)],
             "earnings": [("2025-04-30", 3.46, 3.22, 70.07e9, 68.44e9), ("2025-01-29", 3.23, 3.11, 69.63e9, 68.87e9),
                          ("2024-10-30", 3.30, 3.10, 65.59e9, 64.51e9), ("2024-07-30", 2.95, 2.93, 64.73e9, 64.39e9)]},
    "NVDA": {"companyName": "NVIDIA Corporation", "industry": "Semiconductors", "sector": "Technology",
             "ceo": "Jen-Hsun Huang", "fullTimeEmployees": "36000", "website": "https://www.nvidia.com",
             "shares": 24.4e9, "exchange": "NASDAQ",
             "description": "NVIDIA designs graphics processors, data-center accelerators, networking and software "
                            "for gaming, AI, visualization and automotive markets.",
             "income": [("2025-01-26", "2025", 130.497e9, 97.858e9, 81.453e9, 72.880e9, 2.97),
                        ("2024-01-28", "2024", 60.922e9, 44.301e9, 32.972e9, 29.760e9, 1.21)],
             "balance": [("2025-01-26", "2025", 8.589e9, 111.601e9, 32.274e9, 79.327e9, 10.270e9),
                         ("2024-01-28", "2024", 7.280e9, 65.728e9, 22.750e9, 42.978e9, 11.056e9)],
             "earnings": [("2025-05-28", 0.96, 0.93, 44.06e9, 43.28e9), ("2025-02-26", 0.89, 0.84, 39.33e9, 38.05e9),
                          ("2024-11-20", 0.81, 0.75, 35.08e9, 33.16e9), ("2024-08-28", 0.68, 0.64, 30.04e9, 28.70e9)]},
    "GOOGL": {"companyName": "Alphabet Inc.", "industry": "Internet Content & Information",
              "sector": "Communication Services", "ceo": "Sundar Pichai", "fullTimeEmployees": "183000",
              "website": "https://abc.xyz", "shares": 12.1e9, "exchange": "NASDAQ",
              "description": "Alphabet owns Google: search, advertising, YouTube, Android, Google Cloud and "
                             "other bets.",
              "income": [("2024-12-31", "2024", 350.018e9, 203.712e9, 112.390e9, 100.118e9, 8.13),
                         ("2023-12-31", "2023", 307.394e9, 174.062e9, 84.293e9, 73.795e9, 5.84)],
              "balance": [("2024-12-31", "2024", 23.466e9, 450.256e9, 125.172e9, 325.084e9, 25.461e9),
                          ("2023-12-31", "2023", 24.048e9, 402.392e9, 119.013e9, 283.379e9, 28.504e9)],
              "earnings": [("2025-04-24", 2.81, 2.01, 90.23e9, 89.12e9), ("2025-02-04", 2.15, 2.12, 96.47e9, 96.67e9),
                           ("2024-10-29", 2.12, 1.85, 88.27e9, 86.30e9), ("2024-07-23", 1.89, 1.84, 84.74e9, 84.19e9)]},
}


def company(symbol: str, info: dict, cols: dict[str, list]) -> dict:
    last, prev = cols["close"][-1], cols["close"][-2]
    year = cols["close"][-252:]
    quote = {"symbol": symbol, "name": info["companyName"], "price": last,
             "changePercentage": round((last - prev) / prev * 100, 4), "change": round(last - prev, 2),
             "volume": cols["volume"][-1], "dayLow": cols["low"][-1], "dayHigh": cols["high"][-1],
             "yearHigh": max(year), "yearLow": min(year), "marketCap": int(last * info["shares"]),
             "priceAvg50": round(sum(cols["close"][-50:]) / 50, 2),
             "priceAvg200": round(sum(cols["close"][-200:]) / 200, 2), "exchange": info["exchange"],
             "open": cols["open"][-1], "previousClose": prev,
             "timestamp": int(dt.datetime(2025, 6, 30, 20).timestamp())}
    profile = {"symbol": symbol, "companyName": info["companyName"], "price": last,
               "marketCap": quote["marketCap"], "currency": "USD", "exchange": info["exchange"],
               "exchangeFullName": "NASDAQ Global Select", "industry": info["industry"], "sector": info["sector"],
               "ceo": info["ceo"], "fullTimeEmployees": info["fullTimeEmployees"], "website": info["website"],
               "description": info["description"], "country": "US"}
    income = [{"date": d, "symbol": symbol, "reportedCurrency": "USD", "fiscalYear": fy, "period": "FY",
               "revenue": int(rev), "grossProfit": int(gp), "operatingIncome": int(oi), "netIncome": int(ni),
               "eps": eps} for d, fy, rev, gp, oi, ni, eps in info["income"]]
    balance = [{"date": d, "symbol": symbol, "reportedCurrency": "USD", "fiscalYear": fy, "period": "FY",
                "cashAndCashEquivalents": int(cash), "totalAssets": int(assets), "totalLiabilities": int(liab),
                "totalStockholdersEquity": int(eq), "totalDebt": int(debt), "netDebt": int(debt - cash)}
               for d, fy, cash, assets, liab, eq, debt in info["balance"]]
    earnings = [{"symbol": symbol, "date": d, "epsActual": a, "epsEstimated": e, "revenueActual": int(ra),
                 "revenueEstimated": int(re), "lastUpdated": d} for d, a, e, ra, re in info["earnings"]]
    return {"quote": quote, "profile": profile, "income": income, "balance": balance, "earnings": earnings}


def monthly(start: str, values: list[float]) -> list[list]:
    y, m = int(start[:4]), int(start[5:7])
    out = []
    for v in values:
        out.append([f"{y:04d}-{m:02d}-01", v])
        m += 1
        if m == 13:
            y, m = y + 1, 1
    return out


def fred() -> dict:
    gdp = [21001.6, 21289.3, 21505.0, 21694.5, 21481.4, 19477.4, 21138.6, 21477.6, 22038.2, 22740.9, 23202.3,
           24002.8, 24386.7, 25039.4, 25543.8, 25994.6, 26408.4, 26813.6, 27610.1, 28163.8, 28624.1, 29016.7,
           29374.9, 29723.9, 29962.0]
    gdp_rows = []
    for i, v in enumerate(gdp):
        y, q = 2019 + i // 4, i % 4
        gdp_rows.append([f"{y}-{q * 3 + 1:02d}-01", v])
    unrate = [4.0, 3.8, 3.8, 3.7, 3.6, 3.6, 3.7, 3.6, 3.5, 3.6, 3.6, 3.6, 3.5, 3.5, 4.4, 14.8, 13.2, 11.0, 10.2, 8.4,
              7.8, 6.8, 6.7, 6.7, 6.4, 6.2, 6.1, 6.1, 5.8, 5.9, 5.4, 5.1, 4.7, 4.5, 4.2, 3.9, 4.0, 3.8, 3.6, 3.7, 3.6,
              3.6, 3.5, 3.6, 3.5, 3.6, 3.6, 3.5, 3.4, 3.6, 3.5, 3.4, 3.6, 3.6, 3.5, 3.8, 3.8, 3.9, 3.7, 3.7, 3.7, 3.9,
              3.9, 3.9, 4.0, 4.1, 4.2, 4.2, 4.1, 4.1, 4.2, 4.1, 4.0, 4.1, 4.2, 4.2, 4.2]
    fedfunds = [2.40, 2.40, 2.41, 2.42, 2.39, 2.38, 2.40, 2.13, 2.04, 1.83, 1.55, 1.55, 1.55, 1.58, 0.65, 0.05, 0.05,
                0.08, 0.09, 0.10, 0.09, 0.09, 0.09, 0.09, 0.09, 0.08, 0.07, 0.07, 0.06, 0.08, 0.10, 0.09, 0.08, 0.08,
                0.08, 0.08, 0.08, 0.08, 0.20, 0.33, 0.77, 1.21, 1.68, 2.33, 2.56, 3.08, 3.78, 4.10, 4.33, 4.57, 4.65,
                4.83, 5.06, 5.08, 5.12, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33, 5.33,
                5.13, 4.83, 4.64, 4.48, 4.33, 4.33, 4.33, 4.33, 4.33]
    rates = {2019: 0.019, 2020: 0.013, 2021: 0.068, 2022: 0.066, 2023: 0.034, 2024: 0.029, 2025: 0.025}
    cpi, level = [], 251.7
    for i in range(77):
        cpi.append(round(level, 3))
        level *= (1 + rates[2019 + i // 12]) ** (1 / 12)
    meta = {
        "GDP": ("Gross Domestic Product", "Quarterly", "Billions of Dollars", "Seasonally Adjusted Annual Rate", 93),
        "UNRATE": ("Unemployment Rate", "Monthly", "Percent", "Seasonally Adjusted", 94),
        "FEDFUNDS": ("Federal Funds Effective Rate", "Monthly", "Percent", "Not Seasonally Adjusted", 97),
        "CPIAUCSL": ("Consumer Price Index for All Urban Consumers: All Items in U.S. City Average", "Monthly",
                     "Index 1982-1984=100", "Seasonally Adjusted", 95),
    }
    data = {"GDP": gdp_rows, "UNRATE": monthly("2019-01", unrate), "FEDFUNDS": monthly("2019-01", fedfunds),
            "CPIAUCSL": monthly("2019-01", cpi)}
    series = {}
    for sid, rows in data.items():
        title, freq, units, sa, pop = meta[sid]
        series[sid] = {"info": {"id": sid, "title": title, "frequency": freq, "units": units,
                                "seasonal_adjustment": sa, "observation_start": rows[0][0],
                                "observation_end": rows[-1][0], "last_updated": "2025-06-30 07:45:00-05",
                                "popularity": pop},
                       "observations": rows}
    return series


ARTICLES = [
    ("Apple earnings beat estimates as services revenue hits a record", "2025-05-02", "AAPL",
     "Apple reported fiscal second-quarter earnings of $1.65 a share on revenue of $95.4 billion, ahead of "
     "estimates. Services revenue reached a record, while iPhone sales were flat. The company guided to "
     "low- to mid-single-digit revenue growth for the June quarter and flagged tariff costs of about $900 million."),
    ("Apple outlook 2025: analysts weigh tariffs against AI upgrade cycle", "2025-06-10", "AAPL",
     "Analysts expect Apple's earnings outlook for 2025 to hinge on tariff exposure in its supply chain and on "
     "whether Apple Intelligence features drive an iPhone upgrade cycle. Consensus expects EPS near $7.1 for "
     "fiscal 2025."),
    ("Microsoft shares jump after Azure growth accelerates", "2025-05-01", "MSFT",
     "Microsoft reported quarterly revenue of $70.1 billion, with Azure cloud revenue up 33 percent, "
     "including about 16 points from AI services. Capital spending on data centers keeps rising."),
    ("NVIDIA data-center revenue climbs despite export curbs", "2025-05-29", "NVDA",
     "NVIDIA posted revenue of $44.1 billion for its fiscal first quarter, led by data-center sales of AI "
     "accelerators, and took a charge tied to export restrictions on chips sold to China."),
    ("Fed holds rates steady, signals patience on cuts", "2025-06-18", "FED",
     "The Federal Reserve kept the federal funds target range at 4.25 to 4.50 percent and said it will wait for "
     "more clarity on inflation and tariffs before cutting interest rates."),
    ("US economy: GDP growth slows in first quarter as imports surge", "2025-04-30", "GDP",
     "US gross domestic product grew more slowly in the first quarter of 2025 as companies rushed imports ahead of "
     "tariffs, a drag on the GDP figures; consumer spending slowed but remained positive."),
    ("Unemployment rate holds at 4.2 percent as hiring cools", "2025-06-06", "UNRATE",
     "The US unemployment rate was unchanged at 4.2 percent in May while payrolls rose modestly, pointing to a "
     "labor market that is cooling but not weakening sharply."),
    ("Inflation eases in May; core CPI rises 0.1 percent", "2025-06-11", "CPI",
     "Consumer prices rose less than expected in May, with core CPI inflation up 0.1 percent on the month; "
     "economists expect tariffs to push goods prices higher over the summer."),
    ("Alphabet earnings top forecasts on search and cloud strength", "2025-04-25", "GOOGL",
     "Alphabet reported earnings of $2.81 a share, well above estimates, helped by a gain on investments, "
     "and said it will keep capital spending near $75 billion this year."),
    ("Tech megacaps lead the market as AI spending grows", "2025-06-27", "MKT",
     "Shares of Microsoft, NVIDIA and Apple led US stock indexes higher in June as investors bet that AI "
     "spending will keep growing; the S&P 500 reached a record close."),
]


def exa() -> list[dict]:
    out = []
    for i, (title, date, tag, text) in enumerate(ARTICLES):
        slug = "-".join(title.lower().replace(",", "").replace(":", "").replace(";", "").split()[:6])
        out.append({"id": f"offline-{i}", "title": title, "url": f"https://news.example.com/{date[:7]}/{slug}",
                    "publishedDate": f"{date}T12:00:00.000Z", "author": "lllm sample newsroom", "tag": tag,
                    "text": text + " (Offline sample article bundled with lllm.)"})
    return out


def main() -> None:
    px = prices()
    (HERE / "fmp_prices.json").write_text(json.dumps(px, separators=(",", ":")))
    comps = {s: company(s, info, px[s]) for s, info in COMPANIES.items()}
    (HERE / "fmp_companies.json").write_text(json.dumps(comps, indent=1))
    (HERE / "fred_series.json").write_text(json.dumps(fred(), indent=1))
    (HERE / "exa_articles.json").write_text(json.dumps(exa(), indent=1))


if __name__ == "__main__":
    main()
