// File: eval/runner.cc
// The method x budget grid, the content x positions ablation, statistics and progress.
#include "eval/runner.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "eval/evaluator.h"

namespace dapq::eval {
namespace {

namespace wc = worker::compress;

struct CellSpec {
  std::string group, label;
  Budget budget;
  wc::CompressionConfig config;
};

wc::CompressionConfig WithBudget(wc::CompressionConfig c, const Budget& b) {
  c.budget_ratio = b.is_ratio ? b.value : 0.0;
  c.budget_tokens = b.is_ratio ? 0 : static_cast<int>(b.value);
  return c;
}

absl::StatusOr<std::vector<CellSpec>> PlanCells(const EvalOptions& o) {
  std::vector<Budget> budgets;
  for (double r : o.ratios) budgets.push_back({true, r});
  for (int t : o.tokens) budgets.push_back({false, static_cast<double>(t)});
  std::vector<CellSpec> cells;
  for (const std::string& name : o.methods) {
    DAPQ_ASSIGN_OR_RETURN(const wc::Method method, wc::ParseMethod(name));
    wc::CompressionConfig base = method == wc::Method::kDapq ? o.dapq : wc::CompressionConfig{};
    base.method = method;
    base.streaming_chunk = o.dapq.streaming_chunk;  // --streaming_chunk: every method streams
    if (method == wc::Method::kFull) {
      cells.push_back({"grid", name, {true, 0.0}, base});
      continue;
    }
    for (const Budget& b : budgets) cells.push_back({"grid", name, b, WithBudget(base, b)});
  }
  if (o.ablation) {
    constexpr const char* kContents[] = {"last", "mean", "last_token", "random", "zero"};
    constexpr const char* kPositions[] = {"future", "actual"};
    for (const Budget& b : o.ablation_budgets) {
      for (const char* content : kContents) {
        for (const char* positions : kPositions) {
          wc::CompressionConfig c = WithBudget(o.dapq, b);
          c.method = wc::Method::kDapq;
          DAPQ_ASSIGN_OR_RETURN(c.content, wc::ParseContent(content));
          DAPQ_ASSIGN_OR_RETURN(c.positions, wc::ParsePositions(positions));
          cells.push_back(
              {"ablation", absl::StrCat("content=", content, " positions=", positions), b, c});
        }
      }
    }
  }
  for (const CellSpec& c : cells) DAPQ_RETURN_IF_ERROR(c.config.Validate());
  return cells;
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string Budget::Label() const {
  if (value <= 0) return "";
  if (is_ratio) return absl::StrCat(absl::StrFormat("%g", value * 100), "%");
  return absl::StrCat(static_cast<int>(value));
}

absl::Status EvalOptions::Validate() const {
  if (seeds < 1) return absl::InvalidArgumentError(absl::StrCat("seeds=", seeds, " must be >= 1"));
  if (continuation_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("continuation_tokens=", continuation_tokens, " must be >= 1"));
  }
  if (methods.empty()) return absl::InvalidArgumentError("no methods to evaluate");
  for (double r : ratios) {
    if (!(r > 0 && r <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("budget ratio ", r, " must be in (0, 1]"));
    }
  }
  for (int t : tokens) {
    if (t < 1) return absl::InvalidArgumentError(absl::StrCat("budget ", t, " must be >= 1"));
  }
  return prompts.Validate();
}

Stat Summarize(const std::vector<double>& x) {
  Stat s;
  if (x.empty()) return s;
  for (double v : x) s.mean += v;
  s.mean /= static_cast<double>(x.size());
  if (x.size() < 2) return s;
  double ss = 0;
  for (double v : x) ss += (v - s.mean) * (v - s.mean);
  const double sd = std::sqrt(ss / static_cast<double>(x.size() - 1));
  s.ci95 = 1.96 * sd / std::sqrt(static_cast<double>(x.size()));
  return s;
}

absl::StatusOr<EvalResults> RunEval(worker::Engine& engine, const worker::Tokenizer& tokenizer,
                                    const EvalOptions& options, std::FILE* progress) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  DAPQ_ASSIGN_OR_RETURN(const std::vector<CellSpec> specs, PlanCells(options));
  const auto t0 = std::chrono::steady_clock::now();
  EvalResults results;
  results.seeds = options.seeds;

  std::vector<Reference> refs;
  std::vector<double> lengths, distances;
  for (int i = 0; i < options.seeds; ++i) {
    DAPQ_ASSIGN_OR_RETURN(NeedlePrompt p,
                          MakeNeedlePrompt(tokenizer, options.first_seed + i, options.prompts));
    lengths.push_back(static_cast<double>(p.prompt.size()));
    distances.push_back(p.distance());
    DAPQ_ASSIGN_OR_RETURN(Reference r, BuildReference(engine, p, options.continuation_tokens));
    refs.push_back(std::move(r));
  }
  results.prompt_tokens = Summarize(lengths);
  results.needle_distance = Summarize(distances);
  if (progress != nullptr) {
    std::fprintf(progress,
                 "eval: %d prompts (%.0f tokens on average, needle %.0f back), full-cache "
                 "references in %.1f s; %zu cells\n",
                 options.seeds, results.prompt_tokens.mean, results.needle_distance.mean, Since(t0),
                 specs.size());
  }

  const auto grid_start = std::chrono::steady_clock::now();
  for (size_t ci = 0; ci < specs.size(); ++ci) {
    const CellSpec& spec = specs[ci];
    const auto cell_start = std::chrono::steady_clock::now();
    std::vector<double> lp, em, kl, att, kept;
    for (const Reference& ref : refs) {
      wc::CompressionConfig config = spec.config;
      config.seed = ref.prompt.seed;
      DAPQ_ASSIGN_OR_RETURN(const SampleMetrics m, EvaluateConfig(engine, ref, config));
      lp.push_back(m.needle_log_prob);
      em.push_back(m.exact_match ? 1.0 : 0.0);
      kl.push_back(m.kl);
      att.push_back(m.attention_mass);
      kept.push_back(m.kept_fraction);
    }
    Cell cell{spec.group,     spec.label,      spec.budget,
              Summarize(lp),  Summarize(em),   Summarize(kl),
              Summarize(att), Summarize(kept), static_cast<int>(refs.size())};
    results.cells.push_back(cell);
    if (progress != nullptr) {
      const double elapsed = Since(grid_start);
      const double eta =
          elapsed / static_cast<double>(ci + 1) * static_cast<double>(specs.size() - ci - 1);
      std::fprintf(progress,
                   "[%3zu/%zu] %-8s %-40s %5s  log p %7.3f  match %5.1f%%  KL %.4f  attn %.3f  "
                   "(%.2f s; elapsed %.0f s, ETA %.0f s)\n",
                   ci + 1, specs.size(), spec.group.c_str(), spec.label.c_str(),
                   spec.budget.Label().c_str(), cell.log_prob.mean, 100 * cell.exact_match.mean,
                   cell.kl.mean, cell.attention.mean, Since(cell_start), elapsed, eta);
      std::fflush(progress);
    }
  }
  results.seconds = Since(t0);
  return results;
}

}  // namespace dapq::eval
