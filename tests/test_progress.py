"""Progress with real totals: minutes for time-budgeted runs, steady lines when stderr is not a terminal."""

from deepinv_meta.progress import Progress


def test_a_time_budgeted_run_reports_minutes_not_a_huge_step_count(capsys):
    progress = Progress("meta-training", 10**9, 0, max_time=120.0, every=0.0)
    progress.step(3, 0.25)
    progress.close()
    line = capsys.readouterr().err.strip()
    assert line == "meta-training: step 3, loss 2.500e-01, 0.0 min elapsed (budget 2.0 min)"
    assert "1000000000" not in line


def test_a_step_budgeted_run_reports_steps_at_a_steady_pace(capsys):
    progress = Progress("fine-tuning", 50, every=3600.0)
    for k in range(1, 6):
        progress.step(k, 1.0 / k)
    assert capsys.readouterr().err == ""  # not yet a minute... an hour here
    progress.every = 0.0
    progress.step(6, None)
    assert capsys.readouterr().err.strip().endswith("(budget 50 steps)")


def test_disabled_progress_prints_nothing(capsys):
    progress = Progress("x", 5, enabled=False, every=0.0)
    progress.step(1, 1.0)
    assert capsys.readouterr().err == ""
