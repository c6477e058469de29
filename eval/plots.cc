// File: eval/plots.cc
// gnuplot data files, the plotting script and its rendering.
#include "eval/plots.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"

namespace dapq::eval {
namespace {

std::string Row(double x, const Cell& c) {
  return absl::StrFormat("%g %.6f %.6f %.4f %.4f %.8f %.8f %.6f %.6f %.6f\n", x, c.log_prob.mean,
                         c.log_prob.ci95, 100 * c.exact_match.mean, 100 * c.exact_match.ci95,
                         c.kl.mean, c.kl.ci95, c.attention.mean, c.attention.ci95,
                         c.kept_fraction.mean);
}

std::vector<std::string> GridMethods(const EvalResults& r) {
  std::vector<std::string> methods;
  for (const Cell& c : r.cells) {
    if (c.group == "grid" && (methods.empty() || methods.back() != c.label)) {
      methods.push_back(c.label);
    }
  }
  return methods;
}

// One block per method: x = percent (ratio budgets) or tokens.
std::string GridData(const EvalResults& r, const std::vector<double>& xs, bool ratio) {
  std::string out =
      absl::StrCat("# x log_p ci exact_match_% ci kl ci attention ci kept_fraction; x = ",
                   ratio ? "budget % of the prompt" : "budget tokens", "\n");
  for (const std::string& m : GridMethods(r)) {
    absl::StrAppend(&out, "# ", m, "\n");
    for (const Cell& c : r.cells) {
      if (c.group != "grid" || c.label != m) continue;
      if (c.budget.value <= 0) {  // full: the same cell at every x
        for (double x : xs) absl::StrAppend(&out, Row(x, c));
      } else if (c.budget.is_ratio == ratio) {
        absl::StrAppend(&out, Row(ratio ? 100 * c.budget.value : c.budget.value, c));
      }
    }
    absl::StrAppend(&out, "\n\n");
  }
  return out;
}

std::string AblationData(const EvalResults& r, const EvalOptions& o) {
  std::string out = "# label, then per budget (";
  for (const Budget& b : o.ablation_budgets) absl::StrAppend(&out, " ", b.Label());
  absl::StrAppend(&out, " ): log_p ci match_% ci kl ci attention ci\n");
  std::vector<std::string> labels;
  for (const Cell& c : r.cells) {
    if (c.group != "ablation") continue;
    bool seen = false;
    for (const std::string& l : labels) seen |= l == c.label;
    if (!seen) labels.push_back(c.label);
  }
  for (const std::string& label : labels) {
    // "content=last positions=future" -> "last/future"
    absl::StrAppend(&out, absl::StrReplaceAll(label, {{"content=", ""}, {" positions=", "/"}}));
    for (const Budget& b : o.ablation_budgets) {
      for (const Cell& c : r.cells) {
        if (c.group != "ablation" || c.label != label || c.budget.Label() != b.Label()) continue;
        absl::StrAppendFormat(&out, " %.6f %.6f %.4f %.4f %.8f %.8f %.6f %.6f", c.log_prob.mean,
                              c.log_prob.ci95, 100 * c.exact_match.mean, 100 * c.exact_match.ci95,
                              c.kl.mean, c.kl.ci95, c.attention.mean, c.attention.ci95);
      }
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string Xtics(const std::vector<double>& xs) {
  std::vector<std::string> t;
  for (double x : xs) t.push_back(absl::StrFormat("\"%g\" %g", x, x));
  return absl::StrCat("set xtics (", absl::StrJoin(t, ", "), ")\n");
}

// A two-panel figure of one metric: y is the column of the mean, `err` the gnuplot `using`
// columns of its error bar.
std::string GridFigure(const std::string& file, const std::string& title, int y,
                       const std::string& err, const std::string& ylabel, bool log_y,
                       const std::vector<double>& pct, const std::vector<double>& tok,
                       bool skip_full) {
  const std::string y_expr = skip_full
                                 ? absl::StrCat("(word(methods,i) eq \"full\" ? 1/0 : $", y, ")")
                                 : absl::StrCat("($", y, ")");
  std::string s = absl::StrCat("set output '", file, "'\nset multiplot layout 1,2 title \"", title,
                               "\"\nset ylabel \"", ylabel, "\"\n",
                               log_y ? "set logscale y\n" : "unset logscale y\n");
  auto panel = [&](const std::string& data, const std::vector<double>& xs,
                   const std::string& xlabel, bool key) {
    absl::StrAppendFormat(&s, "set xrange [%g:%g]\n", xs.front() / 1.25, xs.back() * 1.25);
    absl::StrAppend(&s, "set logscale x 2\n", Xtics(xs), "set xlabel \"", xlabel, "\"\n",
                    key ? "set key outside right\n" : "unset key\n",
                    "plot for [i=1:words(methods)] '", data, "' index (i-1) using 1:", y_expr, ":",
                    err, " with yerrorlines lw 1.5 dt dashof(i) ", "title word(methods,i)\n");
  };
  if (!pct.empty()) panel("grid_ratio.dat", pct, "budget (% of the prompt)", tok.empty());
  if (!tok.empty()) panel("grid_tokens.dat", tok, "budget (tokens per layer and KV head)", true);
  absl::StrAppend(&s, "unset multiplot\nunset logscale\nset autoscale\n");
  return s;
}

// pngcairo when this gnuplot has it, else the libgd png terminal.
std::string Terminal(int width, int height) {
  return absl::StrFormat(
      "if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n"
      "  set terminal pngcairo size %d,%d font \",10\"\n} else {\n"
      "  set terminal png size %d,%d\n}\nset termoption noenhanced\n",
      width, height, width, height);
}

std::string Script(const EvalResults& r, const EvalOptions& o) {
  std::vector<double> pct, tok;
  for (double x : o.ratios) pct.push_back(100 * x);
  for (int t : o.tokens) tok.push_back(t);
  std::string s = absl::StrCat(
      "# Generated by `dapq eval`: renders the PNGs from the .dat files (gnuplot plots.gp).\n",
      Terminal(1280, 520), "set grid\nset bars small\n", "methods = \"",
      absl::StrJoin(GridMethods(r), " "), "\"\n",
      "dashof(i) = word(methods,i) eq \"full\" ? 2 : 1  # full: dashed\n");
  if (!pct.empty() || !tok.empty()) {
    absl::StrAppend(
        &s,
        GridFigure(kPlotFiles[0], "Needle log-probability (teacher-forced; higher is better)", 2,
                   "3", "log p(needle)", false, pct, tok, false),
        "set yrange [-2:102]\n",
        GridFigure(kPlotFiles[1], "Needle greedy exact match", 4, "5", "exact match (%)", false,
                   pct, tok, false),
        GridFigure(kPlotFiles[2], "Output fidelity: KL(full || compressed) over the continuation",
                   6, "($6-$7 > 0 ? $6-$7 : $6/2):($6+$7)", "KL (nats per token)", true, pct, tok,
                   true),
        GridFigure(kPlotFiles[3], "Attention fidelity: decoding attention mass on kept tokens", 8,
                   "9", "attention mass kept", false, pct, tok, false));
  }
  if (o.ablation && !o.ablation_budgets.empty()) {
    absl::StrAppend(
        &s, Terminal(1280, 900), "set output '", kPlotFiles[4], "'\n",
        "set style data histograms\nset style histogram errorbars gap 1 lw 1\n",
        "set style fill solid 0.7 border -1\nset xtics rotate by -35 nomirror\n",
        "set key inside top right\nset rmargin 6\nunset xlabel\nunset ylabel\nset autoscale\n",
        "set multiplot layout 2,2 title \"DapQ where vs what: ",
        "content/positions (mean, 95% CI)\"\n");
    const char* metrics[] = {"needle log p", "exact match (%)", "KL(full || compressed)",
                             "attention mass kept"};
    for (int m = 0; m < 4; ++m) {
      absl::StrAppend(&s, "set title \"", metrics[m], "\"\n",
                      m == 0   ? "set autoscale y\n"
                      : m == 1 ? "set yrange [0:100]\n"
                               : "set yrange [0:*]\n",
                      "plot ");
      for (size_t b = 0; b < o.ablation_budgets.size(); ++b) {
        const size_t col = 2 + b * 8 + m * 2;
        absl::StrAppend(&s, b == 0 ? "'ablation.dat'" : ", ''", " using ", col, ":", col + 1,
                        b == 0 ? ":xtic(1)" : "", " title \"", o.ablation_budgets[b].Label(), "\"");
      }
      absl::StrAppend(&s, "\n");
    }
    absl::StrAppend(&s, "unset multiplot\n");
  }
  return s;
}

}  // namespace

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status WritePlotData(const EvalResults& results, const EvalOptions& options,
                           const std::string& out_dir, std::vector<std::string>* written) {
  std::vector<double> pct, tok;
  for (double x : options.ratios) pct.push_back(100 * x);
  for (int t : options.tokens) tok.push_back(t);
  const std::pair<std::string, std::string> files[] = {
      {"grid_ratio.dat", GridData(results, pct, true)},
      {"grid_tokens.dat", GridData(results, tok, false)},
      {"ablation.dat", AblationData(results, options)},
      {"plots.gp", Script(results, options)}};
  for (const auto& [name, text] : files) {
    const std::string path = absl::StrCat(out_dir, "/", name);
    DAPQ_RETURN_IF_ERROR(WriteTextFile(path, text));
    written->push_back(path);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> RenderPlots(const std::string& out_dir, std::string* note) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    *note = absl::StrCat("gnuplot is not installed: the PNGs were not drawn. Install it ",
                         "(apt-get install gnuplot-nox) and run `cd ", out_dir,
                         " && gnuplot plots.gp`.");
    return false;
  }
  const std::string cmd = absl::StrCat("cd '", out_dir, "' && gnuplot plots.gp > plots.log 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(absl::StrCat(out_dir, "/plots.log"));
    std::stringstream text;
    text << log.rdbuf();
    return absl::InternalError(
        absl::StrCat("gnuplot failed on ", out_dir, "/plots.gp:\n", text.str()));
  }
  std::remove(absl::StrCat(out_dir, "/plots.log").c_str());
  *note = absl::StrCat("re-render with `cd ", out_dir, " && gnuplot plots.gp`");
  return true;
}

}  // namespace dapq::eval
