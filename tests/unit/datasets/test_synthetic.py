"""The synthetic generator: determinism, exact schemas, integrity and the planted signals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recflow.datasets.synthetic import (
    AGE_GROUPS,
    DEVICES,
    GENDERS,
    REGIONS,
    START_TIMESTAMP,
    TAXONOMY,
    GeneratorConfig,
    RawTables,
    generate,
    main,
    oracle_auc,
    true_affinity,
    write_parquet,
)

SMALL = GeneratorConfig(n_users=300, n_items=400, n_impressions=20_000, seed=7)
RAW_DIR = Path(__file__).resolve().parents[3] / "data" / "01_raw"

USER_COLUMNS = ["user_id", "age_group", "gender", "region", "device"]
ITEM_COLUMNS = ["item_id", "category", "subcategory", "brand", "price", "title"]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "dwell", "click", "purchase"]


@pytest.fixture(scope="module")
def tables() -> RawTables:
    return generate(SMALL)


@pytest.fixture(scope="module")
def log(tables: RawTables) -> pd.DataFrame:
    """Interactions joined with item attributes, user latents and the true affinity."""
    truth = tables.truth
    assert truth is not None
    items = tables.items.set_index("item_id")
    df = tables.interactions.copy()
    df["category"] = items.loc[df["item_id"], "category"].to_numpy()
    df["subcategory"] = items.loc[df["item_id"], "subcategory"].to_numpy()
    df["price"] = items.loc[df["item_id"], "price"].to_numpy()
    cat_idx = pd.Index(truth.categories).get_indexer(df["category"])
    df["affinity"] = truth.affinity[df["user_id"] - 1, cat_idx]
    df["sensitivity"] = truth.price_sensitivity[df["user_id"] - 1]
    return df


def test_same_seed_gives_identical_frames(tables: RawTables) -> None:
    again = generate(SMALL)
    for name in ("users", "items", "interactions"):
        pd.testing.assert_frame_equal(getattr(tables, name), getattr(again, name))
    np.testing.assert_array_equal(tables.truth.click_logit, again.truth.click_logit)


def test_different_seed_gives_different_frames(tables: RawTables) -> None:
    other = generate(replace(SMALL, seed=SMALL.seed + 1))
    assert not tables.interactions.equals(other.interactions)
    assert not tables.items.equals(other.items)
    assert not tables.users.equals(other.users)


def test_catalogue_and_users_do_not_depend_on_log_size(tables: RawTables) -> None:
    bigger = generate(replace(SMALL, n_impressions=SMALL.n_impressions + 1))
    pd.testing.assert_frame_equal(tables.items, bigger.items)
    pd.testing.assert_frame_equal(tables.users, bigger.users)


def test_users_schema(tables: RawTables) -> None:
    users = tables.users
    assert list(users.columns) == USER_COLUMNS
    assert users["user_id"].dtype == np.int64
    np.testing.assert_array_equal(users["user_id"], np.arange(1, SMALL.n_users + 1))
    for col in USER_COLUMNS[1:]:
        assert pd.api.types.is_string_dtype(users[col]), col
        assert users[col].notna().all(), col
    assert set(users["gender"]) <= {"f", "m", "x"}
    assert set(users["device"]) == set(DEVICES)
    assert 6 <= users["region"].nunique() <= 10
    assert users["age_group"].nunique() >= 5


def test_items_schema_and_hierarchy(tables: RawTables) -> None:
    items = tables.items
    assert list(items.columns) == ITEM_COLUMNS
    assert items["item_id"].dtype == np.int64
    np.testing.assert_array_equal(items["item_id"], np.arange(1, SMALL.n_items + 1))
    for col in ("category", "subcategory", "brand", "title"):
        assert pd.api.types.is_string_dtype(items[col]), col
    assert items["price"].dtype == np.float64
    assert (items["price"] > 0).all()

    # Every subcategory has items (n_items >= #subcategories) and nests in one category.
    assert items["category"].nunique() == len(TAXONOMY) == 12
    subs_per_cat = items.groupby("category")["subcategory"].nunique()
    assert subs_per_cat.between(3, 6).all()
    assert (items.groupby("subcategory")["category"].nunique() == 1).all()
    assert (items["subcategory"].str.split("/").str[0] == items["category"]).all()
    # Brands are globally unique: each belongs to exactly one subcategory.
    assert (items.groupby("brand")["subcategory"].nunique() == 1).all()
    brands_per_sub = items.groupby("subcategory")["brand"].nunique()
    assert brands_per_sub.between(1, SMALL.max_brands).all()
    # Titles carry the hierarchy words and the brand.
    for row in items.itertuples():
        words = row.title.split()
        assert words[0] == row.brand
        assert row.category in words
        assert row.subcategory.split("/")[1] in words


def test_price_level_depends_on_subcategory(tables: RawTables) -> None:
    log_price = np.log(tables.items["price"])
    between = log_price.groupby(tables.items["subcategory"]).transform("mean").var()
    assert between / log_price.var() > 0.5


def test_interactions_schema_and_integrity(tables: RawTables) -> None:
    inter = tables.interactions
    assert list(inter.columns) == INTERACTION_COLUMNS
    assert len(inter) == SMALL.n_impressions
    for col in ("user_id", "item_id", "timestamp", "click", "purchase"):
        assert inter[col].dtype == np.int64, col
    assert inter["dwell"].dtype == np.float64
    assert inter["user_id"].isin(tables.users["user_id"]).all()
    assert inter["item_id"].isin(tables.items["item_id"]).all()
    assert inter["timestamp"].is_monotonic_increasing
    assert inter["timestamp"].min() >= START_TIMESTAMP
    assert inter["timestamp"].max() < START_TIMESTAMP + (SMALL.days + 1) * 86_400
    assert set(inter["click"].unique()) == {0, 1}
    assert set(inter["purchase"].unique()) == {0, 1}
    assert (inter["purchase"] <= inter["click"]).all()
    assert (inter["dwell"] >= 0).all()
    assert (inter.loc[inter["click"] == 0, "dwell"] == 0).all()
    assert (inter.loc[inter["click"] == 1, "dwell"] > 0).mean() > 0.99


def test_overall_rates_in_target_band(tables: RawTables) -> None:
    inter = tables.interactions
    ctr = inter["click"].mean()
    buy_per_click = inter["purchase"].sum() / inter["click"].sum()
    assert 0.05 <= ctr <= 0.15
    assert 0.10 <= buy_per_click <= 0.30


def test_sessions_recoverable_from_timestamps(tables: RawTables) -> None:
    """A >= 30 min idle gap per user splits sessions exactly as generated."""
    inter = tables.interactions
    order = np.lexsort((inter["timestamp"].to_numpy(), inter["user_id"].to_numpy()))
    users = inter["user_id"].to_numpy()[order]
    ts = inter["timestamp"].to_numpy()[order]
    sess = tables.truth.session_id[order]
    new = np.r_[True, (users[1:] != users[:-1]) | (np.diff(ts) >= SMALL.min_session_gap_seconds)]
    np.testing.assert_array_equal(new, np.r_[True, sess[1:] != sess[:-1]])
    assert (np.diff(ts)[~new[1:]] >= 1).all()  # strictly increasing inside a session


def test_true_affinity_matches_truth(tables: RawTables) -> None:
    aff = true_affinity(SMALL)
    np.testing.assert_array_equal(aff, tables.truth.affinity)
    assert aff.shape == (SMALL.n_users, len(TAXONOMY))
    np.testing.assert_allclose(aff.sum(axis=1), 1.0)
    # Sparse: most users put the bulk of their mass on 1-3 categories.
    top3 = np.sort(aff, axis=1)[:, -3:].sum(axis=1)
    assert np.median(top3) > 0.75


def test_click_rate_rises_with_affinity(log: pd.DataFrame) -> None:
    bucket = pd.qcut(log["affinity"], 5, labels=False)
    ctr = log["click"].groupby(bucket).mean()
    assert ctr.iloc[-1] >= 2 * ctr.iloc[0]
    assert ctr.is_monotonic_increasing
    dwell = log.loc[log["click"] == 1, "dwell"].groupby(bucket[log["click"] == 1]).mean()
    assert dwell.iloc[-1] > dwell.iloc[0]


def test_previous_click_subcategory_predicts_next_click(
    tables: RawTables, log: pd.DataFrame
) -> None:
    session = pd.Series(tables.truth.session_id)
    clicked_sub = log["subcategory"].where(log["click"] == 1)
    prev_sub = clicked_sub.groupby(session).ffill().groupby(session).shift(1)
    has_prev = prev_sub.notna()
    match = has_prev & (prev_sub == log["subcategory"])
    ctr_match = log.loc[match, "click"].mean()
    ctr_other = log.loc[has_prev & ~match, "click"].mean()
    assert match.sum() > 500
    assert ctr_match > 1.8 * ctr_other
    # Beyond static affinity: compare within (user, category) strata, where affinity is fixed.
    rows = log[has_prev].assign(match=match[has_prev])
    strata = rows.groupby(["user_id", "category", "match"])["click"].agg(["mean", "size"])
    strata = strata.unstack("match").dropna()
    weight = np.minimum(strata[("size", True)], strata[("size", False)])
    ctr_in = (strata[("mean", True)] * weight).sum() / weight.sum()
    ctr_out = (strata[("mean", False)] * weight).sum() / weight.sum()
    assert len(strata) > 100
    assert ctr_in > 1.35 * ctr_out


def test_purchase_falls_with_price_for_sensitive_users(log: pd.DataFrame) -> None:
    clicks = log[log["click"] == 1]
    expensive = clicks["price"] > clicks["price"].median()
    sensitive = clicks["sensitivity"] >= clicks["sensitivity"].quantile(2 / 3)
    relaxed = clicks["sensitivity"] <= clicks["sensitivity"].quantile(1 / 3)

    def ratio(users: pd.Series) -> float:
        buy = clicks.loc[users, "purchase"].groupby(expensive[users]).mean()
        return buy[True] / buy[False]

    assert ratio(sensitive) < 0.6
    assert ratio(sensitive) < ratio(relaxed)


def test_device_offsets_enter_the_click_logit(tables: RawTables) -> None:
    shifted = generate(replace(SMALL, device_click_offsets=(1.0, 0.0, 0.0)))
    device = tables.users["device"].to_numpy()[tables.interactions["user_id"] - 1]
    delta = shifted.truth.click_logit - tables.truth.click_logit
    expected = np.select([device == "ios", device == "web"], [0.8, 0.3], 0.0)
    np.testing.assert_allclose(delta, expected, atol=1e-9)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="n_items"):
        GeneratorConfig(n_items=10)
    with pytest.raises(ValueError, match="session_share"):
        GeneratorConfig(session_share=0.8, affinity_share=0.5)
    with pytest.raises(ValueError, match="attribute_crosses"):
        GeneratorConfig(attribute_crosses=(("user_id", "category", 0.3),))
    with pytest.raises(ValueError, match="attribute_crosses"):
        GeneratorConfig(attribute_crosses=(("gender", "brand", -0.1),))
    with pytest.raises(ValueError, match="price_category_std"):
        GeneratorConfig(price_category_std=-1.0)


def test_planted_crosses_are_pure_interactions_added_to_the_click_logit(
    tables: RawTables,
) -> None:
    """Each cross table has no main effect, the documented scale, and only moves the logit."""
    truth = tables.truth
    levels = {"age_group": len(AGE_GROUPS), "gender": len(GENDERS), "region": len(REGIONS),
              "device": len(DEVICES), "category": len(TAXONOMY),
              "subcategory": len(truth.subcategories), "brand": len(truth.brands)}
    assert len(truth.cross_tables) == len(SMALL.attribute_crosses) == 4
    for user_field, item_field, rms in SMALL.attribute_crosses:
        table = truth.cross_tables[f"{user_field} x {item_field}"]
        assert table.shape == (levels[user_field], levels[item_field])
        np.testing.assert_allclose(table.mean(axis=0), 0.0, atol=1e-12)  # no item main effect
        np.testing.assert_allclose(table.mean(axis=1), 0.0, atol=1e-12)  # no user main effect
        assert np.sqrt(np.mean(table**2)) == pytest.approx(rms)
    slope = truth.price_category_slope
    assert slope.shape == (len(TAXONOMY),)
    assert slope.mean() == pytest.approx(0.0, abs=1e-12)
    assert slope.std() == pytest.approx(SMALL.price_category_std)
    # Turning the crosses off changes the click logit by exactly cross_logit and nothing
    # upstream of the outcomes: same users, items, exposure and timestamps.
    plain = generate(replace(SMALL, attribute_crosses=(), price_category_std=0.0))
    for name in ("users", "items"):
        pd.testing.assert_frame_equal(getattr(plain, name), getattr(tables, name))
    cols = ["user_id", "item_id", "timestamp"]
    pd.testing.assert_frame_equal(plain.interactions[cols], tables.interactions[cols])
    np.testing.assert_allclose(truth.click_logit - plain.truth.click_logit, truth.cross_logit,
                               atol=1e-9)
    np.testing.assert_array_equal(plain.truth.cross_logit, 0.0)
    assert 0.45 < truth.cross_logit.std() < 0.75


def test_planted_crosses_improve_a_logistic_model_over_the_raw_fields() -> None:
    """A linear model over the raw fields cannot express the crosses: the true cross term,
    given as one more input, lifts a held-out AUC clearly and gets a weight near its true 1."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    config = GeneratorConfig(n_users=1000, n_items=1000, n_impressions=60_000, seed=7)
    tables = generate(config)
    df = tables.interactions.join(tables.users.set_index("user_id"), on="user_id").join(
        tables.items.set_index("item_id"), on="item_id")
    n, y = len(df), df["click"].to_numpy()
    cut = int(0.7 * n)  # rows are in time order: train on the first 70%, score the rest

    def one_hot(column: pd.Series) -> sparse.csr_matrix:
        codes, uniques = pd.factorize(column)
        return sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, len(uniques)))

    log_price = np.log(df["price"].to_numpy())
    raw = sparse.hstack(
        [one_hot(df[c]) for c in ("user_id", "item_id", "category", "subcategory", "brand",
                                  "age_group", "gender", "region", "device")]
        + [sparse.csr_matrix(((log_price - log_price.mean()) / log_price.std())[:, None])]
    ).tocsr()
    with_cross = sparse.hstack([raw, sparse.csr_matrix(tables.truth.cross_logit[:, None])]).tocsr()

    def held_out_auc(x: sparse.csr_matrix) -> tuple[float, float]:
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x[:cut], y[:cut])
        return roc_auc_score(y[cut:], model.decision_function(x[cut:])), model.coef_[0, -1]

    auc_raw, _ = held_out_auc(raw)
    auc_cross, weight = held_out_auc(with_cross)
    assert auc_cross > auc_raw + 0.01, (auc_raw, auc_cross)
    assert 0.5 < weight < 1.2, weight


