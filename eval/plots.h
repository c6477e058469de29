// File: eval/plots.h
// gnuplot output of an evaluation: the data files
//   grid_ratio.dat, grid_tokens.dat  one block per method (gnuplot `index`), one row per budget:
//                                    x, log p, ci, exact match %, ci, KL, ci, attention, ci, kept
//                                    (method full repeats its single cell at every x);
//   ablation.dat                     one row per content/positions pair, 8 columns per budget;
// a script plots.gp that draws needle_logprob.png, needle_match.png, kl.png, attention.png
// (left panel: ratio budgets, right: token budgets) and ablation.png (bars, 2x2 metrics), and
// the call that runs it. Thread-compatible.
#ifndef DAPQ_EVAL_PLOTS_H_
#define DAPQ_EVAL_PLOTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/runner.h"

namespace dapq::eval {

inline constexpr const char* kPlotFiles[] = {"needle_logprob.png", "needle_match.png", "kl.png",
                                             "attention.png", "ablation.png"};

absl::Status WriteTextFile(const std::string& path, const std::string& text);

// Writes the .dat files and plots.gp into `out_dir`; appends their paths to `written`.
absl::Status WritePlotData(const EvalResults& results, const EvalOptions& options,
                           const std::string& out_dir, std::vector<std::string>* written);

// Runs gnuplot on out_dir/plots.gp. false with `note` set when gnuplot is not installed;
// Internal (with gnuplot's messages) when it fails.
absl::StatusOr<bool> RenderPlots(const std::string& out_dir, std::string* note);

}  // namespace dapq::eval

#endif  // DAPQ_EVAL_PLOTS_H_
