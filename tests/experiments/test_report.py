"""The study report: intervals over seeds clipped to the metric's range, n shown, files rendered from the CSVs."""

from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.experiments.report import (
    CURVE_FIELDS,
    RESULT_FIELDS,
    cell,
    costs,
    eta,
    markdown,
    merge,
    paired,
    plot_curves,
    read_rows,
    render,
    table,
    unstarted,
    write_rows,
)


def _row(method, n_train, seed, dice, **extra):
    row = dict.fromkeys(RESULT_FIELDS)
    row.update(method=method, n_train=n_train, seed=seed, dice=dice, iou=dice, hd95=10.0, hd95_unit="pixel",
               trainable_parameters=1000, train_seconds=120.0, iterations_run=50, device="cpu")
    row.update(extra)
    return row


def test_interval_is_the_t_interval_clipped_to_the_metric_range():
    summary = cell([0.90, 0.99, 0.995], "dice")
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.96167, abs=1e-4)
    # t(0.975, 2) = 4.303; sd 0.0535 -> half-width 0.133: the raw upper end 1.094 is clipped to 1
    assert summary["ci95"][1] == 1.0 and summary["ci95"][0] == pytest.approx(0.8287, abs=1e-3)
    assert cell([3.0, 50.0], "hd95")["ci95"][0] == 0.0, "a distance is never negative"


def test_table_cells_show_mean_interval_and_n_and_missing_cells():
    rows = [_row("dka", 5, s, d) for s, d in enumerate((0.5, 0.6, 0.7))] + [_row("lora", 40, 0, 0.8)]
    lines = table(rows).splitlines()
    assert lines[0] == "| dice | 5 cases | 40 cases |"
    assert lines[2] == "| dka | 0.600 [0.352, 0.848] (n=3) | – |"
    assert lines[3] == "| lora | – | 0.800 (n=1) |"
    assert "| hd95 (pixel) |" in table(rows, "hd95")
    assert "| dka | 1,000 | 50, 2.0 | – |" in costs(rows)


def test_methods_are_compared_with_the_first_on_the_same_seeds():
    """Each seed's split lifts both methods alike (0.5 / 0.7 / 0.9): the per-method intervals overlap widely, the
    paired differences (+0.01, +0.03, +0.02) do not; a seed the baseline lacks makes no pair."""
    rows = [_row("linear_probe", 5, s, d) for s, d in enumerate((0.5, 0.7, 0.9))]
    rows += [_row("dka", 5, s, d) for s, d in enumerate((0.51, 0.73, 0.92, 0.1))]
    rows += [_row("dka", 40, 0, 0.8)]
    lines = paired(rows).splitlines()
    assert lines[0] == "| dice − linear_probe, same seed | 5 cases | 40 cases |"
    # mean 0.02, sd 0.01, t(0.975, 2) = 4.303: half-width 0.0248
    assert lines[2] == "| dka | +0.020 [-0.005, +0.045] (n=3) | – |"
    assert "| linear_probe | 0.700 [0.203, 1.000] (n=3) |" in table(rows)
    assert "minus the first on the same split" in markdown(rows)
    assert paired([r for r in rows if r["method"] == "dka"]) == "", "one method has nothing to be compared with"


def test_runs_that_never_started_are_named_beside_the_tables():
    """A best validation Dice of exactly 0 names the run; a low but non-zero one (it started, learned little), a
    missing one (no validation) and the other runs do not appear."""
    rows = [_row("dka", 10, 0, 0.7, best_val_dice=0.8), _row("dka", 10, 1, 0.0, best_val_dice=0.0),
            _row("linear_probe", 10, 1, 0.0, best_val_dice=0.0), _row("lora", 10, 1, 0.1, best_val_dice=0.02),
            _row("adapter", 10, 1, 0.5)]
    note = unstarted(rows)
    assert note.strip() == ("Never started (best validation Dice 0, no validation label overlapped): "
                            "dka at 10 cases, seed 1; linear_probe at 10 cases, seed 1.")
    assert note in markdown(rows)
    assert unstarted(rows[:1] + rows[3:]) == ""


def test_render_writes_table_and_plots_from_the_csvs_alone(tmp_path):
    rows = [_row(m, n, s, 0.5 + 0.01 * s) for m in ("dka", "adapter") for n in (5, 40) for s in range(3)]
    results = write_rows(rows, tmp_path / "results.csv", RESULT_FIELDS)
    curves = [{"method": m, "n_train": 5, "seed": 0, "epoch": e, "iteration": 3 * e, "train_loss": 1.0,
               "val_dice": 0.1 * e} for m in ("dka", "adapter") for e in (1, 2)]
    write_rows(curves, tmp_path / "curves.csv", CURVE_FIELDS)
    written = render(results, title="t")
    assert [p.name for p in written] == ["results.md", "results.png", "curves.png"]
    assert all(p.stat().st_size > 1000 for p in written[1:])
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| adapter | 0.510 [0.485, 0.535] (n=3) |" in written[0].read_text()


