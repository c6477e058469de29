// File: eval/needle_prompts.cc
// The needle prompt templates and their seeded assembly.
#include "eval/needle_prompts.h"

#include <algorithm>
#include <random>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace dapq::eval {
namespace {

struct Name {
  const char* name;
  bool boy;
};
constexpr Name kTemplate0Names[] = {{"Tom", true},    {"Ted", true}, {"Sam", true},
                                    {"Lucy", false},  {"Max", true}, {"Mia", false},
                                    {"Molly", false}, {"Mark", true}};
constexpr Name kTemplate1Names[] = {
    {"Max", true}, {"Mia", false}, {"Mark", true}, {"Molly", false}, {"Sam", true}};

constexpr const char* kOpener = "Once upon a time, there was a big park.";
constexpr const char* kPreamble[] = {"The sun was warm and the sky was blue.",
                                     "The birds sang in the tall trees.",
                                     "The flowers were red and yellow.",
                                     "The wind was soft and the day was nice.",
                                     "It was a big, sunny day.",
                                     "The water in the pond was cold.",
                                     "Many kids played on the swings.",
                                     "A big dog ran after a ball.",
                                     "The trees were green and tall.",
                                     "There was a small pond with ducks.",
                                     "The ducks swam in the water.",
                                     "A little bird sat on a branch.",
                                     "The grass was soft and green.",
                                     "People walked on the path."};
// {P}/{p}: He/he or She/she; {Pos}/{pos}: His/his or Her/her.
constexpr const char* kFiller[] = {"{P} liked to play in the park.",
                                   "{P} had many toys in {pos} room.",
                                   "Every morning, {p} ate a big bowl of food.",
                                   "{P} was happy and {p} smiled a lot.",
                                   "{Pos} mom made a cake for lunch.",
                                   "{P} saw a little cat under the tree.",
                                   "{P} liked to run and jump in the grass.",
                                   "At night, {p} looked at the stars.",
                                   "{P} had a best friend who was a dog.",
                                   "{P} went to the store with {pos} mom.",
                                   "{P} liked to draw pictures of the sun.",
                                   "{P} found a shiny rock by the river.",
                                   "{P} helped {pos} dad in the garden.",
                                   "{P} liked to sing songs with {pos} friends.",
                                   "The sun was warm and the sky was blue.",
                                   "The birds sang in the tall trees."};
constexpr const char* kObjects[] = {"red ball", "big kite",   "toy car",   "small boat",
                                    "blue hat", "teddy bear", "green box", "yellow bike"};
constexpr const char* kCues[] = {" One day,", " One day, {p} said, \"My name is"};

template <typename T, size_t N>
const T& Pick(std::mt19937_64& rng, const T (&table)[N]) {
  return table[rng() % N];
}

int Uniform(std::mt19937_64& rng, int lo, int hi) {
  return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

std::string Gendered(const char* text, bool boy) {
  return absl::StrReplaceAll(text, {{"{P}", boy ? "He" : "She"},
                                    {"{p}", boy ? "he" : "she"},
                                    {"{Pos}", boy ? "His" : "Her"},
                                    {"{pos}", boy ? "his" : "her"}});
}

// Index of the first token of the last occurrence of `needle` in `tokens`, or -1.
int LastOccurrence(std::span<const int> tokens, std::span<const int> needle) {
  for (int i = static_cast<int>(tokens.size() - needle.size()); i >= 0; --i) {
    if (std::equal(needle.begin(), needle.end(), tokens.begin() + i)) return i;
  }
  return -1;
}

}  // namespace

absl::Status NeedlePromptOptions::Validate() const {
  if (min_distance < 16 || max_distance < min_distance) {
    return absl::InvalidArgumentError(absl::StrCat("needle distance [", min_distance, ", ",
                                                   max_distance, "] must have 16 <= min <= max"));
  }
  if (min_preamble < 0 || max_preamble < min_preamble) {
    return absl::InvalidArgumentError(absl::StrCat("needle preamble [", min_preamble, ", ",
                                                   max_preamble, "] must have 0 <= min <= max"));
  }
  if (max_total_tokens < max_preamble + max_distance + 40) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_total_tokens=", max_total_tokens, " leaves no room for preamble ",
                     max_preamble, " + distance ", max_distance, " + 40 (needle, cue)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<NeedlePrompt> MakeNeedlePrompt(const worker::Tokenizer& tokenizer, uint64_t seed,
                                              const NeedlePromptOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + 0x5EED);
  NeedlePrompt p;
  p.seed = seed;
  p.template_id = static_cast<int>(rng() % 2);
  const Name& who = p.template_id == 0 ? Pick(rng, kTemplate0Names) : Pick(rng, kTemplate1Names);
  p.name = who.name;
  const std::string object = Pick(rng, kObjects);
  const int preamble = Uniform(rng, options.min_preamble, options.max_preamble);
  const int distance = Uniform(rng, options.min_distance, options.max_distance);
  auto count = [&](const std::string& t) {
    return static_cast<int>(tokenizer.Encode(t, /*add_bos=*/true, /*add_eos=*/false).size());
  };

