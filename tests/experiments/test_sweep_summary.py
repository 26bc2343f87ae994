"""experiments.sweep_summary: the cross-benchmark table of the UW-SO sweeps."""
import csv
import math

import pytest

from experiments import sweep_summary

FIELDS = ("temperature", "val_delta_m_metric", "method", "delta_m_metric_mean",
          "delta_m_metric_std", "max_share", "vs_best", "vs_best_mean",
          "vs_best_std")


def _write(folder, rows):
  folder.mkdir()
  with open(folder / "temperature_sweep.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, FIELDS)
    writer.writeheader()
    for row in rows:
      writer.writerow(dict(zip(FIELDS, row)))
  return str(folder)


def _t(t, val, test, share, verdict="within noise", d=0.5):
  return (t, val, f"T={t:g}", test, 1.0, share, verdict,
          "" if verdict == "-" else d, "" if verdict == "-" else 0.3)


def _v(name, test, share, verdict, d):
  return ("", 0.0, name, test, 1.0, share, verdict, d, 0.4)


def test_table_picks_the_validation_best_t_and_counts_the_variants(tmp_path):
  a = _write(tmp_path / "bench_a", [
      _t(1, 30.0, 31.0, 1.0, "worse (t=+9.0)"), _t(2, 5.0, 6.0, 1.0, "-"),
      _t(50, 9.0, 8.0, 0.3), _v("uw_so_norm", 3.0, 0.8, "within noise", -3.0),
      _v("uw_so_rel", 20.0, 0.99, "worse (t=+6.1)", 14.0),
      _v("ew", 9.0, 0.25, "within noise", 3.0)])
  b = _write(tmp_path / "bench_b", [
      _t(2, 1.0, 1.5, 0.4, "-"), _t(50, 3.0, 2.0, 0.3),
      _v("uw_so_norm", 0.5, 0.5, "better (t=-5.0)", -1.0),
      _v("uw_so_rel", 1.0, 0.45, "within noise", -0.5),
      _v("ew", 2.0, 0.1, "within noise", 0.5)])
  sums = [sweep_summary.summarise(n, sweep_summary.read_sweep(d))
          for n, d in (("a", a), ("b", b))]
  assert [s["tuned"]["temperature"] for s in sums] == [2.0, 2.0]
  assert [s["collapse"] for s in sums] == [True, False]
  text = sweep_summary.markdown(sums)
  assert "| a | **UW-SO, T=2 (tuned on validation)** | +6.00 ± 1.00 |" in text
  assert "| | uw_so_rel | +20.00 ± 1.00 | +14.00 ± 0.40 | worse | 0.990 |" in text
  assert "| | UW-SO T=50 | +8.00 ± 1.00 |" in text  # a paper T, not tuned
  assert "UW-SO T=1 |" not in text
  assert ("`uw_so_norm`: within noise of tuned UW-SO or better on 2 of 2 "
          "benchmarks; largest share ≤ 0.95 where a fixed T went above it on "
          "2 of 2.") in text
  assert "`uw_so_rel`: within noise of tuned UW-SO or better on 1 of 2" in text
  assert "above it on 1 of 2." in text  # 0.99 on a, no collapse on b
  assert "`ew`" not in text  # only UW-SO's variants are counted
  assert all(math.isnan(r["temperature"]) for r in sums[0]["shown"][:3])


def test_embed_replaces_only_the_marked_block(tmp_path):
  doc = tmp_path / "page.md"
  doc.write_text(f"# Title\n\n{sweep_summary.BEGIN}\nold\n{sweep_summary.END}\n"
                 "after\n")
  sweep_summary.embed(str(doc), "| new |\n")
  assert doc.read_text() == (f"# Title\n\n{sweep_summary.BEGIN}\n| new |\n"
                             f"{sweep_summary.END}\nafter\n")
  (tmp_path / "bare.md").write_text("no markers\n")
  with pytest.raises(ValueError, match="add the two markers"):
    sweep_summary.embed(str(tmp_path / "bare.md"), "x")
