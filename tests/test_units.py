"""Units: a re-run redoes only what is missing; a failed unit fails alone and is retried next time."""

from executor_units import write_unit

from curator.executors import make_executor
from curator.storage import Corpus
from curator.units import Unit, run_units, stale_markers


def test_skip_commit_and_retry(tmp_path):
    corpus = Corpus(str(tmp_path / "corpus"))
    parts = tmp_path / "parts"
    parts.mkdir()
    units = [Unit("demo", f"u{i}", f"fp{i}", (str(parts), v)) for i, v in enumerate([2, -1, 3])]
    with make_executor("local", workers=2) as ex:
        first = run_units(corpus, units, write_unit, ex, progress=False)
    assert first.failed == {"u1": "ValueError: poisoned unit"}
    assert sorted(first.stats) == ["u0", "u2"] and first.skipped == []
    assert (parts / "u0.txt").read_text() == "4" and not (parts / "u1.txt").exists()

    (parts / "u0.txt").write_text("stale")  # a marker with a matching fingerprint is trusted
    units[1] = Unit("demo", "u1", "fp1-fixed", (str(parts), 5))
    with make_executor("serial") as ex:
        second = run_units(corpus, units, write_unit, ex, progress=False)
    assert second.skipped == ["u0", "u2"] and second.ran == 1 and not second.failed
    assert (parts / "u1.txt").read_text() == "25" and (parts / "u0.txt").read_text() == "stale"

    def outputs_exist(unit):
        return (parts / f"{unit.id}.txt").exists()

    (parts / "u2.txt").unlink()  # outputs gone: the unit is redone despite its marker
    with make_executor("serial") as ex:
        third = run_units(corpus, units, write_unit, ex, outputs_exist=outputs_exist, progress=False)
    assert third.skipped == ["u0", "u1"] and (parts / "u2.txt").read_text() == "9"
    assert stale_markers(corpus, "demo", {"u0", "u2"}) == ["u1"]