def test_oracle_auc_is_the_auc_of_the_true_click_logit(tables: RawTables) -> None:
    from sklearn.metrics import roc_auc_score

    inter = tables.interactions
    assert oracle_auc(tables) == pytest.approx(
        roc_auc_score(inter["click"], tables.truth.click_logit))
    late = inter["timestamp"] >= inter["timestamp"].quantile(0.9)
    assert oracle_auc(tables, 0.9) == pytest.approx(
        roc_auc_score(inter.loc[late, "click"], tables.truth.click_logit[late.to_numpy()]))
    # the crosses are part of the ceiling: without them the true logit ranks worse
    no_cross = tables.truth.click_logit - tables.truth.cross_logit
    assert oracle_auc(tables) > roc_auc_score(inter["click"], no_cross) + 0.01
    assert 0.8 < oracle_auc(tables) < 0.95


def test_write_parquet_round_trips(tables: RawTables, tmp_path: Path) -> None:
    paths = write_parquet(tables, tmp_path / "raw")
    assert set(paths) == {"users", "items", "interactions"}
    for name, path in paths.items():
        assert path.name == f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), getattr(tables, name))


def test_cli_writes_files(tmp_path: Path) -> None:
    argv = ["--users", "50", "--items", "60", "--impressions", "500", "--seed", "3"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    expected = generate(GeneratorConfig(n_users=50, n_items=60, n_impressions=500, seed=3))
    got = pd.read_parquet(tmp_path / "interactions.parquet")
    pd.testing.assert_frame_equal(got, expected.interactions)


@pytest.mark.skipif(
    not (RAW_DIR / "interactions.parquet").exists(), reason="default raw data not generated"
)
def test_committed_raw_data_matches_defaults() -> None:
    """data/01_raw must be exactly `python -m recflow.datasets.synthetic` with defaults."""
    expected = generate(GeneratorConfig())
    for name in ("users", "items", "interactions"):
        got = pd.read_parquet(RAW_DIR / f"{name}.parquet")
        pd.testing.assert_frame_equal(got, getattr(expected, name))


def test_launched_items_are_never_shown_before_launch_and_get_a_novelty_channel() -> None:
    """Cold start exists in the data: late launches, shown only after launch, mostly fresh."""
    config = replace(SMALL, new_item_share=0.2)
    tables = generate(config)
    log = tables.interactions
    first_seen = log.groupby("item_id")["timestamp"].min()
    span = config.days * 86_400
    late = first_seen[first_seen > START_TIMESTAMP + span * (1 - config.new_item_window)]
    # launched items first appear late in the window, and a visible share of the late log
    # goes to items that did not exist at the start
    assert len(late) > 0.05 * config.n_items
    recent = log["timestamp"] > START_TIMESTAMP + span * 0.9
    assert log.loc[recent, "item_id"].isin(late.index).mean() > 0.1
    none = generate(replace(SMALL, new_item_share=0.0, new_arrival_share=0.0)).interactions
    assert none.groupby("item_id")["timestamp"].min().gt(
        START_TIMESTAMP + span * (1 - config.new_item_window)).sum() < len(late) / 3
