"""The generator: contract-shaped, deterministic, and true to its documented generative story."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pytest

from data_quality.contract import ENTITIES
from ml.sample_data import GeneratorConfig, TRUE_PARAMS, generate, simulate_btyd


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        generate(GeneratorConfig(customers=300, seed=seed), out, progress=lambda *_: None)
    assert _digest(a) == _digest(b)
    assert _digest(a)["orders.csv"] != _digest(c)["orders.csv"]


def test_a_population_above_the_shard_size_is_simulated_in_shards_with_unique_ids(tmp_path):
    """Ten million customers do not fit in memory in one piece (8.5 GB per million): shards of the same story
    with their ids moved past the previous shard's, concatenated into the usual files."""
    out = tmp_path / "sharded"
    counts = generate(GeneratorConfig(customers=2_500, seed=5, file_format="parquet"), out,
                      progress=lambda *_: None, shard_customers=1_000)
    assert sorted(p.name for p in out.iterdir()) == [
        "_truth.parquet", "campaigns.parquet", "customers.parquet", "interactions.parquet", "orders.parquet"]
    con = duckdb.connect()
    q = lambda sql: con.execute(sql.replace("{o}", str(out))).fetchall()[0]  # noqa: E731
    assert q("select count(distinct customer_id), min(customer_id), max(customer_id) from '{o}/customers.parquet'") \
        == (2_500, "00000001", "00002500")
    assert q("select count(*), count(distinct order_id) from '{o}/orders.parquet'") == (counts["orders"],) * 2
    assert q("select count(*), count(distinct interaction_id) from '{o}/interactions.parquet'") == (counts["interactions"],) * 2
    for entity in ("orders", "interactions"):  # every event belongs to a customer of the file
        assert q(f"select count(*) from '{{o}}/{entity}.parquet' where customer_id not in "
                 "(select customer_id from '{o}/customers.parquet')") == (0,)
    # each shard tells the same story from its own random stream: alike in the share of buyers, not copies
    first, last = q("select avg(has_purchase::int) filter (where customer_id <= '00001000'), "
                    "avg(has_purchase::int) filter (where customer_id > '00002000') from '{o}/_truth.parquet'")
    assert abs(first - last) < 0.06
    assert q("select count(distinct lambda_per_day) from '{o}/_truth.parquet'") == (2_500,)
    assert q("select count(*) from '{o}/campaigns.parquet'") == (counts["campaigns"],)


def test_files_follow_the_contract(small_sample):
    con = duckdb.connect()
    for name, entity in ENTITIES.items():
        cols = [r[0] for r in con.execute(f"describe select * from read_csv('{small_sample / (name + '.csv')}')").fetchall()]
        assert set(entity.columns) == set(cols), name
    ids = con.execute(f"select customer_id from read_csv('{small_sample}/customers.csv', all_varchar=true)").fetchall()
    assert all(len(i[0]) == 8 and i[0].isdigit() for i in ids)  # zero-padded text ids
    assert any(i[0].startswith("0000") for i in ids)


def test_dirt_is_present(small_sample):
    con = duckdb.connect()
    dups, messy = con.execute(
        f"""select count(*) - count(distinct customer_id),
                   count(*) filter (where email <> lower(trim(email)))
            from read_csv('{small_sample}/customers.csv', all_varchar=true)"""
    ).fetchone()
    assert dups > 0 and messy > 0
    statuses = {r[0] for r in con.execute(f"select distinct status from read_csv('{small_sample}/orders.csv')").fetchall()}
    assert statuses == {"completed", "cancelled", "refunded"}


def test_completed_orders_match_truth(small_sample):
    con = duckdb.connect()
    mismatches = con.execute(
        f"""with o as (select customer_id, count(*) n from read_csv('{small_sample}/orders.csv', all_varchar=true)
                       where status = 'completed' group by 1)
            select count(*) from read_parquet('{small_sample}/_truth.parquet') t
            left join o using (customer_id) where coalesce(o.n, 0) <> t.n_completed"""
    ).fetchone()[0]
    assert mismatches == 0


def test_simulate_btyd_matches_the_closed_form_expectation():
    # E[X(t) | lambda, p] = (1 - exp(-lambda p t)) / p for the BG/NBD purchase process
    rng = np.random.default_rng(0)
    n, lam, p, t = 200_000, 0.05, 0.1, 200.0
    s = simulate_btyd(rng, np.full(n, lam), np.full(n, p), np.full(n, t))
    expected = (1 - np.exp(-lam * p * t)) / p
    assert s.n_repeat.mean() == pytest.approx(expected, rel=0.01)
    assert s.purchase_day.min() > 0 and s.purchase_day.max() <= t
    # the dead stop buying: nobody has a purchase after their death day
    dead = np.isfinite(s.death_day)
    last = np.zeros(n)
    np.maximum.at(last, s.customer_index, s.purchase_day)
    assert np.allclose(last[dead], s.death_day[dead])


def test_dropout_is_announced_by_complaints(small_sample):
    con = duckdb.connect()
    rates = dict(
        con.execute(
            f"""with c as (select customer_id, count(*) n from read_csv('{small_sample}/interactions.csv', all_varchar=true)
                           where interaction_type = 'complaint' group by 1)
                select dropped_out, avg(coalesce(n, 0)) from read_parquet('{small_sample}/_truth.parquet')
                left join c using (customer_id) where has_purchase group by 1"""
        ).fetchall()
    )
    assert rates[True] > 2 * rates[False]


def test_latent_rates_follow_the_gamma_mixture(small_sample):
    con = duckdb.connect()
    mean_rate = con.execute(f"select avg(lambda_per_day) from read_parquet('{small_sample}/_truth.parquet')").fetchone()[0]
    # channel multipliers average about 1.05 around r / alpha
    assert mean_rate == pytest.approx(TRUE_PARAMS["r"] / TRUE_PARAMS["alpha"], rel=0.15)
