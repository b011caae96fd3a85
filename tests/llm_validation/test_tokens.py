"""One token-count vocabulary for the command line, the checkpoint names and the figures."""

import math

from llm_validation import revisions
from paper_figures import llm_perturb
from rundir import tokens


def test_parse_tokens_reads_the_forms_people_write():
    assert [tokens.parse_tokens(t) for t in ("320K", "2.3T", "1e9", "500", " 4B ")] == [3.2e5, 2.3e12, 1e9, 500.0, 4e9]
    assert tokens.parse_tokens("1e400") == math.inf and tokens.parse_tokens("abc") is None
    assert tokens.parse_tokens("5X") is None and tokens.parse_tokens("") is None


def test_names_labels_and_the_cli_agree():
    for count in (1000, 320_000, 4_000_000_000, 3_094_000_000_000):
        name = revisions.format_revision(7, count)
        assert revisions.parse_revision(name).tokens == count
        assert tokens.parse_tokens(name.split("tokens")[1]) == count
        assert llm_perturb.tokens_tick(count) == tokens.human_tokens(count)


def test_human_tokens_rounds_into_the_next_unit_and_stays_whole_beyond_the_last():
    counts = (0, 950, 5000, 999_999, 1.23e9, 3_094 * 10**9, 1e15, 2.5e16)
    assert [tokens.human_tokens(t) for t in counts] == ["0", "950", "5K", "1M", "1.23B", "3.09T", "1000T", "25000T"]
