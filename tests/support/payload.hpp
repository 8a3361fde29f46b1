// Deterministic pseudo-random byte streams: a sender produces them from a seed and the receiver
// checks every byte against the same seed without keeping a copy of a large transfer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel::test {

class PayloadStream {
 public:
  explicit PayloadStream(uint64_t seed) : seed_(seed) {}
  // Appends the next `n` bytes of the stream to `out` (replacing its contents).
  void next(std::string& out, size_t n);
  uint64_t produced() const { return position_; }

 private:
  uint64_t seed_;
  uint64_t position_ = 0;
};

class PayloadChecker {
 public:
  explicit PayloadChecker(uint64_t seed) : expected_(seed) {}
  // Compares `data` with the next bytes of the stream; false from the first mismatch on.
  bool check(std::string_view data);
  uint64_t checked() const { return checked_; }
  std::optional<uint64_t> first_mismatch() const { return mismatch_; }
  uint64_t checksum() const { return checksum_; }  // FNV-1a of the bytes received

 private:
  PayloadStream expected_;
  std::string scratch_;
  uint64_t checked_ = 0;
  uint64_t checksum_ = 0xcbf29ce484222325ULL;
  std::optional<uint64_t> mismatch_;
};

// A whole payload at once, for small transfers.
std::string make_payload(uint64_t seed, size_t size);
uint64_t fnv1a(std::string_view data, uint64_t hash = 0xcbf29ce484222325ULL);

}  // namespace tunnel::test
