"""The built-in benchmark: rendered OCR, chart, math and general images with their questions and gold
answers, deterministic for a seed.

May import: `collectors.scoring`, `warehouse`.
"""
