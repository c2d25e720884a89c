"""Seeded cfg mutations: every failure is a named error (tests/cfg_fuzz.py; run it alone for more cases)."""
from collections import Counter

from tests.cfg_fuzz import run


def test_every_mutated_cfg_builds_or_fails_with_a_named_error():
    counts, bugs = run(cases=200, seed=0)
    assert not bugs, "\n".join(f"{case.description}: {result}" for case, result in bugs[:5])
    assert sum(counts.values()) == 200
    # the mutations reach every stage: some build and run, some are refused, some fail only at run time
    assert counts["built"] > 20 and counts["named cfg error"] > 20 and counts["named forward error"] > 0


def test_the_fuzzer_reports_an_unnamed_error_as_a_bug(monkeypatch):
    import tests.cfg_fuzz as fuzz

    def broken(*args, **kwargs):
        raise KeyError("escaped")

    monkeypatch.setattr(fuzz, "parse_cfg", broken)
    counts, bugs = fuzz.run(cases=3, seed=0)
    assert counts == Counter(BUG=3) and "KeyError" in bugs[0][1]
