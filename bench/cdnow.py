"""The CDNOW master file for the model benchmark: download, parse, convert to the source contract, and
the per-customer windows the benchmark scores against.

CDNOW (Fader, Hardie & Lee 2005): every purchase of the 23,570 customers who first bought at CDNOW in
the first quarter of 1997, followed to the end of June 1998. The file ships inside the ``lifetimes``
0.11.3 wheel on the package index; :func:`download_master` fetches the wheel with pip (no install, no
runtime dependency) and reads the file out of the zip. Columns: customer id (5 digits, leading zeros),
date ``YYYYMMDD``, number of CDs, dollar value; whitespace separated, one header line.

Conventions used by every window here (and by the benchmark's metrics):

* **daily periods**: a customer's purchases on one calendar day are one purchase (same-day rows are
  merged, their spend summed). Every raw row is a purchase, zero-dollar rows included (80 rows in
  CDNOW; the contract accepts ``amount >= 0``).
* a window ``(start, end]`` holds the days strictly after ``start`` and up to and including ``end``;
  "as of D" means everything up to the end of day D.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

WHEEL_REQUIREMENT = "lifetimes==0.11.3"
MASTER_MEMBER = "lifetimes/datasets/CDNOW_master.txt"
RAW_COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]


class CdnowError(RuntimeError):
    """The CDNOW file could not be fetched or read; the message says what to do."""


def download_wheel(cache: Path, python: str = sys.executable) -> Path:
    """The ``lifetimes`` 0.11.3 wheel in ``cache`` (downloaded with ``pip download`` if missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("[Ll]ifetimes-0.11.3-*.whl"))
    if found:
        return found[0]
    cmd = [python, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps", "--only-binary", ":all:",
           "-d", str(cache), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob("[Ll]ifetimes-0.11.3-*.whl"))
    if done.returncode != 0 or not found:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise CdnowError(f"could not download the {WHEEL_REQUIREMENT} wheel into {cache} "
                         f"(`{' '.join(cmd)}` exited {done.returncode}):\n{tail}\n"
                         "Check that the package index is reachable, or put the wheel in that folder by hand.")
    return found[0]


def read_master(wheel: Path) -> pd.DataFrame:
    """The raw CDNOW rows from the wheel, parsed by :func:`parse_master`."""
    with zipfile.ZipFile(wheel) as zf:
        if MASTER_MEMBER not in zf.namelist():
            raise CdnowError(f"{wheel.name} has no {MASTER_MEMBER}; is it the lifetimes 0.11.3 wheel?")
        return parse_master(zf.read(MASTER_MEMBER).decode("ascii"))


def download_master(cache: Path, python: str = sys.executable) -> pd.DataFrame:
    """The raw CDNOW rows: from the installed ``lifetimes`` 0.11.3 (``make venv`` installs it as the baseline;
    the same file the wheel holds), else from the wheel, downloaded if missing (a venv made by uv has no pip)."""
    installed = _installed_master()
    return parse_master(installed) if installed is not None else read_master(download_wheel(cache, python))


def _installed_master() -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    try:
        if version("lifetimes") != WHEEL_REQUIREMENT.split("==")[1]:
            return None
    except PackageNotFoundError:
        return None
    path = Path(find_spec("lifetimes").origin).parent.parent / MASTER_MEMBER
    return path.read_text(encoding="ascii") if path.exists() else None


def parse_master(text: str) -> pd.DataFrame:
    """Raw rows as (customer_id: text, date: datetime64 day, number_of_cds: int, dollar_value: float),
    in file order. Identifiers stay text so ``00017`` stays ``00017``."""
    frame = pd.read_csv(io.StringIO(text), sep=r"\s+", dtype={"customer_id": str, "date": str})
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise CdnowError(f"CDNOW file lacks column(s) {missing}; found {list(frame.columns)}")
    frame = frame[RAW_COLUMNS].copy()
    frame["customer_id"] = frame["customer_id"].astype(object)
    frame["date"] = pd.to_datetime(frame["date"], format="%Y%m%d")
    frame["number_of_cds"] = frame["number_of_cds"].astype("int64")
    frame["dollar_value"] = frame["dollar_value"].astype(float)
    if (frame["dollar_value"] < 0).any():
        raise CdnowError("CDNOW has negative dollar values; the source contract accepts amounts >= 0 only")
    return frame.reset_index(drop=True)


