"""Seeded synthetic recommender data with planted, documented structure.

Real logs cannot be shipped with the repo and do not tell us what a model *should*
learn, so this module fabricates users, a hierarchical catalogue and an impression
log whose click/purchase/dwell behaviour follows known formulas (see docs/data.md).
Everything is vectorised numpy so 10M impressions take seconds, and one seed fixes
every table bit for bit.

Run ``python -m recflow.datasets.synthetic --help`` to (re)generate the parquet files.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "AGE_GROUPS",
    "DEVICES",
    "GENDERS",
    "ITEM_CROSS_FIELDS",
    "REGIONS",
    "TAXONOMY",
    "USER_CROSS_FIELDS",
    "GeneratorConfig",
    "GroundTruth",
    "RawTables",
    "generate",
    "main",
    "oracle_auc",
    "true_affinity",
    "write_parquet",
    "write_shards",
]

START_TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = ("f", "m", "x")
REGIONS = ("north", "south", "east", "west", "central", "coastal", "mountain", "islands")
DEVICES = ("ios", "android", "web")

# Catalogue hierarchy: category, then "subcategory: nouns | adjectives". Titles are built
# from these words so that text similarity between titles tracks closeness in the hierarchy.
_TAXONOMY_SPEC = """
electronics
  audio: headphones earbuds speaker soundbar | wireless noise-cancelling bass hifi
  phones: smartphone phone charger case | unlocked 5g dual-sim rugged
  computers: laptop notebook monitor keyboard | ultrathin gaming 16-inch touchscreen
  cameras: camera lens tripod camcorder | mirrorless 4k zoom compact
  wearables: smartwatch tracker band ring | fitness waterproof gps slim
fashion
  shoes: sneakers boots sandals loafers | leather canvas comfort slip-on
  dresses: dress gown sundress skirt | floral midi evening linen
  outerwear: jacket coat parka raincoat | insulated hooded quilted windproof
  accessories: belt scarf wallet sunglasses | silk classic polarized vintage
  menswear: shirt chinos blazer polo | slim-fit cotton tailored oxford
home
  furniture: sofa armchair bookshelf desk | oak modular upholstered compact
  kitchen: skillet knife blender kettle | nonstick stainless cast-iron electric
  bedding: duvet pillow sheets blanket | cotton king-size hypoallergenic weighted
  lighting: lamp pendant bulb lantern | dimmable led smart brass
  decor: vase mirror rug frame | ceramic handwoven rustic minimalist
beauty
  skincare: serum moisturizer cleanser sunscreen | hydrating vitamin-c spf50 gentle
  makeup: lipstick mascara foundation palette | matte waterproof longwear shimmer
  haircare: shampoo conditioner dryer straightener | argan volumizing ionic sulfate-free
  fragrance: perfume cologne mist candle | floral woody citrus musky
sports
  fitness: dumbbells kettlebell mat bench | adjustable rubber foldable heavy-duty
  cycling: bike helmet saddle pump | carbon aero gravel lightweight
  running: shoes shorts vest socks | breathable trail cushioned reflective
  outdoor: tent backpack sleeping-bag stove | ultralight 4-season hiking waterproof
  team: football basketball jersey goal | official match training indoor
books
  fiction: novel thriller saga mystery | bestselling paperback award-winning gripping
  nonfiction: biography history memoir guide | illustrated definitive hardcover essential
  children: picture-book storybook fairytale board-book | bedtime colorful rhyming interactive
  comics: graphic-novel manga comic anthology | collected deluxe volume omnibus
toys
  building: bricks blocks kit set | creative starter technic magnetic
  dolls: doll dollhouse figure plush | fashion collectible soft talking
  puzzles: puzzle jigsaw cube maze | 1000-piece wooden 3d brain-teaser
  games: boardgame cardgame dice chess | family strategy party cooperative
grocery
  snacks: chips cookies nuts bar | salted organic crunchy protein
  beverages: juice soda tea water | sparkling cold-pressed herbal zero-sugar
  coffee: beans espresso ground-coffee capsules | dark-roast single-origin arabica decaf
  pantry: pasta rice olive-oil sauce | whole-grain extra-virgin italian basmati
garden
  tools: shovel pruner rake hose | ergonomic steel expandable cordless
  plants: seeds bulbs succulent sapling | perennial heirloom flowering evergreen
  patio: grill parasol lounger firepit | outdoor weatherproof teak portable
automotive
  parts: brake-pads filter battery spark-plug | oem performance ceramic long-life
  care: wax polish shampoo microfiber | ceramic detailing foam scratch-free
  gadgets: dashcam phone-mount jump-starter inflator | 1080p magnetic portable digital
pets
  dogs: kibble leash dog-bed chew-toy | grain-free orthopedic durable retractable
  cats: litter scratcher cat-tree cat-food | clumping sisal indoor salmon
  aquarium: tank filter heater fish-food | freshwater led submersible tropical
