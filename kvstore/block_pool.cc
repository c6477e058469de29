// File: kvstore/block_pool.cc
// The arenas (a host one: reserved address range, committed chunk by chunk; a context one:
// allocated at once through an execution context), byte-level block copies on either, reference
// counts, and the prefix index with its LRU eviction.
#include "kvstore/block_pool.h"

#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace dapq::kvstore {
namespace {

constexpr uint64_t kChainSeed = 0x9e3779b97f4a7c15ull;

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// What an uncapped pool reserves: the machine's RAM.
size_t PhysicalBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  return pages > 0 ? static_cast<size_t>(pages) * PageSize() : (size_t{1} << 34);
}

}  // namespace

std::vector<uint64_t> PrefixKeys(std::span<const int> tokens, int tokens_per_block) {
  std::vector<uint64_t> keys;
  if (tokens_per_block <= 0) return keys;
  const size_t blocks = tokens.size() / tokens_per_block;
  keys.reserve(blocks);
  uint64_t key = kChainSeed ^ static_cast<uint64_t>(tokens_per_block);
  for (size_t b = 0; b < blocks; ++b) {
    key = XXH3_64bits_withSeed(tokens.data() + b * tokens_per_block, tokens_per_block * sizeof(int),
                               key);
    keys.push_back(key);
  }
  return keys;
}

absl::StatusOr<std::shared_ptr<BlockPool>> BlockPool::Create(
    int head_dim, int tokens_per_block, long max_blocks, kernels::DType dtype,
    std::shared_ptr<kernels::ExecutionContext> context) {
  if (head_dim <= 0) return absl::InvalidArgumentError(absl::StrCat("head_dim=", head_dim));
  if (tokens_per_block <= 0 || (tokens_per_block & (tokens_per_block - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv pool: tokens_per_block=", tokens_per_block, " must be a power of two"));
  }
  if (max_blocks < 0 || max_blocks > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("kv pool: max_blocks=", max_blocks));
  }
  const size_t block_bytes =
      2 * static_cast<size_t>(kernels::DTypeSize(dtype)) * tokens_per_block * head_dim;
  if (context != nullptr) {
    const std::string device = kernels::DeviceName(context->device());
    if (max_blocks == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv pool: a device KV pool (on ", device,
                       ") needs a cap: set --kv_max_blocks to the blocks its memory should hold"));
    }
    const size_t bytes = static_cast<size_t>(max_blocks) * block_bytes;
    absl::StatusOr<kernels::DeviceMemory> arena =
        context->Allocate(bytes, kernels::MemoryKind::kDevice);
    if (!arena.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat("kv pool: cannot allocate ", bytes,
                                                       " bytes for ", max_blocks, " blocks on ",
                                                       device, ": ", arena.status().message()));
    }
    return std::shared_ptr<BlockPool>(new BlockPool(head_dim, tokens_per_block, max_blocks,
                                                    max_blocks, dtype, std::move(context),
                                                    *std::move(arena)));
  }
  long capacity = max_blocks;
  if (capacity == 0) {
    capacity = static_cast<long>(std::min<size_t>(INT32_MAX, PhysicalBytes() / block_bytes));
    capacity = std::max<long>(capacity, kBlocksPerChunk);
  }
  const size_t page = PageSize();
  const size_t reserved = (capacity * block_bytes + page - 1) / page * page;
  void* base =
      mmap(nullptr, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("kv pool: cannot reserve ", reserved,
                                                     " bytes of address space for ", capacity,
                                                     " blocks: ", std::strerror(errno)));
  }
  return std::shared_ptr<BlockPool>(new BlockPool(head_dim, tokens_per_block, max_blocks, capacity,
                                                  dtype, static_cast<std::byte*>(base), reserved));
}

BlockPool::BlockPool(int head_dim, int tokens_per_block, long max_blocks, long capacity,
                     kernels::DType dtype, std::byte* base, size_t reserved_bytes)
    : head_dim_(head_dim),
      tokens_per_block_(tokens_per_block),
      max_blocks_(max_blocks),
      capacity_(capacity),
      block_elems_(static_cast<size_t>(tokens_per_block) * head_dim),
      dtype_(dtype),
      base_(base),
      reserved_bytes_(reserved_bytes) {}

