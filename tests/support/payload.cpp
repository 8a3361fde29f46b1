// Seeded byte streams and their streaming checker.
#include "support/payload.hpp"

#include <cstring>

namespace tunnel::test {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

void PayloadStream::next(std::string& out, size_t n) {
  out.resize(n);
  // Byte i of the stream is byte (i % 8) of splitmix64(seed ^ i / 8): any position is computable.
  for (size_t i = 0; i < n; ++i, ++position_) {
    const uint64_t word = splitmix64(seed_ * 0x2545f4914f6cdd1dULL ^ (position_ >> 3));
    out[i] = static_cast<char>(word >> ((position_ & 7) * 8));
    // Fill the rest of this 8-byte word without recomputing it.
    while (i + 1 < n && ((position_ + 1) & 7) != 0) {
      ++i;
      ++position_;
      out[i] = static_cast<char>(word >> ((position_ & 7) * 8));
    }
  }
}

bool PayloadChecker::check(std::string_view data) {
  checksum_ = fnv1a(data, checksum_);
  expected_.next(scratch_, data.size());
  if (!mismatch_ && std::memcmp(scratch_.data(), data.data(), data.size()) != 0) {
    for (size_t i = 0; i < data.size(); ++i) {
      if (scratch_[i] != data[i]) {
        mismatch_ = checked_ + i;
        break;
      }
    }
  }
  checked_ += data.size();
  return !mismatch_;
}

std::string make_payload(uint64_t seed, size_t size) {
  std::string out;
  PayloadStream(seed).next(out, size);
  return out;
}

uint64_t fnv1a(std::string_view data, uint64_t hash) {
  for (unsigned char c : data) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

}  // namespace tunnel::test
