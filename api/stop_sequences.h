// File: api/stop_sequences.h
// Stop sequences over streamed text, written once for both ends: the worker asks `stopped()` to
// end generation as soon as the generated text contains one; the coordinator's HTTP API shows
// the text with the stop sequence and everything after it cut off, holding back the bytes that
// might be the start of one until the next piece decides (OpenAI's behaviour).
// Thread-compatible (one stream per filter).
#ifndef DAPQ_API_STOP_SEQUENCES_H_
#define DAPQ_API_STOP_SEQUENCES_H_

#include <string>
#include <string_view>
#include <vector>

namespace dapq::api {

class StopSequenceFilter {
 public:
  explicit StopSequenceFilter(std::vector<std::string> stops);

  // Appends generated text and returns what may be shown now: everything before the earliest
  // stop sequence, minus a tail that could still become one. Empty once stopped.
  std::string Push(std::string_view text);
  // The held-back tail at the end of the stream (empty once stopped).
  std::string Flush();
  // True once the text so far contains a stop sequence.
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // text not shown yet
  bool stopped_ = false;
};

}  // namespace dapq::api

#endif  // DAPQ_API_STOP_SEQUENCES_H_