BlockPool::BlockPool(int head_dim, int tokens_per_block, long max_blocks, long capacity,
                     kernels::DType dtype, std::shared_ptr<kernels::ExecutionContext> context,
                     kernels::DeviceMemory arena)
    : head_dim_(head_dim),
      tokens_per_block_(tokens_per_block),
      max_blocks_(max_blocks),
      capacity_(capacity),
      block_elems_(static_cast<size_t>(tokens_per_block) * head_dim),
      dtype_(dtype),
      context_(std::move(context)),
      arena_(std::move(arena)),
      base_(static_cast<std::byte*>(arena_.data())),
      reserved_bytes_(0) {
  // Every block is backed from the start; highest id first, so that blocks are handed out in
  // ascending order (as CommitChunkLocked does).
  MutexLock lock(&mu_);
  free_.reserve(capacity_);
  for (long i = capacity_ - 1; i >= 0; --i) free_.push_back(static_cast<BlockId>(i));
  committed_ = capacity_;
  refcount_.resize(committed_, 0);
  cached_.resize(committed_, 0);
}

BlockPool::~BlockPool() {
  {
    MutexLock lock(&copy_mu_);  // copies still reading the arena finish before it goes
    if (copy_context_ != nullptr) copy_context_->Synchronize().IgnoreError();
  }
  if (context_ == nullptr) munmap(base_, reserved_bytes_);
}

absl::Status BlockPool::CheckRange(BlockId id, size_t offset, size_t bytes) const {
  if (id < 0 || id >= capacity_ || offset > block_bytes() || bytes > block_bytes() - offset) {
    return absl::OutOfRangeError(absl::StrCat("kv pool: bytes [", offset, ", +", bytes,
                                              ") of block ", id, " outside the ", capacity_,
                                              " blocks of ", block_bytes(), " bytes"));
  }
  return absl::OkStatus();
}

absl::Status BlockPool::ContextCopy(void* dst, const void* src, size_t bytes,
                                    kernels::CopyKind kind, bool wait) const {
  MutexLock lock(&copy_mu_);
  DAPQ_RETURN_IF_ERROR(context_->CopyAsync(dst, src, bytes, kind));
  return wait ? context_->Synchronize() : absl::OkStatus();
}

absl::Status BlockPool::CopyBlock(BlockId dst, BlockId src) {
  return Move(dst, 0, src, 0, block_bytes());
}

absl::Status BlockPool::Read(BlockId id, size_t offset, void* host_dst, size_t bytes) const {
  DAPQ_RETURN_IF_ERROR(CheckRange(id, offset, bytes));
  if (bytes == 0) return absl::OkStatus();
  const std::byte* src = keys(id) + offset;
  if (context_ == nullptr) {
    std::memcpy(host_dst, src, bytes);
    return absl::OkStatus();
  }
  return ContextCopy(host_dst, src, bytes, kernels::CopyKind::kDeviceToHost, /*wait=*/true);
}

absl::StatusOr<kernels::Event> BlockPool::ReadAsync(std::span<const HostCopy> copies) const {
  return CopyRanges(copies, kernels::CopyKind::kDeviceToHost);
}

absl::StatusOr<kernels::Event> BlockPool::WriteAsync(std::span<const HostCopy> copies) {
  return CopyRanges(copies, kernels::CopyKind::kHostToDevice);
}

absl::StatusOr<kernels::Event> BlockPool::CopyRanges(std::span<const HostCopy> copies,
                                                     kernels::CopyKind kind) const {
  for (const HostCopy& c : copies) DAPQ_RETURN_IF_ERROR(CheckRange(c.id, c.offset, c.bytes));
  const bool to_host = kind == kernels::CopyKind::kDeviceToHost;
  const auto in_block = [this](const HostCopy& c) {
    return base_ + c.id * block_bytes() + c.offset;
  };
  if (context_ == nullptr) {
    for (const HostCopy& c : copies) {
      if (c.bytes == 0) continue;  // its host pointer may be null
      std::memcpy(to_host ? c.host : in_block(c), to_host ? in_block(c) : c.host, c.bytes);
    }
    return kernels::Event();  // complete
  }
  MutexLock lock(&copy_mu_);
  if (copy_context_ == nullptr) {
    DAPQ_ASSIGN_OR_RETURN(copy_context_, kernels::ExecutionContext::Create(context_->device()));
  }
  // The copies start after the compute stream's work so far: the blocks' last writes (reads
  // out), or the last reads of their previous holders (writes in).
  DAPQ_ASSIGN_OR_RETURN(const kernels::Event before, context_->RecordEvent());
  DAPQ_RETURN_IF_ERROR(copy_context_->StreamWait(before));
  for (const HostCopy& c : copies) {
    if (c.bytes == 0) continue;
    DAPQ_RETURN_IF_ERROR(copy_context_->CopyAsync(to_host ? c.host : in_block(c),
                                                  to_host ? in_block(c) : c.host, c.bytes, kind));
  }
  DAPQ_ASSIGN_OR_RETURN(kernels::Event done, copy_context_->RecordEvent());
  // Blocks written in: the compute stream's later work reads them after the copies.
  if (!to_host) DAPQ_RETURN_IF_ERROR(context_->StreamWait(done));
  return done;
}