def to_source(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(customers, orders) in the project's source contract. One order per raw row (the pipeline merges
    same-day orders itself); ``order_id`` = customer id and the row's rank among that customer's rows
    in file order; ``created_at`` = the customer's first purchase date. All values are text or numbers
    as the contract reads them; dates are ISO ``YYYY-MM-DD``."""
    rows = raw.reset_index(drop=True)
    seq = rows.groupby("customer_id", sort=False).cumcount() + 1
    orders = pd.DataFrame({
        "order_id": rows["customer_id"] + "-" + seq.astype(str).str.zfill(3),
        "customer_id": rows["customer_id"],
        "ordered_at": rows["date"].dt.strftime("%Y-%m-%d"),
        "amount": rows["dollar_value"].map(lambda v: f"{v:.2f}"),
        "status": "completed",
        "quantity": rows["number_of_cds"].astype("int64"),
    })
    first = rows.groupby("customer_id", sort=True)["date"].min()
    customers = pd.DataFrame({"customer_id": first.index.astype(object),
                              "created_at": first.dt.strftime("%Y-%m-%d").to_numpy()})
    return customers, orders


def write_source(raw: pd.DataFrame, folder: Path) -> tuple[int, int]:
    """Write ``customers.csv`` and ``orders.csv`` into ``folder``; returns (customers, orders)."""
    customers, orders = to_source(raw)
    folder.mkdir(parents=True, exist_ok=True)
    customers.to_csv(folder / "customers.csv", index=False)
    orders.to_csv(folder / "orders.csv", index=False)
    return len(customers), len(orders)


def daily(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer, purchase day): ``customer_id``, ``day`` (datetime64), ``spend`` (sum)."""
    out = raw.groupby(["customer_id", "date"], as_index=False, sort=True)["dollar_value"].sum()
    return out.rename(columns={"date": "day", "dollar_value": "spend"})


def _ts(d: date | str | pd.Timestamp) -> pd.Timestamp:
    return pd.Timestamp(d).normalize()


def window(days: pd.DataFrame, start: date | str, end: date | str, customers: pd.Index) -> pd.DataFrame:
    """Purchase days and spend per customer in ``(start, end]``, for every id in ``customers`` (0 when
    none)."""
    sel = days[(days["day"] > _ts(start)) & (days["day"] <= _ts(end))]
    agg = sel.groupby("customer_id").agg(purchases=("day", "size"), spend=("spend", "sum"))
    agg = agg.reindex(customers, fill_value=0)
    agg["purchases"] = agg["purchases"].astype("int64")
    agg["spend"] = agg["spend"].astype(float)
    agg.index.name = "customer_id"
    return agg


def population(days: pd.DataFrame, as_of: date | str) -> pd.Index:
    """Every customer with a purchase on or before the as-of date (sorted ids)."""
    return pd.Index(np.sort(days.loc[days["day"] <= _ts(as_of), "customer_id"].unique()), name="customer_id")


def outcomes(days: pd.DataFrame, as_of: date | str, clv_days: int, churn_days: int) -> pd.DataFrame:
    """What happened after the as-of date, per customer of :func:`population`:

    * ``purchases``, ``spend``: purchase days and spend in ``(as_of, as_of + clv_days]``;
    * ``churned``: 1 when there is no purchase in ``(as_of, as_of + churn_days]``.
    """
    as_of = _ts(as_of)
    who = population(days, as_of)
    out = window(days, as_of, as_of + timedelta(days=clv_days), who)
    churn = window(days, as_of, as_of + timedelta(days=churn_days), who)
    out["churned"] = (churn["purchases"] == 0).astype("int64")
    return out


def history(days: pd.DataFrame, as_of: date | str, windows: tuple[int, ...]) -> pd.DataFrame:
    """What was known at the as-of date, per customer of :func:`population`: ``recency_days`` (days
    from the last purchase to the as-of date) and, per ``w`` in ``windows``, ``purchases_<w>d`` and
    ``spend_<w>d`` in ``(as_of - w, as_of]``."""
    as_of = _ts(as_of)
    who = population(days, as_of)
    seen = days[days["day"] <= as_of]
    last = seen.groupby("customer_id")["day"].max().reindex(who)
    out = pd.DataFrame({"recency_days": (as_of - last).dt.days.astype("int64")}, index=who)
    for w in windows:
        part = window(days, as_of - timedelta(days=w), as_of, who)
        out[f"purchases_{w}d"] = part["purchases"]
        out[f"spend_{w}d"] = part["spend"]
    return out
