// File: tests/api/stop_sequences_test.cc
// StopSequenceFilter: cut at the earliest stop sequence, hold back possible starts, flush.
#include "api/stop_sequences.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dapq::api {
namespace {

// Feeds `pieces` one by one and returns the text shown (pushes and the final flush).
std::string Shown(StopSequenceFilter& f, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += f.Push(p);
  return out + f.Flush();
}

TEST(StopSequenceFilterTest, NoStopsPassesEverythingThrough) {
  StopSequenceFilter f({});
  EXPECT_EQ(f.Push("Once upon"), "Once upon");
  EXPECT_EQ(f.Push(" a time"), " a time");
  EXPECT_FALSE(f.stopped());
}

TEST(StopSequenceFilterTest, CutsAtTheStopSpanningPieces) {
  StopSequenceFilter f({"END"});
  EXPECT_EQ(f.Push("abc E"), "abc ");  // "E" may start "END"
  EXPECT_EQ(f.Push("N"), "");
  EXPECT_FALSE(f.stopped());
  EXPECT_EQ(f.Push("Dxyz"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.Push("more"), "");
  EXPECT_EQ(f.Flush(), "");
}

TEST(StopSequenceFilterTest, ReleasesAHeldTailThatDidNotBecomeAStop) {
  StopSequenceFilter f({"END"});
  EXPECT_EQ(f.Push("x EN"), "x ");
  EXPECT_EQ(f.Push("Ough"), "ENOugh");
  EXPECT_EQ(f.Push("E"), "");
  EXPECT_EQ(f.Flush(), "E");
  EXPECT_FALSE(f.stopped());
}

TEST(StopSequenceFilterTest, EarliestOfSeveralStopsWins) {
  StopSequenceFilter f({"\n\n", "dog", "The"});
  EXPECT_EQ(Shown(f, {"the cat and the d", "og.\n\nThe end"}), "the cat and the ");
  EXPECT_TRUE(f.stopped());
}

TEST(StopSequenceFilterTest, StopInsideOnePiece) {
  StopSequenceFilter f({"."});
  EXPECT_EQ(f.Push("Hi. There."), "Hi");
  EXPECT_TRUE(f.stopped());
}

TEST(StopSequenceFilterTest, StopAtTheVeryStartShowsNothing) {
  StopSequenceFilter f({"Once"});
  EXPECT_EQ(Shown(f, {"On", "ce upon"}), "");
  EXPECT_TRUE(f.stopped());
}

TEST(StopSequenceFilterTest, EmptyStopStringsAreIgnored) {
  StopSequenceFilter f({"", "z"});
  EXPECT_EQ(f.Push("abc"), "abc");
  EXPECT_FALSE(f.stopped());
}

TEST(StopSequenceFilterTest, MultiByteStopSequence) {
  StopSequenceFilter f({"猫"});
  const std::string cat = "猫";
  EXPECT_EQ(f.Push("a " + cat.substr(0, 2)), "a ");
  EXPECT_EQ(f.Push(cat.substr(2) + "b"), "");
  EXPECT_TRUE(f.stopped());
}

}  // namespace
}  // namespace dapq::api