def test_the_curves_legend_names_every_method_also_one_run_at_a_single_size(tmp_path, monkeypatch):
    """The legend sits beside the panels: a method run only at 5 cases (left panel) keeps its entry."""
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, path: saved.append(figure))
    sizes = {"linear_probe": (5, 10), "full": (5,), "dka": (10,)}
    curves = [{"method": m, "n_train": n, "seed": 0, "iteration": i, "val_dice": 0.5}
              for m in sizes for n in sizes[m] for i in (1, 2)]
    plot_curves(curves, tmp_path / "curves.png")
    (figure,) = saved
    assert [text.get_text() for legend in figure.legends for text in legend.get_texts()] == ["linear_probe", "full",
                                                                                            "dka"]
    assert [line.get_color() for line in figure.legends[0].get_lines()] == ["C0", "C1", "C2"]


def test_a_file_that_is_not_a_results_file_is_one_clear_error(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("case,dice\na,0.5\n")
    lacks = r"other.csv is not a study results file: it lacks the columns \['best_val_dice', 'device'"
    with pytest.raises(PipelineError, match=lacks):
        read_rows(path)
    with pytest.raises(PipelineError, match="missing.csv cannot be read"):
        read_rows(tmp_path / "missing.csv")


def _part(folder, rows):
    """A results folder as a sweep leaves it: results.csv with each run's curve beside it."""
    folder.mkdir()
    write_rows([{"method": r["method"], "n_train": r["n_train"], "seed": r["seed"], "epoch": 1, "iteration": 12,
                 "train_loss": 1.0, "val_dice": r["dice"]} for r in rows], folder / "curves.csv", CURVE_FIELDS)
    return write_rows(rows, folder / "results.csv", RESULT_FIELDS)


def test_merge_joins_parts_of_one_study_run_on_different_machines(tmp_path):
    published = _part(tmp_path / "published", [_row("probe", 5, s, 0.7, options="{}") for s in (0, 1)]
                      + [_row("dka", 5, 0, 0.6, options="{}", hd95=float("nan"))])
    session = _part(tmp_path / "session", [_row("dka", 5, 0, 0.6, options="{}", hd95=float("nan")),
                                           _row("dka", 5, 1, 0.8, options="{}"),
                                           _row("probe", 5, 2, 0.9, options="{}")])
    written = merge([published, session], tmp_path / "published")
    assert [p.name for p in written] == ["results.csv", "curves.csv", "classes.csv"]
    rows = read_rows(written[0])
    assert [(r["method"], r["seed"], r["dice"]) for r in rows] == [
        ("probe", 0, 0.7), ("probe", 1, 0.7), ("probe", 2, 0.9), ("dka", 0, 0.6), ("dka", 1, 0.8)], \
        "every run once (the one collected twice too, NaN HD95 and all), in the published order"
    curves = read_rows(written[1], CURVE_FIELDS)
    assert [(c["method"], c["seed"], c["val_dice"]) for c in curves] == [
        (r["method"], r["seed"], r["dice"]) for r in rows], "each run's curve comes with it"


def test_merge_refuses_what_would_make_a_wrong_table(tmp_path):
    a = _part(tmp_path / "a", [_row("dka", 5, 0, 0.6, options="{}")])
    other_options = _part(tmp_path / "b", [_row("dka", 5, 1, 0.6, options='{"init": "paper"}')])
    with pytest.raises(PipelineError, match=r"method dka is another run in .*a/results.csv than in .*b/results.csv "
                                            r"\(options: '\{\}' vs '\{\"init\": \"paper\"\}'\)"):
        merge([a, other_options], tmp_path / "out")
    other_test = _part(tmp_path / "c", [_row("dka", 5, 1, 0.6, options="{}", n_test=100)])
    with pytest.raises(PipelineError, match=r"\(n_test: None vs 100\)"):
        merge([a, other_test], tmp_path / "out")
    rerun = _part(tmp_path / "d", [_row("dka", 5, 0, 0.61, options="{}")])
    with pytest.raises(PipelineError, match=r"a/results.csv and .*d/results.csv both hold dka on 5 cases, seed 0, "
                                            "with different results"):
        merge([a, rerun], tmp_path / "out")
    with pytest.raises(PipelineError, match=r"a/results.csv exists and is not one of the files merged"):
        merge([rerun], tmp_path / "a")
    assert read_rows(a)[0]["dice"] == 0.6, "nothing was written over"
    assert not (tmp_path / "out").exists()


def test_a_results_file_merged_into_its_own_folder_is_unchanged(tmp_path):
    path = _part(tmp_path / "a", [_row("dka", 5, s, 0.6 + s / 7, options="{}", n_test=200)
                                        for s in range(3)])
    before = path.read_bytes()
    merge([path], tmp_path / "a")
    assert path.read_bytes() == before, "integers stay integers, floats keep every digit"


def test_report_command_merges_into_output_and_renders_it(tmp_path, capsys):
    from pipeline import cli

    a = _part(tmp_path / "a", [_row("dka", 5, 0, 0.6, options="{}")])
    b = _part(tmp_path / "b", [_row("dka", 5, 1, 0.8, options="{}")])
    assert cli.main(["report", str(a), str(b)]) == 2
    assert capsys.readouterr().err == "error: several results files are merged into one folder: give it with --output\n"
    assert cli.main(["report", str(a), str(b), "--output", str(tmp_path / "a"), "--title", "k5"]) == 0
    assert "| dka | 0.700 [0.000, 1.000] (n=2) |" in (tmp_path / "a" / "results.md").read_text()
    assert (tmp_path / "a" / "curves.png").is_file()


def test_eta_formatting():
    assert [eta(35), eta(240), eta(3900), eta(float("inf"))] == ["35 s", "4 min", "1 h 05 min", "unknown"]
