"""customer_profile, the de-identified table of the serving file: not joinable to an identity in that file, and
k-anonymous (every combination of gender, country, region, age band and tenure band covers at least 5
customers). The generalisation macro on a small skewed table, then the table a real run published."""

from __future__ import annotations

from pathlib import Path

import duckdb
import jinja2
import pytest

ROOT = Path(__file__).resolve().parents[1]
K = 5
QUASI_IDENTIFIERS = ["gender", "country", "region", "age_band", "tenure_band"]


def _k_anonymised(con: duckdb.DuckDBPyConnection, source: str, quasi_identifiers: list[str], steps: list[dict],
                  k: int = K) -> dict[str, tuple]:
    """Runs macros/k_anonymity.sql's k_anonymous_ctes (plain Jinja and SQL) on ``source``; key -> values."""
    macros = (ROOT / "dbt_project" / "macros" / "k_anonymity.sql").read_text()
    sql = jinja2.Environment().from_string(
        macros + "with {{ k_anonymous_ctes(source, 'key', qis, steps=steps, k=k, prefix='anon') }}\n"
                 "select key, {{ qis | join(', ') }}, quasi_identifiers_suppressed from anon_final"
    ).render(source=source, qis=quasi_identifiers, steps=steps, k=k)
    return {row[0]: row[1:] for row in con.execute(sql).fetchall()}


def test_rare_combinations_are_generalised_step_by_step_and_suppressed_as_a_last_resort():
    con = duckdb.connect()
    con.execute("create table people (key varchar, gender varchar, country varchar, age_band varchar)")
    groups = {  # name: (rows, gender, country, age band)
        "common": (20, "female", "DE", "25-34"), "six": (6, "male", "DE", "25-34"), "five": (5, "female", "ES", "65+"),
        "rare_age_a": (3, "male", "DE", "35-44"), "rare_age_b": (3, "male", "DE", "45-54"),
        "rare_country_a": (4, "female", "FR", "18-24"), "rare_country_b": (3, "female", "IT", "25-34"),
        "unique": (1, "diverse", "FR", "18-24"),
    }
    for name, (n, *values) in groups.items():
        con.executemany("insert into people values (?, ?, ?, ?)", [[f"{name}{i}", *values] for i in range(n)])
    wider_age = ("case when age_band in ('18-24', '25-34') then '18-34' "
                 "when age_band in ('35-44', '45-54') then '35-54' else age_band end")
    steps = [{"age_band": wider_age}, {"country": "'other'"}, {"age_band": "'any'"}, {"gender": "'any'"}]

    out = _k_anonymised(con, "people", ["gender", "country", "age_band"], steps)

    def of(name):
        return {out[f"{name}{i}"] for i in range(groups[name][0])}

    assert len(out) == sum(n for n, *_ in groups.values())
    # groups that reach k keep their values
    assert of("common") == {("female", "DE", "25-34", False)} and of("six") == {("male", "DE", "25-34", False)}
    # two rare age bands make one group of 6 in the wider band
    assert of("rare_age_a") | of("rare_age_b") == {("male", "DE", "35-54", False)}
    # two rare countries: wider age band first (still too few), then both countries 'other' (7 together)
    assert of("rare_country_a") | of("rare_country_b") == {("female", "other", "18-34", False)}
    # the one unique customer is still alone after every step: suppressed, and with it the smallest group
    # that reached k (the five), so that the suppressed rows are k too
    assert of("unique") == of("five") == {("suppressed", "suppressed", "suppressed", True)}
    sizes = {}
    for values in out.values():
        sizes[values[:3]] = sizes.get(values[:3], 0) + 1
    assert min(sizes.values()) >= K, sizes


@pytest.fixture(scope="module")
def published(two_publications):
    work, _, _ = two_publications
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        tables = {t: [c for (c,) in con.execute("select column_name from information_schema.columns "
                                                "where table_name = ? order by ordinal_position", [t]).fetchall()]
                  for (t,) in con.execute("select table_name from information_schema.tables").fetchall()}
        yield work, con, tables


@pytest.mark.slow
def test_the_published_profile_is_k_anonymous_with_one_row_per_customer(published):
    _, con, tables = published
    n_profile, n_keys = con.execute("select count(*), count(distinct profile_key) from customer_profile").fetchall()[0]
    assert n_profile == n_keys == con.execute("select count(*) from customer_scores").fetchall()[0][0] > 1000
    assert "tenure_days" not in tables["customer_profile"]
    for quasi_identifiers in (["gender", "country", "age_band", "tenure_band"], QUASI_IDENTIFIERS):
        columns = ", ".join(quasi_identifiers)
        smallest, combinations = con.execute(
            f"select min(n), count(*) from (select count(*) as n from customer_profile group by {columns})").fetchall()[0]
        assert smallest >= K, f"a combination of ({columns}) covers only {smallest} customers"
        assert combinations >= 20  # generalised where needed, not everything lumped together
    # most customers keep their exact values; a few are generalised or suppressed
    exact_age, suppressed = con.execute(
        "select avg(case when age_band in ('18-24', '25-34', '35-44', '45-54', '55-64', '65+') then 1.0 else 0 end), "
        "count(*) filter (where gender = 'suppressed') from customer_profile").fetchall()[0]
    assert exact_age > 0.5 and suppressed < 0.02 * n_profile
    print(f"customer_profile: {n_profile:,} rows, {exact_age:.0%} with their exact age band, {suppressed} suppressed")


@pytest.mark.slow
def test_the_published_profile_cannot_be_joined_to_an_identity_in_the_serving_file(published):
    work, con, tables = published
    profile = tables["customer_profile"]
    assert not {"customer_id", "customer_key"} & set(profile) and "profile_key" in profile
    # the only columns the profile shares by name with other tables are the run's constants
    shared = {c for t, cols in tables.items() if t != "customer_profile" for c in cols} & set(profile)
    assert shared == {"as_of_date", "run_id"}
    assert con.execute("select count(distinct as_of_date), count(distinct run_id) from customer_profile").fetchall()[0] == (1, 1)
    # no column that singles out a profile row (all values distinct) shares a value with any column of another
    # table, and no customer id or customer key appears anywhere in the profile
    n = con.execute("select count(*) from customer_profile").fetchall()[0][0]
    keys = [c for c in profile if con.execute(f'select count(distinct "{c}") from customer_profile').fetchall()[0][0] == n]
    assert "profile_key" in keys
    other_values = " union ".join(f'select cast("{c}" as varchar) as v from "{t}"'
                                  for t, cols in tables.items() if t != "customer_profile" for c in cols)
    for column in keys:
        hits = con.execute(f'select count(*) from customer_profile where cast("{column}" as varchar) in '
                           f"(select v from ({other_values}) where v is not null)").fetchall()[0][0]
        assert hits == 0, f"customer_profile.{column} shares {hits} values with other serving tables"
    identities = "select customer_id as v from customer_scores union select customer_key from customer_scores"
    for column in profile:
        hits = con.execute(f'select count(*) from customer_profile where cast("{column}" as varchar) in '
                           f"(select v from ({identities}))").fetchall()[0][0]
        assert hits == 0, f"customer_profile.{column} holds customer ids or keys"
    # the warehouse knows both pseudonyms of every customer; they are never the same
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as wh:
        same = wh.execute("select count(*) from ops.customer_pseudonyms p join ops.customer_pseudonyms q "
                          "on p.profile_key = q.customer_key").fetchall()[0][0]
    assert same == 0
