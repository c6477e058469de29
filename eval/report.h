// File: eval/report.h
// Writes an evaluation's results into a directory:
//   results.md   Markdown tables: a summary per method (means over the budgets), one table per
//                metric (method x budget, mean +- 95% CI), kept KV fraction, and the ablation;
//   results.tsv  every cell and metric, one row per cell (for scripts and sweeps);
//   *.dat, plots.gp and the PNGs it renders (plots.h).
// When gnuplot is not installed the data and the script are still written and results.md says
// how to render them; that is not an error. A gnuplot that fails on the script is (Internal).
// Thread-compatible; writes files only under `out_dir` (created when missing).
#ifndef DAPQ_EVAL_REPORT_H_
#define DAPQ_EVAL_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/runner.h"

namespace dapq::eval {

struct ReportOptions {
  std::string out_dir;
  std::string command;  // the command line that produced the results, quoted in results.md
  std::string model;    // model description for the header
  bool render = true;   // run gnuplot when it is installed
};

struct ReportFiles {
  std::vector<std::string> written;  // paths, in order of writing
  bool rendered = false;             // PNGs produced by gnuplot
  std::string render_note;           // why not rendered, or how to re-render
};

absl::StatusOr<ReportFiles> WriteReport(const EvalResults& results, const EvalOptions& options,
                                        const ReportOptions& report);

}  // namespace dapq::eval

#endif  // DAPQ_EVAL_REPORT_H_