absl::StatusOr<bool> BlockPool::CopiesDone(const kernels::Event& event) const {
  MutexLock lock(&copy_mu_);
  if (copy_context_ == nullptr || event.handle() == nullptr) return true;  // copied at once
  return copy_context_->EventDone(event);
}

absl::Status BlockPool::WaitCopies() const {
  MutexLock lock(&copy_mu_);
  return copy_context_ != nullptr ? copy_context_->Synchronize() : absl::OkStatus();
}

absl::Status BlockPool::Write(BlockId id, size_t offset, const void* host_src, size_t bytes) {
  DAPQ_RETURN_IF_ERROR(CheckRange(id, offset, bytes));
  if (bytes == 0) return absl::OkStatus();
  std::byte* dst = keys(id) + offset;
  if (context_ == nullptr) {
    std::memcpy(dst, host_src, bytes);
    return absl::OkStatus();
  }
  return ContextCopy(dst, host_src, bytes, kernels::CopyKind::kHostToDevice, /*wait=*/true);
}

absl::Status BlockPool::Move(BlockId dst, size_t dst_offset, BlockId src, size_t src_offset,
                             size_t bytes) {
  DAPQ_RETURN_IF_ERROR(CheckRange(dst, dst_offset, bytes));
  DAPQ_RETURN_IF_ERROR(CheckRange(src, src_offset, bytes));
  if (bytes == 0) return absl::OkStatus();
  if (dst == src && dst_offset < src_offset + bytes && src_offset < dst_offset + bytes) {
    return absl::InvalidArgumentError(absl::StrCat("kv pool: move of ", bytes, " bytes in block ",
                                                   dst, " from ", src_offset, " to ", dst_offset,
                                                   " overlaps itself"));
  }
  std::byte* to = keys(dst) + dst_offset;
  const std::byte* from = keys(src) + src_offset;
  if (context_ == nullptr) {
    std::memmove(to, from, bytes);
    return absl::OkStatus();
  }
  return ContextCopy(to, from, bytes, kernels::CopyKind::kDeviceToDevice, /*wait=*/false);
}

long BlockPool::blocks_in_use() const {
  MutexLock lock(&mu_);
  return referenced_ - cached_idle_;
}

long BlockPool::peak_blocks_referenced() const {
  MutexLock lock(&mu_);
  return peak_referenced_;
}

long BlockPool::blocks_allocated() const {
  MutexLock lock(&mu_);
  return committed_;
}

long BlockPool::blocks_cached() const {
  MutexLock lock(&mu_);
  return cached_count_;
}

long BlockPool::cached_idle() const {
  MutexLock lock(&mu_);
  return cached_idle_;
}

long BlockPool::prefix_entries() const {
  MutexLock lock(&mu_);
  return static_cast<long>(lru_.size());
}

int BlockPool::RefCount(BlockId id) const {
  MutexLock lock(&mu_);
  return id >= 0 && id < committed_ ? refcount_[id] : 0;
}

long BlockPool::AvailableLocked() const {
  return static_cast<long>(free_.size()) + (capacity_ - committed_);
}

absl::Status BlockPool::CommitChunkLocked() {
  const long count = std::min<long>(kBlocksPerChunk, capacity_ - committed_);
  const size_t page = PageSize();
  const size_t bytes = block_bytes();
  const size_t begin = committed_ * bytes / page * page;
  const size_t end =
      std::min(reserved_bytes_, ((committed_ + count) * bytes + page - 1) / page * page);
  if (count <= 0 || mprotect(base_ + begin, end - begin, PROT_READ | PROT_WRITE) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "kv pool: cannot commit ", count * bytes, " bytes for more blocks (", committed_,
        " committed): ", count <= 0 ? "address space reserved" : std::strerror(errno)));
  }
  // Highest id first, so that blocks are handed out in ascending order.
  for (long i = committed_ + count - 1; i >= committed_; --i)
    free_.push_back(static_cast<BlockId>(i));
  committed_ += count;
  refcount_.resize(committed_, 0);
  cached_.resize(committed_, 0);
  return absl::OkStatus();
}