gaming
  consoles: console handheld bundle dock | next-gen portable 1tb limited-edition
  videogames: rpg shooter racing-game platformer | open-world multiplayer remastered co-op
  peripherals: controller headset mouse keyboard | rgb mechanical wireless pro
  pc-gaming: graphics-card gaming-chair ssd cooler | overclocked ergonomic nvme liquid
"""


def _parse_taxonomy(spec: str) -> dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Parse ``_TAXONOMY_SPEC`` (kept as text so the vocabulary stays readable)."""
    tree: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    current: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for line in spec.strip().splitlines():
        if not line.startswith(" "):
            current = tree.setdefault(line.strip(), {})
            continue
        name, words = line.strip().split(":")
        nouns, adjectives = words.split("|")
        current[name] = (tuple(nouns.split()), tuple(adjectives.split()))
    return tree


# category -> subcategory -> (nouns, adjectives)
TAXONOMY = _parse_taxonomy(_TAXONOMY_SPEC)
# the attributes a planted feature cross may pair (GeneratorConfig.attribute_crosses)
USER_CROSS_FIELDS = ("age_group", "gender", "region", "device")
ITEM_CROSS_FIELDS = ("category", "subcategory", "brand")

_SYLLABLES = (
    "ac ar ba bel bo ca cor da del dor el en fa fin ga gor ha hel ix ka kin la lum ma mer "
    "mo na nex no or pa pix qu ra ri ro sa sol ta tek tor ul va vel vo xa zen zo"
).split()


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes, seed and every knob of the planted structure (defaults documented in docs/data.md)."""

    n_users: int = 3000
    n_items: int = 5000
    n_impressions: int = 200_000
    seed: int = 42
    days: int = 60
    # catalogue
    min_brands: int = 2
    max_brands: int = 8
    price_subcategory_std: float = 0.5  # log-price spread of subcategory levels within a category
    price_brand_std: float = 0.35  # brand premium/discount on log price
    price_item_std: float = 0.25  # item noise on log price
    # popularity (Zipf over a random item ranking)
    zipf_exponent: float = 1.0
    pop_click_weight: float = 0.25  # logit per std of log popularity
    item_quality_std: float = 0.6  # per-item logit intercept
    # catalogue launches: new items appear late, get a novelty exposure channel (cold start)
    new_item_share: float = 0.1  # share of items released during the window (others at start)
    new_item_window: float = 0.3  # new items launch uniformly in the last 30% of the window
    new_arrival_share: float = 0.08  # impressions drawn from the session subcategory's launches
    novelty_days: float = 7.0  # ... among items launched at most this many days before
    user_bias_std: float = 0.6  # per-user logit intercept
    # user -> category affinity
    affinity_concentration: float = 0.25  # Dirichlet alpha per category (small => sparse)
    subcategory_concentration: float = 1.0  # Dirichlet alpha over subcategories within a category
    age_category_shift: float = 0.6  # log-std of per-(age_group, category) prior multipliers
    gender_category_shift: float = 0.3  # log-std of per-(gender, category) prior multipliers
    affinity_click_weight: float = 1.0  # logit per unit of log1p(C * affinity)
    # sessions / exposure policy
    mean_session_length: float = 20.0  # geometric number of impressions per session
    mean_gap_seconds: float = 30.0  # exponential gap between impressions of a session
    min_session_gap_seconds: int = 1800  # idle time separating a user's sessions
    user_activity_std: float = 0.8  # log-normal spread of sessions per user
    session_share: float = 0.35  # share of impressions drawn from the session subcategory
    affinity_share: float = 0.25  # share drawn from a category sampled from user affinity
    session_click_weight: float = 2.0  # logit boost for items in the session subcategory
    # base click rate and attributes
    base_click_logit: float = -5.8
    device_click_offsets: tuple[float, ...] = (0.2, 0.0, -0.3)  # aligned with DEVICES
    # feature crosses: (user attribute, item attribute, rms) -> a click-logit table over the
    # pairs of values, double-centred (no main effect: a pure interaction) and scaled to rms
    attribute_crosses: tuple[tuple[str, str, float], ...] = (
        ("age_group", "category", 0.3),
        ("gender", "subcategory", 0.3),
        ("device", "category", 0.2),
        ("region", "brand", 0.2),
    )
    price_category_std: float = 0.3  # click logit += tau_c * z_c(log price), tau centred
    # price sensitivity s_u in [0, 1]
    sensitivity_beta: tuple[float, float] = (2.0, 2.0)
    age_sensitivity_shift: float = 0.15  # youngest +shift, oldest -shift, linear in between
    price_click_weight: float = 0.5  # click logit -= w * s_u * z(log price)
    price_purchase_weight: float = 1.5  # purchase logit -= w * s_u * z(log price)
    # purchase | click
    base_purchase_logit: float = -3.1
    quality_purchase_weight: float = 0.5  # share of the item quality intercept reused
    affinity_purchase_weight: float = 0.6
    session_purchase_weight: float = 0.4
    # dwell | click (seconds, log-normal)
    dwell_log_mean: float = 2.7  # exp(2.7) ~ 15 s
    dwell_affinity_weight: float = 0.35
    dwell_session_weight: float = 0.3
    dwell_purchase_weight: float = 0.8
    dwell_sigma: float = 0.7

    def __post_init__(self) -> None:
        n_sub = sum(len(s) for s in TAXONOMY.values())
        if self.n_users < 1 or self.n_impressions < 1:
            raise ValueError("n_users and n_impressions must be positive")
        if self.n_items < n_sub:
            raise ValueError(f"n_items must be >= {n_sub} so every subcategory has an item")
        if not 0 <= self.session_share + self.affinity_share + self.new_arrival_share <= 1:
            raise ValueError(
                "session_share + affinity_share + new_arrival_share must lie in [0, 1]"
            )
        if not (0 <= self.new_item_share < 1 and 0 < self.new_item_window <= 1):
            raise ValueError("new_item_share must lie in [0, 1) and new_item_window in (0, 1]")
        if len(self.device_click_offsets) != len(DEVICES):
            raise ValueError(f"device_click_offsets needs {len(DEVICES)} values")
        if not 1 <= self.min_brands <= self.max_brands:
            raise ValueError("need 1 <= min_brands <= max_brands")
        for cross in self.attribute_crosses:
            if len(cross) != 3 or cross[0] not in USER_CROSS_FIELDS or \
                    cross[1] not in ITEM_CROSS_FIELDS or not cross[2] >= 0:
                raise ValueError(
                    f"attribute_crosses entries are (user field in {USER_CROSS_FIELDS}, item "
                    f"field in {ITEM_CROSS_FIELDS}, rms >= 0); got {cross!r}")
        if not self.price_category_std >= 0:
            raise ValueError("price_category_std must be >= 0")


@dataclass
class GroundTruth:
    """Latent variables behind the log, so tests and docs can measure the planted signal.

    User-indexed arrays have row ``user_id - 1``; impression arrays align with the
    rows of ``RawTables.interactions``.
    """

    categories: tuple[str, ...]
    subcategories: tuple[str, ...]
    affinity: np.ndarray  # (n_users, n_categories), rows sum to 1
    subcategory_preference: np.ndarray  # (n_users, n_subcategories), sums to 1 per category
    price_sensitivity: np.ndarray  # (n_users,)
    session_id: np.ndarray  # (n_impressions,) int64
    session_subcategory: np.ndarray  # (n_impressions,) index into ``subcategories``
    click_logit: np.ndarray  # (n_impressions,) the true click logit
    purchase_logit: np.ndarray  # (n_impressions,) the true purchase-given-click logit
    # (n_impressions,) the planted feature crosses' share of ``click_logit``: the attribute
    # crosses plus the price x category term
    cross_logit: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # "user_field x item_field" -> (n user values, n item values) click-logit table, rows and
    # columns in the order of AGE_GROUPS / GENDERS / REGIONS / DEVICES and categories /
    # subcategories / brands (``brands``)
    cross_tables: dict[str, np.ndarray] = field(default_factory=dict)
    price_category_slope: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n_cat,)
    brands: tuple[str, ...] = ()


@dataclass
class RawTables:
    """The three raw tables; ``truth`` carries latents (not written to parquet)."""

    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    truth: GroundTruth | None = field(default=None, repr=False)


def _categories() -> tuple[list[str], list[str], np.ndarray]:
    """Category names, global subcategory names and each subcategory's category index."""
    cats = list(TAXONOMY)
    subs: list[str] = []
    sub_cat: list[int] = []
    for c, (cat, children) in enumerate(TAXONOMY.items()):
        for sub in children:
            subs.append(f"{cat}/{sub}")
            sub_cat.append(c)
    return cats, subs, np.asarray(sub_cat, dtype=np.int64)


