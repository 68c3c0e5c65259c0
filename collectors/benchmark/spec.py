"""What a benchmark query is made of: the sampled-scene record, the size limits and the word, font and
colour pools every task group draws from.

Kept apart from the samplers so the limits that define the visual factors (text size, rotation, speckle)
are read from one place by the samplers, the factor computation and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from warehouse.vocabulary import TASK_GROUPS

GENERATOR_VERSION = "1"
DATASETS: dict[str, str] = {g: f"synth-{g}" for g in TASK_GROUPS}
MIN_SIDE, MAX_SIDE = 224, 448
MAX_ROTATION_DEG = 30.0  # rotation factor = |angle| / MAX_ROTATION_DEG
TEXT_PX_RANGE = (9, 30)  # small_text: 1 at 9 px glyph size, 0 at 30 px and above
SHAPE_PX_RANGE = (8, 30)  # small_text of shape scenes: mean shape radius
MAX_SPECKLE = 0.04  # share of pixels replaced by speckle at noise level 1
MAX_BLUR = 0.9  # Gaussian blur radius at noise level 1 (when blur is on)

FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
)

WORDS: tuple[str, ...] = tuple(
    """harbor window garden silver market rocket planet castle bridge forest candle pencil basket mirror
    button ladder tunnel island meadow jacket helmet pepper violin anchor dragon falcon ginger hammer kettle
    lantern marble napkin parrot quartz ribbon saddle temple velvet walnut yogurt zipper copper desert engine
    fabric glacier harvest insect jungle kitten lemon magnet needle oyster puzzle quiver river sunset tiger
    umbrella valley wizard cat map sky fox jam owl pen sun cup bus key ice oak elk ink fig gem hat jar kit
    log mug net pot rug tea van web yak zoo cloud stone piano trail honey storm cabin spoon""".split()
)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no O/0, I/1/l look-alikes
CATEGORY_SETS: tuple[tuple[str, ...], ...] = (
    tuple("ABCDEFGHIJKL"),
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    ("Oslo", "Rome", "Lima", "Kyiv", "Pune", "Nice", "Bonn", "Cork", "Agra", "Baku", "Doha", "Kobe"),
    ("Tea", "Jam", "Oil", "Rice", "Corn", "Milk", "Salt", "Figs", "Nuts", "Eggs", "Soap", "Wax"),
)
PIE_NAMES: tuple[str, ...] = (
    "Rent",
    "Food",
    "Travel",
    "Bills",
    "Games",
    "Books",
    "Gifts",
    "Health",
    "Sport",
    "Music",
)
CHART_TITLES: tuple[str, ...] = (
    "Sales by region",
    "Visitors per day",
    "Monthly output",
    "Survey results",
    "Units sold",
    "Orders",
    "Budget share",
    "Energy use",
)
TABLE_COLS: tuple[str, ...] = ("Apples", "Pears", "Plums", "Figs", "Limes", "Kiwis")
TABLE_ROWS: tuple[str, ...] = ("Ana", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade")
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star")
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (38, 94, 214),
    "yellow": (240, 200, 20),
    "orange": (245, 130, 20),
    "purple": (128, 60, 170),
    "brown": (125, 80, 40),
}
CHART_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
INKS: tuple[tuple[int, int, int], ...] = (
    (15, 15, 15),
    (30, 30, 90),
    (90, 20, 20),
    (20, 70, 30),
    (60, 60, 60),
)
SPATIAL_OPTIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

Params = dict[str, Any]


@dataclass
class BenchmarkItem:
    """One sampled query before rendering: question, exact answer and the scene that shows it."""

    task_group: str
    task: str
    question: str
    answer: str
    answer_kind: str
    params: Params
    distractors: list[str]
    options: list[str] | None = None
    visual: dict[str, float] = field(default_factory=dict)
