// File: eval/report.cc
// results.md and results.tsv; the plots come from plots.cc.
#include "eval/report.h"

#include <filesystem>
#include <functional>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "eval/plots.h"

namespace dapq::eval {
namespace {

struct Metric {
  const char* title;
  const char* note;
  std::function<Stat(const Cell&)> get;
  const char* format;  // for mean and ci
  double scale;
};

const std::vector<Metric>& Metrics() {
  static const std::vector<Metric> kMetrics = {
      {"Needle log-probability",
       "teacher-forced log p of the name's tokens after the cue, summed; higher is better",
       [](const Cell& c) { return c.log_prob; }, "%.3f", 1},
      {"Needle exact match (%)", "greedy decoding after the cue reproduces the name",
       [](const Cell& c) { return c.exact_match; }, "%.1f", 100},
      {"Output fidelity: KL(full ‖ compressed)",
       "nats per token, mean over the continuation's next-token distributions; lower is better",
       [](const Cell& c) { return c.kl; }, "%.4f", 1},
      {"Attention fidelity",
       "share of the full cache's decoding attention (over prompt keys) on kept tokens",
       [](const Cell& c) { return c.attention; }, "%.3f", 1},
      {"Kept KV fraction", "KV slots kept over prompt slots, all layers and heads (mean)",
       [](const Cell& c) { return c.kept_fraction; }, "%.3f", 1},
  };
  return kMetrics;
}

std::string Fmt(const Metric& m, const Stat& s) {
  return absl::StrCat(absl::StrFormat(m.format, m.scale * s.mean), " ± ",
                      absl::StrFormat(m.format, m.scale * s.ci95));
}

std::vector<Budget> GridBudgets(const EvalOptions& o) {
  std::vector<Budget> b;
  for (double r : o.ratios) b.push_back({true, r});
  for (int t : o.tokens) b.push_back({false, static_cast<double>(t)});
  return b;
}

const Cell* Find(const EvalResults& r, const std::string& group, const std::string& label,
                 const Budget& b) {
  for (const Cell& c : r.cells) {
    if (c.group == group && c.label == label &&
        (c.budget.value <= 0 || c.budget.Label() == b.Label())) {
      return &c;
    }
  }
  return nullptr;
}

std::vector<std::string> Labels(const EvalResults& r, const std::string& group) {
  std::vector<std::string> out;
  for (const Cell& c : r.cells) {
    if (c.group != group) continue;
    bool seen = false;
    for (const std::string& l : out) seen |= l == c.label;
    if (!seen) out.push_back(c.label);
  }
  return out;
}

std::string Markdown(const EvalResults& r, const EvalOptions& o, const ReportOptions& rep,
                     const ReportFiles& files) {
  const std::vector<Budget> budgets = GridBudgets(o);
  const std::vector<std::string> methods = Labels(r, "grid");
  std::string md = "# KV-cache compression on stories260K: evaluation results\n\n";
  absl::StrAppendFormat(
      &md,
      "Produced by `%s` in %.0f s. Model: %s. %d needle prompts (seeds %d..%d; %.0f ± %.0f "
      "prompt tokens, needle %.0f ± %.0f tokens before the end of the prompt), continuation "
      "%d tokens. Budgets are tokens kept per layer and KV head, local window included: a "
      "share of each prompt (%%) or a fixed count. Cells are mean ± 95%% CI "
      "(1.96 sd/√N over prompts). Protocol: eval/ (prompt templates in "
      "needle_prompts.h, metric definitions in metrics.h) and COMPRESSION.md.\n\n",
      rep.command, r.seconds, rep.model, r.seeds, static_cast<int>(o.first_seed),
      static_cast<int>(o.first_seed) + r.seeds - 1, r.prompt_tokens.mean, r.prompt_tokens.ci95,
      r.needle_distance.mean, r.needle_distance.ci95, o.continuation_tokens);
  if (o.dapq.streaming_chunk > 0) {
    absl::StrAppend(&md, "**Streaming compression:** every method prefills in chunks of ",
                    o.dapq.streaming_chunk,
                    " tokens and evicts back to its budget after each one (CompressionConfig::"
                    "streaming_chunk).\n\n");
  }
  if (!files.rendered) absl::StrAppend(&md, "**Plots not rendered:** ", files.render_note, "\n\n");

  if (!budgets.empty()) {
    absl::StrAppend(&md, "## Summary (mean over the ", budgets.size(), " budgets)\n\n| method |");
    for (size_t i = 0; i < 4; ++i) absl::StrAppend(&md, " ", Metrics()[i].title, " |");
    absl::StrAppend(&md, "\n|---|---|---|---|---|\n");
    for (const std::string& m : methods) {
      absl::StrAppend(&md, "| ", m, " |");
      for (size_t i = 0; i < 4; ++i) {
        double sum = 0;
        int count = 0;
        for (const Budget& b : budgets) {
          if (const Cell* c = Find(r, "grid", m, b)) {
            sum += Metrics()[i].get(*c).mean;
            ++count;
          }
        }
        absl::StrAppend(
            &md, " ",
            absl::StrFormat(Metrics()[i].format, Metrics()[i].scale * sum / std::max(count, 1)),
            " |");
      }
      absl::StrAppend(&md, "\n");
    }
    absl::StrAppend(&md, "\n");
  }

  for (const Metric& metric : Metrics()) {
    absl::StrAppend(&md, "## ", metric.title, "\n\n", metric.note, ".\n\n| method |");
    std::string rule = "|---|";
    for (const Budget& b : budgets) {
      absl::StrAppend(&md, " ", b.Label(), " |");
      absl::StrAppend(&rule, "---|");
    }
    if (budgets.empty()) {
      absl::StrAppend(&md, " value |");
      absl::StrAppend(&rule, "---|");
    }
    absl::StrAppend(&md, "\n", rule, "\n");
    for (const std::string& m : methods) {
      absl::StrAppend(&md, "| ", m, " |");
      for (const Budget& b : budgets.empty() ? std::vector<Budget>{{true, 0}} : budgets) {
        const Cell* c = Find(r, "grid", m, b);
        absl::StrAppend(&md, " ", c ? Fmt(metric, metric.get(*c)) : "", " |");
      }
      absl::StrAppend(&md, "\n");
    }
    absl::StrAppend(&md, "\n");
  }

  const std::vector<std::string> ablation = Labels(r, "ablation");
  if (!ablation.empty()) {
    absl::StrAppend(&md,
                    "## Where vs what: DapQ pseudo-query content × positions\n\n"
                    "positions=actual with content=last is SnapKV's scoring with DapQ's window "
                    "and pooling; zero content scores every key alike.\n\n| content | positions |");
    std::string rule = "|---|---|";
    for (const Budget& b : o.ablation_budgets) {
      for (size_t i = 0; i < 4; ++i) {
        absl::StrAppend(&md, " ", Metrics()[i].title, " @", b.Label(), " |");
        absl::StrAppend(&rule, "---|");
      }
    }
    absl::StrAppend(&md, "\n", rule, "\n");
    for (const std::string& label : ablation) {
      const size_t split = label.find(" positions=");
      absl::StrAppend(&md, "| ", label.substr(8, split - 8), " | ", label.substr(split + 11), " |");
      for (const Budget& b : o.ablation_budgets) {
        const Cell* c = Find(r, "ablation", label, b);
        for (size_t i = 0; i < 4; ++i) {
          absl::StrAppend(&md, " ", c ? Fmt(Metrics()[i], Metrics()[i].get(*c)) : "", " |");
        }
      }
      absl::StrAppend(&md, "\n");
    }
    absl::StrAppend(&md, "\n");
  }
  if (files.rendered) {
    absl::StrAppend(&md, "## Plots\n\n");
    for (const char* png : kPlotFiles) {
      if (std::filesystem::exists(std::filesystem::path(rep.out_dir) / png)) {
        absl::StrAppend(&md, "![", png, "](", png, ")\n\n");
      }
    }
  }
  return md;
}

std::string Tsv(const EvalResults& r) {
  std::string t =
      "group\tlabel\tbudget\tsamples\tlog_p\tlog_p_ci\texact_match\texact_match_ci\tkl\tkl_ci\t"
      "attention\tattention_ci\tkept_fraction\n";
  for (const Cell& c : r.cells) {
    absl::StrAppendFormat(
        &t, "%s\t%s\t%s\t%d\t%.6f\t%.6f\t%.6f\t%.6f\t%.8f\t%.8f\t%.6f\t%.6f\t%.6f\n", c.group,
        c.label, c.budget.value <= 0 ? "-" : c.budget.Label(), c.samples, c.log_prob.mean,
        c.log_prob.ci95, c.exact_match.mean, c.exact_match.ci95, c.kl.mean, c.kl.ci95,
        c.attention.mean, c.attention.ci95, c.kept_fraction.mean);
  }
  return t;
}

}  // namespace

absl::StatusOr<ReportFiles> WriteReport(const EvalResults& results, const EvalOptions& options,
                                        const ReportOptions& report) {
  std::error_code ec;
  std::filesystem::create_directories(report.out_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", report.out_dir, ": ", ec.message()));
  }
  ReportFiles files;
  DAPQ_RETURN_IF_ERROR(WritePlotData(results, options, report.out_dir, &files.written));
  const std::string tsv = report.out_dir + "/results.tsv";
  DAPQ_RETURN_IF_ERROR(WriteTextFile(tsv, Tsv(results)));
  files.written.push_back(tsv);
  for (const char* png : kPlotFiles) {
    std::filesystem::remove(std::filesystem::path(report.out_dir) / png, ec);  // stale plots
  }
  if (report.render) {
    DAPQ_ASSIGN_OR_RETURN(files.rendered, RenderPlots(report.out_dir, &files.render_note));
  } else {
    files.render_note =
        absl::StrCat("rendering skipped; run `cd ", report.out_dir, " && gnuplot plots.gp`");
  }
  if (files.rendered) {
    for (const char* png : kPlotFiles) {
      const std::string path = report.out_dir + "/" + png;
      if (std::filesystem::exists(path)) files.written.push_back(path);
    }
  }
  const std::string md = report.out_dir + "/results.md";
  DAPQ_RETURN_IF_ERROR(WriteTextFile(md, Markdown(results, options, report, files)));
  files.written.push_back(md);
  return files;
}

}  // namespace dapq::eval