def _rngs(seed: int) -> list[np.random.Generator]:
    """Independent streams so the catalogue and users do not depend on the log size.

    Catalogue, users, log, then the feature-cross tables (spawned fourth, so adding that
    stream left the first three as they were).
    """
    return np.random.default_rng(seed).spawn(4)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct pronounceable brand names (globally unique)."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        k = 2 if rng.random() < 0.6 else 3
        name = "".join(rng.choice(_SYLLABLES, size=k)).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _make_items(config: GeneratorConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Catalogue with hierarchy, brands, prices and titles, plus per-item latents."""
    cats, subs, sub_cat = _categories()
    n_sub, n = len(subs), config.n_items

    # Brands: 2-8 per subcategory, each with a log-price premium.
    n_brands = rng.integers(config.min_brands, config.max_brands + 1, size=n_sub)
    brand_sub = np.repeat(np.arange(n_sub), n_brands)
    brand_names = np.asarray(_brand_names(rng, int(n_brands.sum())), dtype=object)
    brand_premium = rng.normal(0.0, config.price_brand_std, size=brand_sub.size)
    brand_offset = np.concatenate([[0], np.cumsum(n_brands)[:-1]])

    # Subcategory sizes are uneven; every subcategory gets at least one item.
    sub_weight = rng.dirichlet(np.full(n_sub, 2.0))
    item_sub = np.concatenate([np.arange(n_sub), rng.choice(n_sub, size=n - n_sub, p=sub_weight)])
    item_sub = item_sub[rng.permutation(n)]
    item_brand = brand_offset[item_sub] + rng.integers(0, n_brands[item_sub])

    # Log price = category level + subcategory level + brand premium + noise.
    cat_level = rng.uniform(np.log(8.0), np.log(400.0), size=len(cats))
    sub_level = cat_level[sub_cat] + rng.normal(0.0, config.price_subcategory_std, size=n_sub)
    log_price = (
        sub_level[item_sub] + brand_premium[item_brand] + rng.normal(0.0, config.price_item_std, n)
    )
    price = np.maximum(np.round(np.exp(log_price), 2), 0.01)

    # Titles: brand + adjective + noun + subcategory + category + model number.
    adj_idx = rng.integers(0, 1 << 30, size=n)  # taken modulo each vocabulary's length
    noun_idx = rng.integers(0, 1 << 30, size=n)
    model_no = rng.integers(100, 1000, size=n)
    sub_short = [s.split("/")[1] for s in subs]
    vocab = [TAXONOMY[cats[sub_cat[s]]][sub_short[s]] for s in range(n_sub)]
    titles = [
        f"{brand_names[b]} {vocab[s][1][a % len(vocab[s][1])]} {vocab[s][0][w % len(vocab[s][0])]} "
        f"{sub_short[s]} {cats[sub_cat[s]]} "
        f"{brand_names[b][:2].upper()}{m}"
        for s, b, a, w, m in zip(
            item_sub.tolist(),
            item_brand.tolist(),
            adj_idx.tolist(),
            noun_idx.tolist(),
            model_no.tolist(),
            strict=True,
        )
    ]

    # Zipf popularity over a random ranking; quality is a separate per-item intercept.
    rank = rng.permutation(n) + 1
    popularity = rank.astype(np.float64) ** -config.zipf_exponent
    quality = rng.normal(0.0, config.item_quality_std, size=n)
    # Launch time (seconds from the window start): 0 for the initial catalogue.
    span = config.days * 86_400
    is_new = rng.random(n) < config.new_item_share
    release = np.zeros(n, dtype=np.int64)
    release[is_new] = rng.integers(int(span * (1 - config.new_item_window)), span,
                                   size=int(is_new.sum()))

    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1, dtype=np.int64),
            "category": pd.array(np.asarray(cats, dtype=object)[sub_cat[item_sub]], dtype=str),
            "subcategory": pd.array(np.asarray(subs, dtype=object)[item_sub], dtype=str),
            "brand": pd.array(brand_names[item_brand], dtype=str),
            "price": price.astype(np.float64),
            "title": pd.array(titles, dtype=str),
        }
    )
    log_p = np.log(price)
    item_cat = sub_cat[item_sub]
    cat_n = np.bincount(item_cat, minlength=len(cats))
    cat_mean = np.bincount(item_cat, log_p, minlength=len(cats)) / np.maximum(cat_n, 1)
    dev = log_p - cat_mean[item_cat]
    cat_sd = np.sqrt(np.bincount(item_cat, dev**2, minlength=len(cats)) / np.maximum(cat_n, 1))
    latents = {
        "sub": item_sub,
        "cat": item_cat,
        "brand": item_brand,
        "brand_names": tuple(brand_names.tolist()),
        "z_price_cat": dev / np.where(cat_sd > 0, cat_sd, 1.0)[item_cat],  # within category
        "popularity": popularity,
        "z_pop": (np.log(popularity) - np.log(popularity).mean()) / np.log(popularity).std(),
        "z_price": (log_p - log_p.mean()) / log_p.std(),
        "quality": quality,
        "release": release,
    }
    return items, latents


def _make_users(config: GeneratorConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Users with attributes, category affinities, subcategory tastes and price sensitivity."""
    cats, subs, sub_cat = _categories()
    n, n_cat = config.n_users, len(cats)
    age = rng.choice(len(AGE_GROUPS), size=n, p=[0.14, 0.24, 0.22, 0.18, 0.13, 0.09])
    gender = rng.choice(len(GENDERS), size=n, p=[0.49, 0.47, 0.04])
    region = rng.choice(len(REGIONS), size=n, p=rng.dirichlet(np.full(len(REGIONS), 5.0)))
    device = rng.choice(len(DEVICES), size=n, p=[0.38, 0.42, 0.20])

    # Dirichlet-sparse affinities whose prior is tilted by age group and gender.
    age_mult = np.exp(rng.normal(0.0, config.age_category_shift, size=(len(AGE_GROUPS), n_cat)))
    gen_mult = np.exp(rng.normal(0.0, config.gender_category_shift, size=(len(GENDERS), n_cat)))
    prior = age_mult[age] * gen_mult[gender]
    prior *= n_cat / prior.sum(axis=1, keepdims=True)
    g = rng.gamma(config.affinity_concentration * prior)
    g[g.sum(axis=1) == 0, :] = 1.0  # all-underflow rows (vanishingly rare) -> uniform
    affinity = g / g.sum(axis=1, keepdims=True)

    # Within-category subcategory tastes (Dirichlet per category).
    h = rng.gamma(config.subcategory_concentration, size=(n, len(subs)))
    totals = np.zeros((n, n_cat))
    np.add.at(totals.T, sub_cat, h.T)
    sub_pref = h / totals[:, sub_cat]

    a, b = config.sensitivity_beta
    age_shift = config.age_sensitivity_shift * (1.0 - 2.0 * age / (len(AGE_GROUPS) - 1))
    sensitivity = np.clip(rng.beta(a, b, size=n) + age_shift, 0.0, 1.0)

    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "age_group": pd.array(np.asarray(AGE_GROUPS, dtype=object)[age], dtype=str),
            "gender": pd.array(np.asarray(GENDERS, dtype=object)[gender], dtype=str),
            "region": pd.array(np.asarray(REGIONS, dtype=object)[region], dtype=str),
            "device": pd.array(np.asarray(DEVICES, dtype=object)[device], dtype=str),
        }
    )
    latents = {
        "affinity": affinity,
        "sub_pref": sub_pref,
        "sensitivity": sensitivity,
        "age_group": age,
        "gender": gender,
        "region": region,
        "device": device,
        "bias": rng.normal(0.0, config.user_bias_std, size=n),
        "activity": rng.lognormal(0.0, config.user_activity_std, size=n),
    }
    return users, latents


