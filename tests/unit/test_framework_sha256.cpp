// SHA-256 against the FIPS 180-4 / NIST example vectors, and the x86 SHA-extension path against the
// portable rounds on random data split into random-sized updates.
#include <gtest/gtest.h>

#include <string>

#include "framework/rng.h"
#include "framework/sha256.h"

using namespace moe;

namespace {
std::string hex_of(const std::string& data, bool hw) {
  Sha256 s(hw);
  s.update(data);
  return s.hex();
}
}  // namespace

TEST(Sha256, NistVectors) {
  for (bool hw : {false, true}) {
    EXPECT_EQ(hex_of("", hw), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(hex_of("abc", hw), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(hex_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", hw),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(hex_of(std::string(1000000, 'a'), hw),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
}

TEST(Sha256, ExtensionsMatchPortableOnChunkedRandomData) {
  std::string data(100000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(rng_bits(1, 2, i));
  for (int trial = 0; trial < 20; ++trial) {
    size_t n = rng_bits(3, 4, trial) % data.size();
    Sha256 hw(true), sw(false);
    for (size_t pos = 0; pos < n;) {
      size_t take = std::min<size_t>(n - pos, 1 + rng_bits(5, trial, pos) % 300);
      hw.update(data.data() + pos, take);
      sw.update(data.data() + pos, take);
      pos += take;
    }
    EXPECT_EQ(hw.hex(), sw.hex()) << "length " << n;
  }
}
