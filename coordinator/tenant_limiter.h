// File: coordinator/tenant_limiter.h
// Requests in flight per tenant (--max_streams_per_tenant), so one tenant cannot take all of the
// coordinator's admission: beyond its share a call gets RESOURCE_EXHAUSTED with a retry hint,
// like the coordinator's own admission limit. The anonymous tenant ("", authentication off)
// counts as one tenant.
// Thread-safety: thread-safe.
#ifndef DAPQ_COORDINATOR_TENANT_LIMITER_H_
#define DAPQ_COORDINATOR_TENANT_LIMITER_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "common/mutex.h"

namespace dapq::coordinator {

class TenantLimiter {
 public:
  // `max_per_tenant` <= 0: no limit.
  explicit TenantLimiter(int max_per_tenant) : max_(max_per_tenant) {}

  // A held slot; releases it when destroyed.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : owner_(other.owner_), tenant_(std::move(other.tenant_)) {
      other.owner_ = nullptr;
    }
    Slot& operator=(Slot&& other) noexcept {
      if (this != &other) {
        if (owner_ != nullptr) owner_->Release(tenant_);
        owner_ = other.owner_;
        tenant_ = std::move(other.tenant_);
        other.owner_ = nullptr;
      }
      return *this;
    }
    ~Slot() {
      if (owner_ != nullptr) owner_->Release(tenant_);
    }

   private:
    friend class TenantLimiter;
    Slot(TenantLimiter* owner, std::string tenant) : owner_(owner), tenant_(std::move(tenant)) {}
    TenantLimiter* owner_ = nullptr;
    std::string tenant_;
  };

  // ResourceExhausted naming the limit when `tenant` has max_per_tenant requests in flight.
  absl::Status Acquire(const std::string& tenant, Slot* slot);
  int in_flight(const std::string& tenant) const;

 private:
  void Release(const std::string& tenant);
  const int max_;
  mutable Mutex mu_;
  std::map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_TENANT_LIMITER_H_