  std::string text = kOpener;
  size_t last = ~size_t{0};
  auto next = [&](size_t n) {  // a sentence index, never the previous one
    size_t i = rng() % n;
    if (i == last) i = (i + 1) % n;
    last = i;
    return i;
  };
  while (count(text) < preamble) {
    absl::StrAppend(&text, " ", kPreamble[next(std::size(kPreamble))]);
  }
  absl::StrAppend(&text, " There was a little ", who.boy ? "boy" : "girl", " named ", p.name, ". ",
                  p.name, " had a ", object, ".");
  p.needle = tokenizer.Encode(p.name, /*add_bos=*/false, /*add_eos=*/false);
  last = ~size_t{0};
  std::string previous = text;
  for (int guard = 0; guard < 200; ++guard) {
    p.prompt = tokenizer.Encode(text, /*add_bos=*/true, /*add_eos=*/false);
    p.needle_position = LastOccurrence(p.prompt, p.needle);
    if (p.needle_position < 0) break;
    if (p.distance() >= distance) break;
    previous = text;
    absl::StrAppend(&text, " ", Gendered(kFiller[next(std::size(kFiller))], who.boy));
  }
  if (p.needle_position >= 0 && p.distance() > options.max_distance) {
    text = previous;  // the last sentence overshot the range
    p.prompt = tokenizer.Encode(text, /*add_bos=*/true, /*add_eos=*/false);
    p.needle_position = LastOccurrence(p.prompt, p.needle);
  }
  if (p.needle_position < 0 || p.distance() < options.min_distance ||
      p.distance() > options.max_distance) {
    return absl::InternalError(absl::StrCat("needle prompt seed ", seed, ": distance ",
                                            p.distance(), " outside [", options.min_distance, ", ",
                                            options.max_distance, "]"));
  }
  p.text = text;

  const std::string cue = Gendered(kCues[p.template_id], who.boy);
  const std::vector<int> all = tokenizer.Encode(text + cue + " " + p.name, true, false);
  const size_t n = p.prompt.size(), k = p.needle.size();
  if (all.size() < n + k + 1 || !std::equal(p.prompt.begin(), p.prompt.end(), all.begin()) ||
      !std::equal(p.needle.begin(), p.needle.end(), all.end() - static_cast<long>(k))) {
    return absl::InternalError(absl::StrCat("needle prompt seed ", seed,
                                            ": prompt + cue + needle tokens do not concatenate"));
  }
  p.cue.assign(all.begin() + static_cast<long>(n), all.end() - static_cast<long>(k));
  if (static_cast<int>(all.size()) > options.max_total_tokens) {
    return absl::InternalError(
        absl::StrCat("needle prompt seed ", seed, ": ", all.size(),
                     " tokens exceed max_total_tokens=", options.max_total_tokens));
  }
  return p;
}

}  // namespace dapq::eval