absl::Status BlockPool::Allocate(int count, std::vector<BlockId>& out) {
  if (count <= 0) return absl::OkStatus();
  MutexLock lock(&mu_);
  // Short of blocks: evict the least recently used prefix entries that nothing else holds
  // (evicting one a sequence still uses would free nothing now).
  for (auto it = lru_.end(); AvailableLocked() < count && it != lru_.begin();) {
    --it;
    const bool idle = std::all_of(it->blocks.begin(), it->blocks.end(),
                                  [&](BlockId b) { return refcount_[b] == 1; });
    if (idle) EvictLocked(it++);
  }
  if (AvailableLocked() < count) {
    return absl::ResourceExhaustedError(absl::StrCat("kv pool: ", count, " blocks requested, ",
                                                     AvailableLocked(), " of ", capacity_, " free",
                                                     max_blocks_ > 0 ? "" : " (memory)"));
  }
  while (static_cast<long>(free_.size()) < count) DAPQ_RETURN_IF_ERROR(CommitChunkLocked());
  for (int i = 0; i < count; ++i) {
    const BlockId id = free_.back();
    free_.pop_back();
    refcount_[id] = 1;
    out.push_back(id);
  }
  referenced_ += count;
  peak_referenced_ = std::max(peak_referenced_, referenced_);
  return absl::OkStatus();
}

void BlockPool::RetainLocked(BlockId id) {
  DAPQ_DCHECK(id >= 0 && id < committed_ && refcount_[id] > 0);
  if (cached_[id] && refcount_[id] == 1) --cached_idle_;
  ++refcount_[id];
}

void BlockPool::ReleaseLocked(BlockId id) {
  DAPQ_DCHECK(id >= 0 && id < committed_ && refcount_[id] > 0);
  if (--refcount_[id] == 0) {
    DAPQ_DCHECK(!cached_[id]);
    free_.push_back(id);
    --referenced_;
  } else if (refcount_[id] == 1 && cached_[id]) {
    ++cached_idle_;
  }
}

void BlockPool::Retain(std::span<const BlockId> ids) {
  MutexLock lock(&mu_);
  for (BlockId id : ids) RetainLocked(id);
}

void BlockPool::Release(std::span<const BlockId> ids) {
  if (ids.empty()) return;
  MutexLock lock(&mu_);
  // In reverse, so that the blocks are handed out again in their old order.
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) ReleaseLocked(*it);
}

void BlockPool::EvictLocked(Lru::iterator it) {
  for (BlockId b : it->blocks) {
    cached_[b] = 0;
    --cached_count_;
    if (refcount_[b] == 1) --cached_idle_;
  }
  for (auto b = it->blocks.rbegin(); b != it->blocks.rend(); ++b) ReleaseLocked(*b);
  index_.erase(it->key);
  lru_.erase(it);
}

void BlockPool::InsertPrefix(std::span<const uint64_t> keys, std::span<const BlockId> blocks,
                             int per_entry) {
  DAPQ_CHECK(per_entry > 0 && blocks.size() == keys.size() * per_entry);
  MutexLock lock(&mu_);
  // The chain's head ends most recently used, so eviction takes tails first (a tail without its
  // head can never be found again).
  for (size_t i = keys.size(); i-- > 0;) {
    if (auto found = index_.find(keys[i]); found != index_.end()) {
      lru_.splice(lru_.begin(), lru_, found->second);
      continue;
    }
    Entry e{keys[i], std::vector<BlockId>(blocks.begin() + i * per_entry,
                                          blocks.begin() + (i + 1) * per_entry)};
    bool fresh = true;
    for (BlockId b : e.blocks) fresh = fresh && !cached_[b];
    if (!fresh) continue;  // a block belongs to one entry
    for (BlockId b : e.blocks) {
      RetainLocked(b);
      cached_[b] = 1;
      ++cached_count_;
      if (refcount_[b] == 1) ++cached_idle_;
    }
    lru_.push_front(std::move(e));
    index_[keys[i]] = lru_.begin();
  }
}

int BlockPool::LookupPrefix(std::span<const uint64_t> keys, int per_entry,
                            std::vector<BlockId>& out) {
  MutexLock lock(&mu_);
  size_t n = 0;
  while (n < keys.size() && index_.count(keys[n]) > 0) ++n;
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = *index_[keys[i]];
    DAPQ_CHECK(static_cast<int>(e.blocks.size()) == per_entry)
        << "kv pool: prefix entry of " << e.blocks.size() << " blocks, expected " << per_entry;
    for (BlockId b : e.blocks) RetainLocked(b);
    out.insert(out.end(), e.blocks.begin(), e.blocks.end());
  }
  for (size_t i = n; i-- > 0;) lru_.splice(lru_.begin(), lru_, index_[keys[i]]);
  return static_cast<int>(n);
}

void BlockPool::ClearPrefixes() {
  MutexLock lock(&mu_);
  while (!lru_.empty()) EvictLocked(std::prev(lru_.end()));
}

}  // namespace dapq::kvstore
