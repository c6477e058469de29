// File: tests/util/batch_client.h
// Test helpers for the dapq.v1.Batch service: submit a job, and follow its results to the end.
// Header-only (tests that include it link dapq_proto).
#ifndef DAPQ_TESTS_UTIL_BATCH_CLIENT_H_
#define DAPQ_TESTS_UTIL_BATCH_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "dapq/v1/batch.grpc.pb.h"

namespace dapq::testing {

// The job id, or "" when the submission failed (`status` tells why).
inline std::string SubmitBatch(dapq::v1::Batch::Stub& stub,
                               const dapq::v1::SubmitBatchRequest& request,
                               grpc::Status* status = nullptr) {
  grpc::ClientContext context;
  dapq::v1::SubmitBatchResponse response;
  const grpc::Status s = stub.SubmitBatch(&context, request, &response);
  if (status != nullptr) *status = s;
  return s.ok() ? response.job_id() : "";
}

struct BatchResults {
  grpc::Status status;
  std::vector<dapq::v1::BatchItemResult> items;  // in index order
};

// Streams the job's results with follow=true until it finishes (or `max_items` arrived).
inline BatchResults FollowBatch(dapq::v1::Batch::Stub& stub, const std::string& job_id,
                                size_t max_items = SIZE_MAX) {
  grpc::ClientContext context;
  dapq::v1::StreamBatchResultsRequest request;
  request.set_job_id(job_id);
  request.set_follow(true);
  auto reader = stub.StreamBatchResults(&context, request);
  BatchResults out;
  dapq::v1::BatchItemResult item;
  while (out.items.size() < max_items && reader->Read(&item)) out.items.push_back(item);
  if (out.items.size() >= max_items) context.TryCancel();
  out.status = reader->Finish();
  return out;
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_BATCH_CLIENT_H_
