"""Synthetic CRM exports with known truths: the bundled sample data and the benchmark data.

``crm-potential generate --customers N --seed S --out DIR`` writes ``customers``, ``orders``,
``interactions`` and ``campaigns`` files that follow ``../shared/data-contract.md``, plus
``_truth.parquet`` (not part of the contract; the pipeline ignores it) holding each customer's latent
values so that tests can check that the models recover them. Same seed, same files. Everything is
vectorised with NumPy and written by DuckDB: a million customers take about a minute.

The generative story (time unit: days; the history ends at ``end_date``)
-----------------------------------------------------------------------
1. **Customers.** ``created_at`` is uniform over the ``history_days`` before ``end_date``. Each customer
   gets demographics (birth date, gender), geography (country, region, city, postal code), an
   acquisition channel, marketing consent (70 %), a preferred channel and, for 10 %, a company.
2. **Purchase process: BG/NBD** (Fader, Hardie & Lee 2005). Within acquisition channel ``c`` the purchase
   rate is ``lambda ~ Gamma(shape=r, rate=alpha / m_c)`` with ``m_c`` in ``CHANNEL_RATE_MULTIPLIER``
   (referral customers buy most often, social least), and the dropout probability is
   ``p ~ Beta(a, b * k_c)`` with ``k_c`` in ``CHANNEL_LOYALTY_MULTIPLIER`` (a larger ``k_c`` means fewer
   dropouts). ``FIRST_PURCHASE_SHARE`` of customers make a first purchase ``Exp(mean=7 days)`` after
   sign-up; the rest stay leads. After every repeat purchase the customer drops out with probability
   ``p`` (as in BG/NBD, not after the first one); while alive, repeat purchases arrive as a Poisson
   process with rate ``lambda``. A customer who dropped out did so at their last purchase (``death_at``
   in the truth file).
   ``simulate_btyd`` is this step alone, exposed so tests can simulate from known parameters.
3. **Spend: Gamma-Gamma.** Each customer has ``nu ~ Gamma(shape=q, rate=gamma * s_i)`` and every completed
   order's amount is ``Gamma(shape=p_spend, rate=nu)``; the customer's mean spend is ``p_spend / nu``.
   ``s_i`` (``spend_shift`` in the truth file) scales spend by country (``COUNTRY_SPEND_MULTIPLIER``) and
   age band (customers aged 35-64 spend 20 % more).
4. **Orders.** Completed orders are exactly the purchases of step 2. On top of them, a share of extra
   orders are ``cancelled`` (4 %) or ``refunded`` (3 %); these are not purchases. Each customer has a
   favourite product category (60 % of their orders), a second one (25 %), and the rest is uniform.
5. **Interactions** (about 20 per customer at default settings):
   web visits at ``WEB_VISITS_PER_PURCHASE * lambda`` per day while alive and a tenth of that after
   dropping out; e-mail campaigns every ``CAMPAIGN_EVERY_DAYS`` days to consenting customers, opened with
   probability 0.30 while alive and 0.06 after dropping out, clicked in 30 % of opens, and answered
   (``campaign_response``) in 35 % of clicks; support tickets at 0.6 a year (85 % resolved) and surveys at
   0.5 a year (satisfaction around 4.1 of 5, NPS around 8). **Dropout is announced**: 45 % of customers
   who drop out file one or two complaints in the 40 days before their last purchase, only 35 % of
   those are resolved, and their surveys in the 90 days before dropout score around 2.6 (NPS around 4).
   Everyone else files complaints at 0.1 a year (80 % resolved).
6. **Dirt.** 3 % of customers have an older duplicate record (earlier ``updated_at``, an older e-mail
   and city); 5 % of e-mails have mixed case and surrounding spaces; phone numbers come in several
   formats; 5 % of country codes are lower case with spaces.

Default population parameters (per day) are in ``TRUE_PARAMS``: the mean customer buys about 7 times a
year and drops out after about 10 purchases.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SECONDS_PER_DAY = 86_400.0

TRUE_PARAMS = {
    # BG/NBD (per day): lambda ~ Gamma(r, alpha), p ~ Beta(a, b)
    "r": 0.9,
    "alpha": 30.0,
    "a": 0.9,
    "b": 10.0,
    # Gamma-Gamma: amount ~ Gamma(p, nu), nu ~ Gamma(q, gamma)
    "p": 6.0,
    "q": 4.0,
    "gamma": 30.0,
}

CHANNELS = np.array(["referral", "search", "social", "store", "partner", "email"])
CHANNEL_SHARE = np.array([0.12, 0.34, 0.20, 0.16, 0.08, 0.10])
CHANNEL_RATE_MULTIPLIER = np.array([1.4, 1.0, 0.7, 1.2, 0.9, 1.0])
CHANNEL_LOYALTY_MULTIPLIER = np.array([1.6, 1.0, 0.6, 1.3, 1.0, 0.9])

COUNTRIES = np.array(["DE", "FR", "GB", "NL", "ES", "IT", "US"])
COUNTRY_SHARE = np.array([0.26, 0.17, 0.16, 0.08, 0.10, 0.10, 0.13])
COUNTRY_SPEND_MULTIPLIER = np.array([1.0, 1.0, 0.8, 1.0, 1.25, 1.2, 0.75])  # divides the rate -> >1 spends less
REGIONS_PER_COUNTRY = 5
CITIES_PER_REGION = 4

CATEGORIES = np.array(
    ["electronics", "home", "fashion", "beauty", "sports", "books", "toys", "grocery"]
)
CATEGORY_SHARE = np.array([0.16, 0.16, 0.18, 0.1, 0.1, 0.1, 0.08, 0.12])

FIRST_PURCHASE_SHARE = 0.85
CANCELLED_SHARE = 0.04
REFUNDED_SHARE = 0.03
WEB_VISITS_PER_PURCHASE = 1.5
CAMPAIGN_EVERY_DAYS = 14
DUPLICATE_SHARE = 0.03
DEFAULT_END_DATE = date(2026, 9, 30)
DEFAULT_HISTORY_DAYS = 3 * 365


@dataclass
class BtydSample:
    """Output of ``simulate_btyd``: repeat-purchase times per customer, in days from the first purchase."""

    customer_index: np.ndarray  # one entry per repeat purchase
    purchase_day: np.ndarray  # days after the first purchase (0 < t <= window)
    n_repeat: np.ndarray  # per customer
    death_day: np.ndarray  # per customer: day of dropout (last purchase), or +inf if alive at the end


def simulate_btyd(
    rng: np.random.Generator,
    lam: np.ndarray,
    p: np.ndarray,
    window_days: np.ndarray,
) -> BtydSample:
    """Repeat purchases of a BG/NBD process for customers with known ``lam`` and ``p``.

    Customer ``i`` made their first purchase at day 0 and is observed for ``window_days[i]`` days.
    After every repeat purchase they drop out with probability ``p[i]``; alive, they buy at Poisson rate
    ``lam[i]``. Exact and vectorised: the number of purchases they would make if immortal is
    ``Poisson(lam * window)``, their arrival times are sorted uniforms on the window, and dropping out
    after ``K ~ Geometric(p)`` (1, 2, ...) repeat purchases keeps the first ``K`` of them. The first ``k``
    of ``n`` sorted uniforms are ``S_j / (S_k + G)`` with ``S`` the cumulative sum of ``k`` unit
    exponentials and ``G ~ Gamma(n + 1 - k)``, so only kept purchases are ever drawn.
    """
    n = lam.shape[0]
    window_days = np.broadcast_to(np.asarray(window_days, dtype=float), (n,))
    n_immortal = rng.poisson(lam * window_days)
    k_alive = rng.geometric(p)  # repeat purchases made before dropping out (>= 1, as in BG/NBD)
    n_repeat = np.minimum(n_immortal, k_alive)
    total = int(n_repeat.sum())
    owner = np.repeat(np.arange(n), n_repeat)
    gaps = rng.standard_exponential(total)
    cum = np.cumsum(gaps)
    starts = np.cumsum(n_repeat) - n_repeat  # first index of each customer's block
    offset = np.repeat(np.concatenate(([0.0], cum))[starts], n_repeat)
    s_j = cum - offset  # within-customer cumulative sums
    block_last = np.zeros(n)
    has = n_repeat > 0
    block_last[has] = s_j[starts[has] + n_repeat[has] - 1]
    rest = np.zeros(n)
    shape_rest = (n_immortal + 1 - n_repeat)[has]
    rest[has] = rng.gamma(shape_rest.astype(float))
    denom = np.repeat((block_last + rest), n_repeat)
    purchase_day = s_j / denom * np.repeat(window_days, n_repeat)
    dead = k_alive < n_immortal
    death_day = np.full(n, np.inf)
    last = np.zeros(n)
    last[has] = purchase_day[starts[has] + n_repeat[has] - 1]
    death_day[dead] = last[dead]
    return BtydSample(owner, purchase_day, n_repeat, death_day)


@dataclass
class GeneratorConfig:
    customers: int = 5000
    seed: int = 42
    end_date: date = DEFAULT_END_DATE
    history_days: int = DEFAULT_HISTORY_DAYS
    file_format: str = "csv"
    params: dict = field(default_factory=lambda: dict(TRUE_PARAMS))


def _seconds_before_end(day_offsets: np.ndarray) -> np.ndarray:
    """Signed seconds (int64, <= 0) relative to the end of the history, to the second."""
    return -np.round(np.asarray(day_offsets) * SECONDS_PER_DAY).astype(np.int64)


def _choice(rng: np.random.Generator, n: int, share: np.ndarray) -> np.ndarray:
    return rng.choice(len(share), size=n, p=share / share.sum())


SHARD_CUSTOMERS = 1_000_000  # above this, customers are simulated in shards of this size (memory, not speed)


def generate(config: GeneratorConfig, out: Path, progress=print, shard_customers: int = SHARD_CUSTOMERS) -> dict[str, int]:
    """Write the sample files to ``out``; returns row counts per file.

    Up to ``shard_customers`` customers are simulated in one piece (about 8.5 GB of memory at a million).
    Larger populations are simulated in shards of that size, each from its own stream of the seed
    (``default_rng([seed, shard])``) with its ids shifted past the previous shard's, and the shards' files
    are then concatenated: the same story, in bounded memory, so ten million customers fit on a laptop.
    """
    t0 = time.perf_counter()
    n = int(config.customers)
    if n < 1:
        raise ValueError("--customers must be at least 1")
    end = datetime.combine(config.end_date, datetime.min.time()) + timedelta(days=1) - timedelta(seconds=1)
    out.mkdir(parents=True, exist_ok=True)
    if n <= shard_customers:
        tables = _simulate(config, n, np.random.default_rng(config.seed))
        counts = _write(out, config, end, *tables)
    else:
        counts = _generate_sharded(config, out, end, shard_customers, progress)
    progress(
        f"generated {n:,} customers, {counts['orders']:,} orders, {counts['interactions']:,} interactions "
        f"in {time.perf_counter() - t0:.1f}s -> {out}"
    )
    return counts


def _generate_sharded(config: GeneratorConfig, out: Path, end: datetime, shard_customers: int, progress) -> dict[str, int]:
    n = int(config.customers)
    work = out / ".shards"
    shutil.rmtree(work, ignore_errors=True)
    shard_config = GeneratorConfig(**{**config.__dict__, "file_format": "parquet"})
    offsets = {"cid": 0, "oid": 0, "iid": 0}
    counts = {"customers": 0, "orders": 0, "interactions": 0}
    starts = range(0, n, shard_customers)
    for shard, start in enumerate(starts):
        size = min(shard_customers, n - start)
        customers, orders, interactions, campaigns, truth = _simulate(
            config, size, np.random.default_rng([config.seed, shard]))
        shifted = [_shift(customers, "cid", offsets["cid"]), _shift(orders, "oid", offsets["oid"], "cid", offsets["cid"]),
                   _shift(interactions, "iid", offsets["iid"], "cid", offsets["cid"]), campaigns,
                   _shift(truth, "cid", offsets["cid"])]
        offsets = {"cid": offsets["cid"] + size, "oid": offsets["oid"] + orders.num_rows,
                   "iid": offsets["iid"] + interactions.num_rows}
        (work / f"{shard:04d}").mkdir(parents=True)
        written = _write(work / f"{shard:04d}", shard_config, end, *shifted)
        for name in ("customers", "orders", "interactions"):  # counted as written, not re-read
            counts[name] += written[name]
        counts.setdefault("campaigns", written["campaigns"])  # one calendar: the first shard's
        del customers, orders, interactions, truth, shifted
        progress(f"  shard {shard + 1}/{len(starts)}: customers {start + 1:,} to {start + size:,}")
    con = duckdb.connect()
    opts = "(FORMAT csv, HEADER true)" if config.file_format == "csv" else "(FORMAT parquet, COMPRESSION zstd)"
    for name in ("customers", "orders", "interactions", "_truth"):
        files = [str(f) for f in sorted(work.glob(f"*/{name}.parquet"))]
        target = out / (f"{name}.parquet" if name == "_truth" else f"{name}.{config.file_format}")
        con.execute(f"COPY (SELECT * FROM read_parquet(?)) TO ? {opts if name != '_truth' else '(FORMAT parquet)'}",
                    [files, str(target)])
    # one campaign calendar: every shard's campaign ids are the same; the first shard's table is the one kept
    first = sorted(work.glob("*/campaigns.parquet"))[0]
    con.execute(f"COPY (SELECT * FROM read_parquet(?)) TO ? {opts}", [str(first), str(out / f"campaigns.{config.file_format}")])
    con.close()
    shutil.rmtree(work)
    return counts


def _shift(table: pa.Table, *columns_and_offsets) -> pa.Table:
    """``table`` with integer id columns moved up by offsets: ``_shift(t, "oid", 10, "cid", 5)``."""
    for column, offset in zip(columns_and_offsets[::2], columns_and_offsets[1::2]):
        i = table.schema.get_field_index(column)
        table = table.set_column(i, column, pc.add(table[column], pa.scalar(offset, table.schema.field(i).type)))
    return table


def _simulate(config: GeneratorConfig, n: int, rng: np.random.Generator):
    """The generative story for ``n`` customers: (customers, orders, interactions, campaigns, truth) tables
    with ids counted from 0 (``_write`` turns them into the contract's columns)."""
    prm = config.params
    H = float(config.history_days)

    # 1. customers ------------------------------------------------------------------------
    created_back = rng.uniform(0, H, n)  # days before the end
    channel = _choice(rng, n, CHANNEL_SHARE)
    country = _choice(rng, n, COUNTRY_SHARE)
    age = rng.integers(18, 81, n)
    age_shift = np.where((age >= 35) & (age < 65), 1 / 1.2, 1.0)
    spend_shift = COUNTRY_SPEND_MULTIPLIER[country] * age_shift  # multiplies the gamma (rate) parameter
    consent = rng.random(n) < 0.70

    # 2. purchase process -----------------------------------------------------------------
    lam = rng.gamma(prm["r"], 1.0 / (prm["alpha"] / CHANNEL_RATE_MULTIPLIER[channel]))
    p_drop = rng.beta(prm["a"], prm["b"] * CHANNEL_LOYALTY_MULTIPLIER[channel])
    buys = rng.random(n) < FIRST_PURCHASE_SHARE
    first_delay = rng.exponential(7.0, n)
    buys &= first_delay < created_back
    first_back = created_back - first_delay  # days before the end of the first purchase
    window = np.where(buys, first_back, 0.0)
    sample = simulate_btyd(rng, lam, p_drop, window)
    sample.n_repeat[~buys] = 0
    death_back = np.where(np.isfinite(sample.death_day), first_back - sample.death_day, -np.inf)
    dropped = buys & np.isfinite(sample.death_day)

    # 3. spend ----------------------------------------------------------------------------
    nu = rng.gamma(prm["q"], 1.0 / (prm["gamma"] * spend_shift))

    # 4. orders ---------------------------------------------------------------------------
    buyer_idx = np.flatnonzero(buys)
    rep_owner = sample.customer_index
    keep = buys[rep_owner]
    rep_owner = rep_owner[keep]
    rep_back = first_back[rep_owner] - sample.purchase_day[keep]
    o_owner = np.concatenate([buyer_idx, rep_owner])
    o_back = np.concatenate([first_back[buyer_idx], rep_back])
    n_completed = o_owner.size
    n_extra = rng.binomial(n_completed, CANCELLED_SHARE + REFUNDED_SHARE)
    x_owner = o_owner[rng.integers(0, n_completed, n_extra)] if n_completed else np.zeros(0, int)
    x_back = np.minimum(
        rng.uniform(0, H, n_extra), created_back[x_owner] - rng.uniform(0, 1, n_extra)
    ).clip(min=0)
    x_status = np.where(rng.random(n_extra) < CANCELLED_SHARE / (CANCELLED_SHARE + REFUNDED_SHARE), 1, 2)
    all_owner = np.concatenate([o_owner, x_owner])
    all_back = np.concatenate([o_back, x_back])
    status = np.concatenate([np.zeros(n_completed, np.int8), x_status.astype(np.int8)])
    amount = rng.gamma(prm["p"], 1.0 / nu[all_owner])
    fav = _choice(rng, n, CATEGORY_SHARE)
    second = (fav + rng.integers(1, len(CATEGORIES), n)) % len(CATEGORIES)
    u = rng.random(all_owner.size)
    category = np.where(
        u < 0.60, fav[all_owner], np.where(u < 0.85, second[all_owner], rng.integers(0, len(CATEGORIES), all_owner.size))
    )
    quantity = 1 + rng.poisson(0.4, all_owner.size)
    order_perm = np.argsort(-all_back, kind="stable")  # chronological ids
    orders = pa.table(
        {
            "oid": np.arange(all_owner.size, dtype=np.int64),
            "cid": all_owner[order_perm].astype(np.int64),
            "ts": _seconds_before_end(all_back[order_perm]),
            "amount": np.round(amount[order_perm], 2),
            "status": status[order_perm],
            "category": category[order_perm].astype(np.int8),
            "quantity": quantity[order_perm].astype(np.int16),
            "sales_channel": rng.choice(4, all_owner.size, p=[0.6, 0.25, 0.08, 0.07]).astype(np.int8),
        }
    )

    # 5. interactions ---------------------------------------------------------------------
    alive_until_back = np.where(dropped, death_back, 0.0)  # alive from first purchase to this
    start_back = np.where(buys, first_back, created_back)
    alive_len = np.where(buys, np.maximum(start_back - alive_until_back, 0), 0.0)
    dead_len = np.where(dropped, np.maximum(death_back, 0), 0.0)
    parts_owner, parts_back, parts_type, parts_channel, parts_resolved, parts_sat, parts_nps, parts_campaign = (
        [], [], [], [], [], [], [], []
    )
    parts_sentiment = []

    def add(owner, back, itype, channel_code, resolved=None, sat=None, nps=None, campaign=None, sentiment=None):
        m = owner.size
        parts_owner.append(owner)
        parts_back.append(back)
        parts_type.append(np.full(m, itype, np.int8))
        parts_channel.append(np.broadcast_to(np.asarray(channel_code, np.int8), (m,)).copy())
        parts_resolved.append(np.full(m, -1, np.int8) if resolved is None else resolved.astype(np.int8))
        parts_sat.append(np.full(m, -1, np.int8) if sat is None else sat.astype(np.int8))
        parts_nps.append(np.full(m, -1, np.int8) if nps is None else nps.astype(np.int8))
        parts_campaign.append(np.full(m, -1, np.int32) if campaign is None else campaign.astype(np.int32))
        parts_sentiment.append(np.full(m, np.nan) if sentiment is None else np.clip(sentiment, -1, 1))

    def events(rate_alive, rate_dead):
        """Poisson events while alive (first purchase -> dropout) and after dropout."""
        k1 = rng.poisson(rate_alive * alive_len)
        k2 = rng.poisson(rate_dead * dead_len)
        o1 = np.repeat(np.arange(n), k1)
        b1 = start_back[o1] - rng.random(o1.size) * alive_len[o1]
        o2 = np.repeat(np.arange(n), k2)
        b2 = death_back[o2] * rng.random(o2.size) if o2.size else np.zeros(0)
        return np.concatenate([o1, o2]), np.concatenate([b1, b2]), np.concatenate(
            [np.ones(o1.size, bool), np.zeros(o2.size, bool)]
        )

    # web visits
    o, b, _ = events(WEB_VISITS_PER_PURCHASE * lam, 0.1 * WEB_VISITS_PER_PURCHASE * lam)
    add(o, b, 5, 3)
    # e-mail campaigns: opens, clicks, responses (consenting customers only)
    per_day = 1.0 / CAMPAIGN_EVERY_DAYS
    o, b, alive = events(np.where(consent, 0.30 * per_day, 0.0), np.where(consent, 0.06 * per_day, 0.0))
    campaign_of = np.floor((H - b) / CAMPAIGN_EVERY_DAYS).astype(np.int64)  # campaign sent before the open
    b = np.minimum(b, H - campaign_of * CAMPAIGN_EVERY_DAYS - 0.01)
    add(o, b, 3, 0, campaign=campaign_of)
    clicked = rng.random(o.size) < 0.30
    oc, bc, cc = o[clicked], np.maximum(b[clicked] - rng.uniform(0, 0.05, clicked.sum()), 0), campaign_of[clicked]
    add(oc, bc, 4, 0, campaign=cc)
    resp = rng.random(oc.size) < 0.35
    add(oc[resp], np.maximum(bc[resp] - rng.uniform(0, 0.2, resp.sum()), 0), 2, 3, campaign=cc[resp])
    # support tickets
    o, b, _ = events(np.full(n, 0.6 / 365), np.full(n, 0.6 / 365))
    add(o, b, 0, rng.choice([1, 2, 0], o.size, p=[0.5, 0.3, 0.2]), resolved=rng.random(o.size) < 0.85)
    # background complaints
    o, b, _ = events(np.full(n, 0.1 / 365), np.full(n, 0.1 / 365))
    add(o, b, 1, rng.choice([1, 0, 2], o.size, p=[0.5, 0.3, 0.2]), resolved=rng.random(o.size) < 0.80,
        sentiment=rng.normal(-0.4, 0.3, o.size))
    # complaints that announce dropout
    warn = dropped & (rng.random(n) < 0.45)
    k = np.where(warn, 1 + (rng.random(n) < 0.4), 0)
    o = np.repeat(np.arange(n), k)
    b = (death_back[o] + rng.uniform(0, 40, o.size)).clip(max=start_back[o])
    add(o, b, 1, rng.choice([1, 0, 2], o.size, p=[0.5, 0.3, 0.2]), resolved=rng.random(o.size) < 0.35,
        sentiment=rng.normal(-0.6, 0.25, o.size))
    # surveys
    o, b, _ = events(np.full(n, 0.5 / 365), np.full(n, 0.5 / 365))
    unhappy = dropped[o] & (b - death_back[o] < 90) & (b >= death_back[o])
    sat = np.clip(np.round(rng.normal(np.where(unhappy, 2.6, 4.1), 0.8)), 1, 5)
    nps = np.clip(np.round(rng.normal(np.where(unhappy, 4.0, 8.0), 1.6)), 0, 10)
    add(o, b, 6, 0, sat=sat, nps=nps, sentiment=(sat - 3) / 2 + rng.normal(0, 0.15, o.size))

    i_owner = np.concatenate(parts_owner)
    i_back = np.concatenate(parts_back)
    i_perm = np.argsort(-i_back, kind="stable")
    interactions = pa.table(
        {
            "iid": np.arange(i_owner.size, dtype=np.int64),
            "cid": i_owner[i_perm].astype(np.int64),
            "ts": _seconds_before_end(np.concatenate(parts_back)[i_perm]),
            "itype": np.concatenate(parts_type)[i_perm],
            "channel": np.concatenate(parts_channel)[i_perm],
            "campaign": np.concatenate(parts_campaign)[i_perm],
            "resolved": np.concatenate(parts_resolved)[i_perm],
            "sat": np.concatenate(parts_sat)[i_perm],
            "nps": np.concatenate(parts_nps)[i_perm],
            "sentiment": np.round(np.concatenate(parts_sentiment)[i_perm], 2),
        }
    )

    n_campaigns = int(np.ceil(H / CAMPAIGN_EVERY_DAYS))
    campaigns = pa.table(
        {
            "k": np.arange(n_campaigns, dtype=np.int32),
            "start_day": (H - np.arange(n_campaigns) * CAMPAIGN_EVERY_DAYS),
            "channel": rng.choice(3, n_campaigns, p=[0.75, 0.15, 0.10]).astype(np.int8),
            "cost": np.round(rng.uniform(500, 5000, n_campaigns), 2),
        }
    )

    # 6. customers table, with dirt --------------------------------------------------------
    dup = rng.random(n) < DUPLICATE_SHARE
    region = rng.integers(0, REGIONS_PER_COUNTRY, n)
    city = rng.integers(0, CITIES_PER_REGION, n)
    customers = pa.table(
        {
            "cid": np.arange(n, dtype=np.int64),
            "created_ts": _seconds_before_end(created_back),
            "updated_back": rng.uniform(0, 1, n) * created_back,
            "channel": channel.astype(np.int8),
            "country": country.astype(np.int8),
            "region": region.astype(np.int8),
            "city": city.astype(np.int8),
            "age": age.astype(np.int16),
            "birth_doy": rng.integers(0, 365, n).astype(np.int16),
            "gender": rng.choice(4, n, p=[0.48, 0.47, 0.02, 0.03]).astype(np.int8),
            "consent": consent,
            "pref": rng.choice(4, n, p=[0.55, 0.2, 0.15, 0.1]).astype(np.int8),
            "b2b": rng.random(n) < 0.10,
            "company_size": rng.choice(4, n).astype(np.int8),
            "messy_email": rng.random(n) < 0.05,
            "messy_country": rng.random(n) < 0.05,
            "phone_style": rng.integers(0, 3, n).astype(np.int8),
            "dup": dup,
        }
    )
    truth = pa.table(
        {
            "cid": np.arange(n, dtype=np.int64),
            "lambda_per_day": lam,
            "dropout_p": p_drop,
            "nu": nu,
            "spend_mean": prm["p"] / nu,
            "spend_shift": spend_shift,
            "has_purchase": buys,
            "first_purchase_back": np.where(buys, first_back, np.nan),
            "dropped_out": dropped,
            "death_back": np.where(dropped, death_back, np.nan),
            "n_completed": np.bincount(o_owner, minlength=n),
        }
    )
    return customers, orders, interactions, campaigns, truth


def _write(out, config, end, customers, orders, interactions, campaigns, truth) -> dict[str, int]:
    fmt = config.file_format
    con = duckdb.connect()
    con.register("c", customers)
    con.register("o", orders)
    con.register("i", interactions)
    con.register("k", campaigns)
    con.register("t", truth)
    end_lit = f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
    lst = lambda values: "[" + ", ".join(f"'{v}'" for v in values) + "]"  # noqa: E731
    cid = "lpad(CAST(cid + 1 AS VARCHAR), 8, '0')"
    ts = lambda col: f"strftime({end_lit} + to_seconds({col}), '%Y-%m-%d %H:%M:%S')"  # noqa: E731
    customers_sql = f"""
        WITH base AS (
          SELECT *, {cid} AS customer_id,
                 {lst(COUNTRIES)}[country + 1] AS cc,
                 ['Anna','Ben','Chloe','David','Emma','Felix','Greta','Hugo','Ines','Jonas'][cid % 10 + 1] AS first,
                 ['Smith','Muller','Martin','Rossi','Garcia','de Vries','Brown','Dubois'][(cid // 10) % 8 + 1] AS last
          FROM c
        ), rows AS (
          SELECT *, 0 AS version FROM base
          UNION ALL
          SELECT *, 1 AS version FROM base WHERE dup
        )
        SELECT
          customer_id,
          {ts('created_ts')} AS created_at,
          {ts('- CAST(round(updated_back * 86400 + version * 86400 * 30) AS BIGINT)')} AS updated_at,
          CASE WHEN messy_email AND version = 0
               THEN '  ' || upper(first[1]) || lower(first[2:]) || '.' || upper(last) || cid || '@Example.COM '
               ELSE lower(first) || '.' || lower(replace(last, ' ', '')) || cid
                    || CASE WHEN version = 1 THEN '@old-mail.net' ELSE '@example.com' END END AS email,
          CASE phone_style WHEN 0 THEN '+49 ' || lpad(CAST(cid % 10000000 AS VARCHAR), 9, '0')
                           WHEN 1 THEN '0049-' || lpad(CAST(cid % 10000000 AS VARCHAR), 9, '0')
                           ELSE '(0) ' || lpad(CAST(cid % 10000000 AS VARCHAR), 9, '0') END AS phone,
          first || ' ' || last AS full_name,
          CASE WHEN messy_country THEN ' ' || lower(cc) || ' ' ELSE cc END AS country,
          cc || '-R' || (region + 1) AS region,
          cc || '-R' || (region + 1) || '-C' || CASE WHEN version = 1 THEN (city + 1) % 4 + 1 ELSE city + 1 END AS city,
          lpad(CAST((cid * 7919) % 90000 + 10000 AS VARCHAR), 5, '0') AS postal_code,
          strftime(DATE '{config.end_date}' - INTERVAL (age) YEAR - INTERVAL (birth_doy) DAY, '%Y-%m-%d') AS birth_date,
          ['female', 'male', 'diverse', NULL][gender + 1] AS gender,
          {lst(CHANNELS)}[channel + 1] AS acquisition_channel,
          CASE WHEN b2b THEN 'Company ' || cid END AS company_name,
          CASE WHEN b2b THEN ['1-10', '11-50', '51-250', '250+'][company_size + 1] END AS company_size,
          CASE WHEN b2b THEN ['retail', 'manufacturing', 'services', 'public'][company_size + 1] END AS industry,
          CASE WHEN consent THEN 'true' ELSE 'false' END AS marketing_consent,
          ['email', 'phone', 'sms', 'mail'][pref + 1] AS preferred_channel
        FROM rows
        ORDER BY hash(cid, version, {config.seed})
    """
    orders_sql = f"""
        SELECT 'ORD-' || lpad(CAST(oid + 1 AS VARCHAR), 9, '0') AS order_id,
               {cid} AS customer_id,
               {ts('ts')} AS ordered_at,
               amount,
               ['completed', 'cancelled', 'refunded'][status + 1] AS status,
               'EUR' AS currency,
               {lst(CATEGORIES)}[category + 1] AS product_category,
               quantity,
               ['online', 'store', 'phone', 'partner'][sales_channel + 1] AS sales_channel
        FROM o ORDER BY oid
    """
    itypes = ["support_ticket", "complaint", "campaign_response", "email_open", "email_click", "web_visit", "survey"]
    ichannels = ["email", "phone", "chat", "web"]
    interactions_sql = f"""
        SELECT 'INT-' || lpad(CAST(iid + 1 AS VARCHAR), 10, '0') AS interaction_id,
               {cid} AS customer_id,
               {ts('ts')} AS occurred_at,
               {lst(ichannels)}[channel + 1] AS channel,
               {lst(itypes)}[itype + 1] AS interaction_type,
               CASE WHEN campaign >= 0 THEN 'CMP-' || lpad(CAST(campaign + 1 AS VARCHAR), 4, '0') END AS campaign_id,
               CASE resolved WHEN 1 THEN 'true' WHEN 0 THEN 'false' END AS resolved,
               CASE WHEN sat >= 0 THEN sat END AS satisfaction_score,
               CASE WHEN nps >= 0 THEN nps END AS nps_score,
               CASE WHEN NOT isnan(sentiment) THEN sentiment END AS sentiment
        FROM i ORDER BY iid
    """
    campaigns_sql = f"""
        SELECT 'CMP-' || lpad(CAST(k + 1 AS VARCHAR), 4, '0') AS campaign_id,
               'Campaign ' || (k + 1) AS name,
               ['email', 'sms', 'mail'][channel + 1] AS channel,
               strftime({end_lit} - to_seconds(CAST(round(start_day * 86400) AS BIGINT)), '%Y-%m-%d') AS started_at,
               strftime({end_lit} - to_seconds(CAST(round(start_day * 86400) AS BIGINT)) + INTERVAL 7 DAY, '%Y-%m-%d') AS ended_at,
               cost
        FROM k WHERE start_day > 0 ORDER BY k
    """
    truth_sql = f"""
        SELECT {cid} AS customer_id, lambda_per_day, dropout_p, nu, spend_mean, spend_shift, has_purchase,
               CASE WHEN has_purchase THEN {end_lit} - to_seconds(CAST(round(first_purchase_back * 86400) AS BIGINT))
                    END AS first_purchase_at,
               dropped_out,
               CASE WHEN dropped_out THEN {end_lit} - to_seconds(CAST(round(death_back * 86400) AS BIGINT))
                    END AS death_at,
               n_completed
        FROM t ORDER BY cid
    """
    counts = {}
    for name, sql in [
        ("customers", customers_sql),
        ("orders", orders_sql),
        ("interactions", interactions_sql),
        ("campaigns", campaigns_sql),
    ]:
        path = out / f"{name}.{fmt}"
        opts = "(FORMAT csv, HEADER true)" if fmt == "csv" else "(FORMAT parquet, COMPRESSION zstd)"
        con.execute(f"COPY ({sql}) TO ? {opts}", [str(path)])
        counts[name] = con.execute(f"SELECT count(*) FROM ({sql})").fetchall()[0][0]
    con.execute(f"COPY ({truth_sql}) TO ? (FORMAT parquet)", [str(out / '_truth.parquet')])
    con.close()
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=5000, help="number of customers (default 5000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed; same seed, same files (default 42)")
    parser.add_argument("--out", required=True, metavar="DIR|URL",
                        help="folder to write the files to, or a PostgreSQL database postgresql://user@host:5432/db"
                        "?schema=crm to load them into as tables (password from CRM_SOURCE_PASSWORD, PGPASSWORD or "
                        "~/.pgpass)")
    parser.add_argument(
        "--end-date",
        type=date.fromisoformat,
        default=DEFAULT_END_DATE,
        help=f"last day of the generated history (default {DEFAULT_END_DATE})",
    )
    parser.add_argument(
        "--history-days", type=int, default=DEFAULT_HISTORY_DAYS, help="days of history (default 3 years)"
    )
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv", help="file format (default csv)")


def run_from_args(args: argparse.Namespace) -> dict[str, int]:
    cfg = GeneratorConfig(
        customers=args.customers,
        seed=args.seed,
        end_date=args.end_date,
        history_days=args.history_days,
        file_format=args.format,
    )
    return generate(cfg, Path(args.out))