def _make_crosses(config: GeneratorConfig, il: dict, rng: np.random.Generator) -> dict:
    """The planted feature-cross tables and per-category price slopes (their own stream).

    Each (user field, item field, rms) table is drawn N(0, 1), double-centred (every row and
    column averages 0, so neither field alone carries it) and scaled to root-mean-square
    ``rms``; the price slopes are centred over the categories and scaled to std
    ``price_category_std``. Only the configured crosses draw, each from its own child stream.
    """
    sizes = {"age_group": len(AGE_GROUPS), "gender": len(GENDERS), "region": len(REGIONS),
             "device": len(DEVICES), "category": len(TAXONOMY),
             "subcategory": sum(len(s) for s in TAXONOMY.values()),
             "brand": len(il["brand_names"])}
    streams = rng.spawn(len(config.attribute_crosses) + 1)
    tables: dict[str, np.ndarray] = {}
    for (user_field, item_field, rms), stream in zip(
            config.attribute_crosses, streams, strict=False):
        t = stream.normal(0.0, 1.0, size=(sizes[user_field], sizes[item_field]))
        t = t - t.mean(axis=0, keepdims=True) - t.mean(axis=1, keepdims=True) + t.mean()
        norm = np.sqrt(np.mean(t**2))
        key = f"{user_field} x {item_field}"
        tables[key] = tables.get(key, 0.0) + (rms / norm * t if norm > 0 else t)
    slope = streams[-1].normal(0.0, 1.0, size=len(TAXONOMY))
    slope -= slope.mean()
    slope *= config.price_category_std / max(slope.std(), 1e-12)
    return {"tables": tables, "price_slope": slope}


