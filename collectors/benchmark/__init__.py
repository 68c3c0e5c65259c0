"""The built-in benchmark: rendered OCR, chart, math and general images with their questions and gold
answers, deterministic for a seed.

`spec` holds the scene record and limits, `drawing` the fonts and text helpers, `factors` the hidden
visual factors, `sampling` what every sampler shares; `ocr`, `chart`, `math_items` and `general` sample and
render one task group each, and `generator` ties them together (`sample_query`, `generate_benchmark`).

May import: `collectors.scoring`, `warehouse`.
"""
