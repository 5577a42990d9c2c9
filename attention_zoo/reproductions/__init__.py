"""Reproductions: the cards (a paper's claim and its targets), the evidence derived from their
runs, and REPRODUCTIONS.md / README tables drawn from that evidence (experiments/reproduce.py
runs a card)."""
