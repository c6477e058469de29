// File: coordinator/tenant_limiter.cc
// TenantLimiter: a counter per tenant, erased at zero.
#include "coordinator/tenant_limiter.h"

#include "absl/strings/str_cat.h"

namespace dapq::coordinator {

absl::Status TenantLimiter::Acquire(const std::string& tenant, Slot* slot) {
  if (max_ <= 0) return absl::OkStatus();
  MutexLock lock(&mu_);
  int& n = in_flight_[tenant];
  if (n >= max_) {
    if (n == 0) in_flight_.erase(tenant);
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant ", tenant.empty() ? "(anonymous)" : tenant, " has ", max_,
                     " requests in flight, its limit (--max_streams_per_tenant); retry later"));
  }
  ++n;
  *slot = Slot(this, tenant);
  return absl::OkStatus();
}

int TenantLimiter::in_flight(const std::string& tenant) const {
  MutexLock lock(&mu_);
  const auto it = in_flight_.find(tenant);
  return it == in_flight_.end() ? 0 : it->second;
}

void TenantLimiter::Release(const std::string& tenant) {
  MutexLock lock(&mu_);
  const auto it = in_flight_.find(tenant);
  if (it != in_flight_.end() && --it->second <= 0) in_flight_.erase(it);
}

}  // namespace dapq::coordinator
