"""Reproductions: the cards (a paper's claim, its targets and their sources: cards.py), the
committed files of their runs (evidence.py), every number derived from those files and the cards
(derive.py), REPRODUCTIONS.md / README tables drawn from that (render.py) and the check that the
committed docs equal it (check.py). experiments/reproduce.py runs a card."""