def _cross_logit(crosses: dict, ul: dict, il: dict, user: np.ndarray,
                 item: np.ndarray) -> np.ndarray:
    """Sum of the planted crosses for each (user, item) impression."""
    item_index = {"category": il["cat"], "subcategory": il["sub"], "brand": il["brand"]}
    out = crosses["price_slope"][il["cat"][item]] * il["z_price_cat"][item]
    for key, table in crosses["tables"].items():
        user_field, item_field = key.split(" x ")
        out += table[ul[user_field][user], item_index[item_field][item]]
    return out


def _draw_rows(probs: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per entry of ``rows`` from ``probs[row]``, without a Python loop.

    Offsetting each row's CDF by its row index makes the flattened CDF monotone, so a
    single ``searchsorted`` serves every row.
    """
    n_rows, k = probs.shape
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + rng.random(rows.size), side="right")
    return np.clip(pos - rows * k, 0, k - 1)


def _draw_in_ranges(
    cum: np.ndarray, start: np.ndarray, end: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Weighted draw of a position in ``[start, end)`` given the global weight cumsum."""
    cum0 = np.concatenate([[0.0], cum])
    lo, hi = cum0[start], cum0[end]
    pos = np.searchsorted(cum, lo + rng.random(start.size) * (hi - lo), side="right")
    return np.clip(pos, start, end - 1)


def _make_log(
    config: GeneratorConfig, ul: dict, il: dict, crosses: dict, rng: np.random.Generator
) -> tuple[pd.DataFrame, GroundTruth]:
    """Sessions, exposure policy and click/purchase/dwell outcomes for every impression."""
    cats, subs, sub_cat = _categories()
    n_imp, n_users, n_cat = config.n_impressions, config.n_users, len(cats)

    # --- sessions: geometric lengths, owner by activity, interest subcategory by taste.
    p_len = 1.0 / max(config.mean_session_length, 1.0)
    lengths = rng.geometric(p_len, size=int(n_imp * p_len * 1.2) + 16)
    while lengths.sum() < n_imp:
        lengths = np.concatenate([lengths, rng.geometric(p_len, size=lengths.size)])
    ends = np.cumsum(lengths)
    n_sess = int(np.searchsorted(ends, n_imp)) + 1
    lengths = lengths[:n_sess].copy()
    lengths[-1] -= ends[n_sess - 1] - n_imp
    sess_user = rng.choice(n_users, size=n_sess, p=ul["activity"] / ul["activity"].sum())
    joint = ul["affinity"][:, sub_cat] * ul["sub_pref"]  # p(subcategory | user)
    sess_sub = _draw_rows(joint, sess_user, rng)

    # Impression -> session; within-session offsets are cumulative gaps of >= 1 s.
    sess_of = np.repeat(np.arange(n_sess), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gaps = 1 + np.floor(rng.exponential(config.mean_gap_seconds, size=n_imp)).astype(np.int64)
    gaps[first] = 0
    csum = np.cumsum(gaps)
    offset = csum - csum[first][sess_of]
    duration = offset[first + lengths - 1]

    # Session starts: uniform over the window, then pushed so a user's sessions never overlap:
    # s'_i = max(s_i, s'_{i-1} + dur_{i-1} + gap) == D_i + cummax_j(s_j - D_j) per user.
    span = config.days * 86_400
    raw_start = rng.integers(0, span, size=n_sess)
    order = np.lexsort((raw_start, sess_user))
    u_sorted, s_sorted = sess_user[order], raw_start[order]
    step = duration[order] + config.min_session_gap_seconds
    cstep = np.cumsum(step) - step
    new_user = np.r_[True, u_sorted[1:] != u_sorted[:-1]]
    d = cstep - np.maximum.accumulate(np.where(new_user, cstep, 0))
    big = np.int64(1) << np.int64(40)
    key = (s_sorted - d) + u_sorted.astype(np.int64) * big
    start_sorted = np.maximum.accumulate(key) - u_sorted.astype(np.int64) * big + d
    sess_start = np.empty(n_sess, dtype=np.int64)
    sess_start[order] = start_sorted
    timestamp = sess_start[sess_of] + offset
    del gaps, csum, offset

    # Sort by time now (ties by session; the key is unique since timestamps rise strictly
    # within a session) so every later per-impression array is born in log order.
    o = np.argsort(timestamp * np.int64(n_sess) + sess_of)
    sess_of = sess_of[o]
    timestamp = START_TIMESTAMP + timestamp[o]
    del o
    user = sess_user[sess_of]
    imp_sub = sess_sub[sess_of]

    # --- exposure policy: session subcategory / affinity category / global popularity.
    n_items = il["sub"].size
    by_sub = np.argsort(il["sub"], kind="stable")  # subcategories are grouped by category
    cum = np.cumsum(il["popularity"][by_sub])
    sub_bounds = np.searchsorted(il["sub"][by_sub], np.arange(len(subs) + 1))
    cat_first_sub = np.searchsorted(sub_cat, np.arange(n_cat + 1))
    cat_bounds = sub_bounds[cat_first_sub]

    src = rng.random(n_imp)
    lo = np.zeros(n_imp, dtype=np.int64)  # each impression's draw range in `by_sub` order
    hi = np.full(n_imp, n_items, dtype=np.int64)
    m = src < config.session_share
    lo[m], hi[m] = sub_bounds[imp_sub[m]], sub_bounds[imp_sub[m] + 1]
    m = (src >= config.session_share) & (src < config.session_share + config.affinity_share)
    c = _draw_rows(ul["affinity"], user[m], rng)
    lo[m], hi[m] = cat_bounds[c], cat_bounds[c + 1]
    arrival = (src >= config.session_share + config.affinity_share) & (
        src < config.session_share + config.affinity_share + config.new_arrival_share)
    lo[arrival], hi[arrival] = sub_bounds[imp_sub[arrival]], sub_bounds[imp_sub[arrival] + 1]
    item = by_sub[np.minimum(_draw_in_ranges(cum, lo, hi, rng), n_items - 1)]
    # Items cannot be shown before their launch: redraw from the same range until launched.
    t_rel = timestamp - START_TIMESTAMP
    for _ in range(50):
        early = np.flatnonzero(il["release"][item] > t_rel)
        if not early.size:
            break
        item[early] = by_sub[np.minimum(_draw_in_ranges(cum, lo[early], hi[early], rng),
                                        n_items - 1)]
    early = il["release"][item] > t_rel
    if early.any():  # a range with no launched item yet: the most popular launched item
        launched = il["release"] <= t_rel[early][:, None]
        item[early] = np.argmax(np.where(launched, il["popularity"], -1.0), axis=1)
    # New-arrival channel: a uniform pick among the session subcategory's recent launches.
    fresh = np.flatnonzero(il["release"] > 0)
    if fresh.size and arrival.any():
        key_of = il["sub"][fresh].astype(np.int64) * (np.int64(1) << 40) + il["release"][fresh]
        order_f = np.argsort(key_of)
        keys, fresh = key_of[order_f], fresh[order_f]
        rows = np.flatnonzero(arrival)
        base = imp_sub[rows].astype(np.int64) * (np.int64(1) << 40)
        novelty = int(config.novelty_days * 86_400)
        a = np.searchsorted(keys, base + t_rel[rows] - novelty, side="left")
        b = np.searchsorted(keys, base + t_rel[rows], side="right")
        has = b > a
        pick = a + np.floor(rng.random(rows.size) * np.maximum(b - a, 1)).astype(np.int64)
        item[rows[has]] = fresh[pick[has]]
    del src, m, c, lo, hi, arrival

    # --- outcomes.
    aff = np.log1p(n_cat * ul["affinity"][user, il["cat"][item]])
    match = (il["sub"][item] == imp_sub).astype(np.float64)
    sens_price = ul["sensitivity"][user] * il["z_price"][item]
    offsets = np.asarray(config.device_click_offsets, dtype=np.float64)
    cross_logit = _cross_logit(crosses, ul, il, user, item)
    click_logit = (
        config.base_click_logit
        + offsets[ul["device"][user]]
        + ul["bias"][user]
        + il["quality"][item]
        + config.pop_click_weight * il["z_pop"][item]
        + config.affinity_click_weight * aff
        + config.session_click_weight * match
        - config.price_click_weight * sens_price
        + cross_logit
    )
    click = rng.random(n_imp) < _sigmoid(click_logit)
    purchase_logit = (
        config.base_purchase_logit
        + config.quality_purchase_weight * il["quality"][item]
        + config.affinity_purchase_weight * aff
        + config.session_purchase_weight * match
        - config.price_purchase_weight * sens_price
    )
    purchase = click & (rng.random(n_imp) < _sigmoid(purchase_logit))
    log_dwell = (
        config.dwell_log_mean
        + config.dwell_affinity_weight * aff
        + config.dwell_session_weight * match
        + config.dwell_purchase_weight * purchase
        + rng.normal(0.0, config.dwell_sigma, size=n_imp)
    )
    dwell = np.where(click, np.round(np.exp(log_dwell), 1), 0.0)
    del aff, match, sens_price, log_dwell

    interactions = pd.DataFrame(
        {
            "user_id": (user + 1).astype(np.int64),
            "item_id": (item + 1).astype(np.int64),
            "timestamp": timestamp.astype(np.int64),
            "dwell": dwell.astype(np.float64),
            "click": click.astype(np.int64),
            "purchase": purchase.astype(np.int64),
        }
    )
    truth = GroundTruth(
        categories=tuple(cats),
        subcategories=tuple(subs),
        affinity=ul["affinity"],
        subcategory_preference=ul["sub_pref"],
        price_sensitivity=ul["sensitivity"],
        session_id=sess_of.astype(np.int64),
        session_subcategory=imp_sub,
        click_logit=click_logit,
        purchase_logit=purchase_logit,
        cross_logit=cross_logit,
        cross_tables=crosses["tables"],
        price_category_slope=crosses["price_slope"],
        brands=il["brand_names"],
    )
    return interactions, truth


def generate(config: GeneratorConfig) -> RawTables:
    """Build users, items and the impression log; identical output for identical config."""
    rng_items, rng_users, rng_log, rng_crosses = _rngs(config.seed)
    items, il = _make_items(config, rng_items)
    users, ul = _make_users(config, rng_users)
    crosses = _make_crosses(config, il, rng_crosses)
    interactions, truth = _make_log(config, ul, il, crosses, rng_log)
    return RawTables(users=users, items=items, interactions=interactions, truth=truth)


def oracle_auc(tables: RawTables, from_quantile: float = 0.0) -> float:
    """Click AUC of the true click probability: the ceiling any model can reach.

    ``from_quantile`` keeps the rows at or after that timestamp quantile (0.9: the default
    temporal test split, ``preprocessing.split.test_start``); 0 scores the whole log.
    """
    if tables.truth is None:
        raise ValueError("tables carry no ground truth")
    inter = tables.interactions
    ts = inter["timestamp"].to_numpy()
    keep = ts >= np.quantile(ts, from_quantile) if from_quantile > 0 else np.ones(ts.size, bool)
    y = inter["click"].to_numpy()[keep].astype(bool)
    ranks = pd.Series(tables.truth.click_logit[keep]).rank().to_numpy()  # ties: mean rank
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")  # undefined without both clicks and non-clicks
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def true_affinity(config: GeneratorConfig) -> np.ndarray:
    """Ground-truth user x category affinity (row ``user_id - 1``, columns ``TAXONOMY`` order).

    Cheap: users come from their own random stream, so no log is generated.
    """
    _, rng_users, _, _ = _rngs(config.seed)
    return _make_users(config, rng_users)[1]["affinity"]


def write_parquet(
    tables: RawTables, out_dir: str | Path, compression: str = "zstd"
) -> dict[str, Path]:
    """Write the three tables as ``<name>.parquet`` under ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in ("users", "items", "interactions"):
        path = out / f"{name}.parquet"
        getattr(tables, name).to_parquet(path, index=False, compression=compression)
        paths[name] = path
    return paths


def write_shards(
    config: GeneratorConfig,
    out_dir: str | Path,
    days_per_shard: int = 1,
    compression: str = "zstd",
) -> dict[str, Any]:
    """Users, items and a log of ``config.n_impressions`` as time-ordered parquet shards.

    The log is generated one window of ``days_per_shard`` days at a time (its own
    seeded stream per window), so peak memory follows the shard, not the log; rows
    whose session runs past a window's end move to the next shard, so shard k's
    last timestamp is below shard k+1's first (what streaming preprocessing needs).
    Sessions of one user never overlap within a window; across windows they may.
    Layout: ``users.parquet``, ``items.parquet``, ``interactions/part-NNNNN.parquet``.
    """
    if days_per_shard < 1:
        raise ValueError(f"days_per_shard must be >= 1, got {days_per_shard}")
    out = Path(out_dir)
    shard_dir = out / "interactions"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob("part-*.parquet"):
        stale.unlink()
    rng_items, rng_users, rng_log, rng_crosses = _rngs(config.seed)
    items, il = _make_items(config, rng_items)
    users, ul = _make_users(config, rng_users)
    crosses = _make_crosses(config, il, rng_crosses)
    items.to_parquet(out / "items.parquet", index=False, compression=compression)
    users.to_parquet(out / "users.parquet", index=False, compression=compression)
    n_windows = -(-config.days // days_per_shard)
    sizes = np.full(n_windows, config.n_impressions // n_windows, dtype=np.int64)
    sizes[: config.n_impressions % n_windows] += 1
    window = days_per_shard * 86_400
    carry: pd.DataFrame | None = None
    paths, clicks, rows = [], 0, 0
    for k, (size, rng) in enumerate(zip(sizes, rng_log.spawn(n_windows), strict=True)):
        chunk = pd.DataFrame()
        if size:
            part = replace(config, n_impressions=int(size), days=days_per_shard)
            chunk, _ = _make_log(part, ul, il, crosses, rng)
            chunk["timestamp"] += k * window
        if carry is not None:
            chunk = pd.concat([carry, chunk], ignore_index=True)
            chunk = chunk.sort_values("timestamp", kind="stable", ignore_index=True)
        if k < n_windows - 1:
            late = chunk["timestamp"].to_numpy() >= START_TIMESTAMP + (k + 1) * window
            carry, chunk = chunk.loc[late], chunk.loc[~late]
        path = shard_dir / f"part-{k:05d}.parquet"
        chunk.to_parquet(path, index=False, compression=compression)
        paths.append(path)
        clicks, rows = clicks + int(chunk["click"].sum()), rows + len(chunk)
    return {"users": out / "users.parquet", "items": out / "items.parquet",
            "interactions": paths, "rows": rows, "clicks": clicks}


def main(argv: list[str] | None = None) -> int:
    """CLI: generate with the given sizes/seed and write parquet files."""
    parser = argparse.ArgumentParser(
        prog="python -m recflow.datasets.synthetic", description="Generate synthetic recommender data."
    )
    defaults = GeneratorConfig()
    parser.add_argument("--users", type=int, default=defaults.n_users)
    parser.add_argument("--items", type=int, default=defaults.n_items)
    parser.add_argument("--impressions", type=int, default=defaults.n_impressions)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", default="data/01_raw", help="output directory")
    parser.add_argument("--days-per-shard", type=int, default=None,
                        help="write the log as time-ordered shards OUT/interactions/part-*.parquet "
                             "of this many days each, generated one at a time (bounded memory)")
    args = parser.parse_args(argv)
    config = GeneratorConfig(
        n_users=args.users, n_items=args.items, n_impressions=args.impressions, seed=args.seed
    )
    if args.days_per_shard is not None:
        t0 = time.perf_counter()
        written = write_shards(config, args.out, days_per_shard=args.days_per_shard)
        sys.stdout.write(
            f"generated {written['rows']} impressions in {len(written['interactions'])} shards "
            f"in {time.perf_counter() - t0:.2f}s; click rate "
            f"{written['clicks'] / max(written['rows'], 1):.3f}\n  {Path(args.out) / 'interactions'}\n"
        )
        return 0
    t0 = time.perf_counter()
    tables = generate(config)
    t1 = time.perf_counter()
    paths = write_parquet(tables, args.out)
    t2 = time.perf_counter()
    inter = tables.interactions
    lines = [
        f"generated {len(tables.users)} users, {len(tables.items)} items, {len(inter)} "
        f"impressions in {t1 - t0:.2f}s (write {t2 - t1:.2f}s); click rate "
        f"{inter['click'].mean():.3f}, purchase/click "
        f"{inter['purchase'].sum() / max(inter['click'].sum(), 1):.3f}; oracle click AUC "
        f"{oracle_auc(tables):.3f} (whole log), {oracle_auc(tables, 0.9):.3f} (last 10%)",
        *(f"  {path}" for path in paths.values()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
