"""The CDNOW model benchmark's pure parts: parsing, the source contract, hold-out windows, metrics, the
BG/NBD no-purchase probability and the results-file section. Tiny hand-made data; no download."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from bench import cdnow
from bench import model_bench as mb
from ml import btyd

AS_OF = date(1997, 9, 30)

# customer 00001: two rows on one day (merged), one on the as-of day, one in the hold-out's first day,
# one on its last day (as-of + 273 = 1998-06-30); 00002: one purchase in January only; 00003: first
# purchase after the as-of date (not in the population); 00004: a $0 purchase 100 days after as-of.
MASTER = """ customer_id  date number_of_cds  dollar_value\r
 00001 19970101  1   11.77\r
 00001 19970101  2   20.00\r
 00001 19970930  1   10.00\r
 00001 19971001  3   30.00\r
 00001 19980630  1   15.00\r
 00002 19970115  5   77.00\r
 00003 19971120  1   12.00\r
 00004 19970301  1    9.99\r
 00004 19980108  1    0.00\r
"""


@pytest.fixture
def raw() -> pd.DataFrame:
    return cdnow.parse_master(MASTER)


def test_parse_keeps_ids_as_text_and_reads_dates(raw):
    assert list(raw.columns) == cdnow.RAW_COLUMNS
    assert raw.customer_id.tolist()[:2] == ["00001", "00001"]
    assert raw.date.iloc[3] == pd.Timestamp("1997-10-01")
    assert raw.dollar_value.sum() == pytest.approx(185.76)
    assert raw.number_of_cds.dtype == np.int64


def test_parse_rejects_a_file_without_the_columns():
    with pytest.raises(cdnow.CdnowError, match="lacks column"):
        cdnow.parse_master("id day cds\n1 19970101 1\n")


def test_source_contract_one_order_per_row(raw, tmp_path):
    customers, orders = cdnow.to_source(raw)
    assert len(orders) == len(raw) and orders.order_id.is_unique
    assert orders.order_id.tolist()[:3] == ["00001-001", "00001-002", "00001-003"]
    assert set(orders.status) == {"completed"}
    assert orders.amount.tolist()[-1] == "0.00"  # $0 rows stay orders (amount >= 0 is valid)
    assert dict(zip(customers.customer_id, customers.created_at)) == {
        "00001": "1997-01-01", "00002": "1997-01-15", "00003": "1997-11-20", "00004": "1997-03-01"}
    assert cdnow.write_source(raw, tmp_path) == (4, 9)
    back = pd.read_csv(tmp_path / "orders.csv", dtype=str)
    assert back.customer_id.iloc[0] == "00001" and back.ordered_at.iloc[0] == "1997-01-01"


def test_daily_merges_same_day_purchases(raw):
    days = cdnow.daily(raw)
    first = days[(days.customer_id == "00001") & (days.day == "1997-01-01")]
    assert len(first) == 1 and first.spend.iloc[0] == pytest.approx(31.77)
    assert len(days) == len(raw) - 1


def test_outcomes_windows_and_population(raw):
    out = cdnow.outcomes(cdnow.daily(raw), AS_OF, 273, 90)
    assert out.index.tolist() == ["00001", "00002", "00004"]  # 00003 first bought after the as-of date
    # 00001: the as-of day is history; 1997-10-01 and 1998-06-30 (= as-of + 273) are in the hold-out
    assert out.loc["00001", "purchases"] == 2 and out.loc["00001", "spend"] == pytest.approx(45.0)
    assert out.loc["00001", "churned"] == 0
    assert out.loc["00002"].tolist() == [0, 0.0, 1]
    # 00004 bought (for $0) 100 days after: a purchase day, but churned in the 90-day sense
    assert out.loc["00004", "purchases"] == 1 and out.loc["00004", "churned"] == 1


def test_history_recency_and_windows(raw):
    known = cdnow.history(cdnow.daily(raw), AS_OF, (273, 90))
    assert known.loc["00001", "recency_days"] == 0
    assert known.loc["00002", "recency_days"] == (pd.Timestamp(AS_OF) - pd.Timestamp("1997-01-15")).days
    # 1997-01-01 is inside (as-of - 273, as-of] = (1996-12-31, 1997-09-30]
    assert known.loc["00001", "purchases_273d"] == 2 and known.loc["00001", "spend_273d"] == pytest.approx(41.77)
    assert known.loc["00001", "purchases_90d"] == 1 and known.loc["00002", "purchases_90d"] == 0


def test_naive_rows_scale_the_last_90_days(raw):
    known = cdnow.history(cdnow.daily(raw), AS_OF, (273, 90))
    naive = mb.naive_predictions(known, 273, 90)
    assert naive[mb.NAIVE_90].loc["00001", "expected_spend"] == pytest.approx(10.0 * 273 / 90)
    assert naive[mb.NAIVE_90].churn_score.tolist() == [0.0, 1.0, 1.0]
    assert naive[mb.NAIVE_PERIOD].loc["00002", "expected_purchases"] == 1
    assert naive[mb.NAIVE_PERIOD].churn_score.tolist() == known.recency_days.tolist()


def test_total_error():
    assert mb.total_error([1, 2, 3], [2, 2, 2]) == pytest.approx(0.0)
    assert mb.total_error([0.9, 0.9], [1, 1]) == pytest.approx(-0.1)
    assert np.isnan(mb.total_error([1.0], [0.0]))
    with pytest.raises(ValueError):
        mb.total_error([1, 2], [1])


def test_rank_metrics():
    actual = np.array([0.0, 0.0, 5.0, 10.0, 40.0])
    assert mb.spearman(actual, actual * 2 + 1) == pytest.approx(1.0)
    assert mb.spearman(actual, -actual) == pytest.approx(-1.0)
    assert np.isnan(mb.spearman(actual, np.ones(5)))
    assert mb.churn_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert mb.churn_auc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]) == 0.75
    assert np.isnan(mb.churn_auc([1, 1], [0.1, 0.2]))


def test_score_aligns_by_customer_and_refuses_gaps():
    truth = pd.DataFrame({"purchases": [0, 2, 1], "spend": [0.0, 50.0, 10.0], "churned": [1, 0, 0]},
                         index=pd.Index(["a", "b", "c"], name="customer_id"))
    preds = pd.DataFrame({"expected_purchases": [1.5, 0.5, 1.0], "expected_spend": [12.0, 1.0, 40.0],
                          "churn_score": [0.1, 0.9, 0.5]}, index=["c", "a", "b"])  # other order
    got = mb.score(preds, truth)
    assert got["purchases_total_error"] == pytest.approx(0.0)
    assert got["spend_total_error"] == pytest.approx(53 / 60 - 1)
    assert got["spend_gini"] == pytest.approx(1.0)  # b > c > a in both
    assert got["churn_auc"] == pytest.approx(1.0)  # a, the one who churned, has the highest score
    with pytest.raises(ValueError, match="1 of 3 customers have no prediction"):
        mb.score(preds.drop("a"), truth)


def test_better_compares_errors_by_size():
    assert mb.better("spend_total_error", -0.05, 0.08)
    assert not mb.better("spend_total_error", 0.12, -0.1)
    assert mb.better("spend_gini", 0.75, 0.7) and not mb.better("churn_auc", 0.7, 0.7)
    assert not mb.better("spend_gini", float("nan"), 0.1)


def test_bgnbd_no_purchase_is_the_likelihood_ratio():
    """P(no purchase in (T, T+t] | x, t_x, T) = L(x, t_x, T+t) / L(x, t_x, T): the BG/NBD likelihood of
    a history with no purchase after t_x, evaluated at two observation ends (ml.btyd, independent code)."""
    p = btyd.BgNbdParams(r=0.25, alpha=33.5, a=0.72, b=2.16)
    x = np.array([0, 1, 3, 10, 2])
    tx = np.array([0, 40, 120, 200, 5])
    T = np.array([230, 250, 240, 260, 210])
    got = mb.bgnbd_prob_no_purchase(90, x, tx, T, p.r, p.alpha, p.a, p.b)
    want = np.exp(btyd.bgnbd_log_likelihood(p, x, tx, T + 90) - btyd.bgnbd_log_likelihood(p, x, tx, T))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # a brand-new customer: the unconditional (alpha / (alpha + t)) ** r
    new = mb.bgnbd_prob_no_purchase(90, [0], [0], [0], p.r, p.alpha, p.a, p.b)
    assert new[0] == pytest.approx((p.alpha / (p.alpha + 90)) ** p.r)
    # passing p_alive gives the same as computing it
    pa = btyd.p_alive(p, x, tx, T)
    np.testing.assert_allclose(mb.bgnbd_prob_no_purchase(90, x, tx, T, p.r, p.alpha, p.a, p.b, p_alive=pa), got)


def test_replace_section_touches_only_the_marked_block():
    assert mb.replace_section("", "body") == f"{mb.START}\nbody\n{mb.END}\n"
    text = "# Results\n\nsome table\n"
    once = mb.replace_section(text, "first")
    assert once.startswith(text) and once.endswith(f"{mb.START}\nfirst\n{mb.END}\n")
    middle = once + "\n<!-- section: later -->\nkept\n"
    twice = mb.replace_section(middle, "second\n")
    assert twice == middle.replace("first", "second")
    with pytest.raises(ValueError, match="only one of"):
        mb.replace_section(f"x\n{mb.START}\nbroken\n", "b")


def test_targets_need_every_comparison():
    rows = {
        mb.PROJECT: dict(purchases_total_error=-0.05, spend_total_error=0.12, spend_gini=0.74,
                         spend_spearman=0.40, churn_auc=0.80),
        mb.LIFETIMES: dict(purchases_total_error=-0.14, spend_total_error=-0.17, spend_gini=0.67,
                           spend_spearman=0.42, churn_auc=0.76),
        mb.NAIVE_90: None,  # a row that could not be computed: nothing can be met against it
    }
    table = mb.target_table(rows)
    assert len(table) == 2 + len(mb.METRICS)
    lines = dict(zip(mb.METRICS, table[2:]))
    assert lines["purchases_total_error"].startswith("| purchases total error | -5.0% | within ±10 %: yes | yes (-14.0%)")
    assert lines["purchases_total_error"].endswith("| not measured | **no** |")
    assert "| 0.740 | >= 0.72: yes | yes (0.670) |" in lines["spend_gini"]
    assert "+12.0% | within ±10 %: no | yes (-17.0%)" in lines["spend_total_error"]
    assert "| no (0.420) |" in lines["spend_spearman"]  # no absolute target, loses to lifetimes
    rows[mb.NAIVE_90] = dict(purchases_total_error=0.2, spend_total_error=0.2, spend_gini=0.5,
                             spend_spearman=0.3, churn_auc=0.7)
    met = {m: line.endswith("| yes |") for m, line in zip(mb.METRICS, mb.target_table(rows)[2:])}
    assert met == {"purchases_total_error": True, "spend_total_error": False, "spend_gini": True,
                   "spend_spearman": False, "churn_auc": True}
    unscored = mb.target_table({mb.PROJECT: None, mb.LIFETIMES: rows[mb.LIFETIMES]})
    assert all(line.endswith("| **no** |") and "not scored" in line for line in unscored[2:])


def test_pipeline_backtest_rows_are_summarised():
    perf = pd.DataFrame({
        "task": ["value", "value", "value", "churn", "churn"],
        "model_name": ["bgnbd_gg", "bgnbd_gg", "naive_last_year", "hgb", "hgb"],
        "metric": ["normalised_gini", "mae", "normalised_gini", "roc_auc", "calib_d01_expected"],
        "value": [0.61, 12.0, 0.55, 0.81, 0.02],
        "is_champion": [True, True, False, True, True],
        "test_window_start": pd.to_datetime(["1997-01-01"] * 5), "test_window_end": pd.to_datetime(["1997-09-30"] * 5),
    })
    assert mb.champions(perf) == {"churn": "hgb", "value": "bgnbd_gg"}
    assert mb.backtest_lines(perf) == [
        "churn / hgb (champion): roc_auc 0.810, test window 1997-01-01 .. 1997-09-30",
        "value / bgnbd_gg (champion): normalised_gini 0.610, test window 1997-01-01 .. 1997-09-30",
        "value / naive_last_year: normalised_gini 0.550, test window 1997-01-01 .. 1997-09-30",
    ]
    assert mb.champions(perf.iloc[:0]) == {} and mb.backtest_lines(None) == []


def test_interval_coverage_counts_the_ends_and_undoes_the_discount():
    truth = pd.DataFrame({"purchases": [0.0, 2.0, 5.0, 1.0], "spend": [0.0, 40.0, 200.0, 10.0]},
                         index=pd.Index(["a", "b", "c", "d"], name="customer_id"))
    pred = pd.DataFrame({"expected_purchases_low": [0.0, 1.0, 0.0, 2.0], "expected_purchases_high": [0.0, 2.0, 3.0, 4.0],
                         "expected_spend": [0.0, 50.0, 60.0, 20.0], "clv": [0.0, 45.0, 54.0, 18.0],
                         "clv_low": [0.0, 9.0, 0.0, 9.0], "clv_high": [0.0, 36.0, 90.0, 27.0]},
                        index=["d", "a", "b", "c"])  # another order: aligned by customer
    got = mb.interval_coverage(pred, truth)
    # purchases: a [1,2] misses 0, b [0,3] holds 2, c [2,4] misses 5, d [0,0] misses 1
    # spend (clv interval / 0.9): a [10,40] misses 0, b [0,100] holds 40, c [10,30] misses 200, d [0,0] misses 10
    assert got == {"purchases": 0.25, "spend": 0.25, "customers": 4}
    assert mb.interval_coverage(pred.drop(columns="clv_low"), truth) is None


def test_read_project_reads_a_serving_file(tmp_path):
    import duckdb

    path = tmp_path / "serving.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("""create table customer_scores as select * from (values
            ('00001', 1.5, 30.0, 0.2, 0.9, 'bgnbd_gg', date '1997-09-30'),
            ('00002', 0.1, 2.0, 0.95, 0.3, 'bgnbd_gg', date '1997-09-30'))
            t(customer_id, expected_purchases, expected_spend, churn_probability, p_alive, clv_model, as_of_date)""")
        con.execute("""create table pipeline_runs as select 'r1' as run_id, now() as started_at,
            '{"clv": "bgnbd_gg@1997-09-30", "churn": "hgb"}' as model_versions, '{"marts.fct_orders": 7}' as stage_rows""")
    got = mb.read_project(path)
    assert got.n_customers == 2 and got.as_of_date == "1997-09-30" and got.clv_models == {"bgnbd_gg": 2}
    assert got.predictions.loc["00001", "churn_score"] == 0.2 and got.performance is None
    assert got.model_versions == {"clv": "bgnbd_gg@1997-09-30", "churn": "hgb"}
    assert got.stage_rows() == {"marts.fct_orders": 7}
    with duckdb.connect(str(path)) as con:
        con.execute("alter table customer_scores drop column expected_spend")
    with pytest.raises(ValueError, match=r"lacks \['expected_spend'\]"):
        mb.read_project(path)
    with pytest.raises(FileNotFoundError):
        mb.read_project(tmp_path / "missing.duckdb")


def test_score_refuses_missing_values():
    truth = pd.DataFrame({"purchases": [1, 0], "spend": [5.0, 0.0], "churned": [0, 1]}, index=["a", "b"])
    preds = pd.DataFrame({"expected_purchases": [1.0, np.nan], "expected_spend": [3.0, 1.0],
                          "churn_score": [0.2, 0.8]}, index=["a", "b"])
    with pytest.raises(ValueError, match="expected_purchases 1"):
        mb.score(preds, truth)


def test_gini_with_ties_in_random_order():
    from ml.metrics import normalised_gini

    actual = np.array([0.0, 3.0, 0.0, 10.0, 1.0])
    flat = np.ones(5)  # one big tie: pessimistic order is the worst ranking, random order is worth 0
    assert normalised_gini(actual, flat) == pytest.approx(-1.0)
    assert mb.normalised_gini_ties_averaged(actual, flat) == pytest.approx(0.0)
    distinct = np.array([0.1, 0.5, 0.2, 0.9, 0.3])  # no ties: both conventions agree
    assert mb.normalised_gini_ties_averaged(actual, distinct) == pytest.approx(normalised_gini(actual, distinct))
    # a tie between the two top customers only: halfway between the two orders
    pair = np.array([0.1, 0.9, 0.2, 0.9, 0.3])
    lo, hi = normalised_gini(actual, pair), normalised_gini(actual, np.array([0.1, 0.8, 0.2, 0.9, 0.3]))
    assert mb.normalised_gini_ties_averaged(actual, pair) == pytest.approx((lo + hi) / 2)
