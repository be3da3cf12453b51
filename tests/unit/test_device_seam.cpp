// The device seam on the CPU: Buffer (alignment, move, growth that never
// shrinks, typed views) and Stream/Event ordering.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>
#include <utility>

#include "switchyard/runtime/buffer.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/stream.hpp"

namespace {

using switchyard::Buffer;
using switchyard::Device;
using switchyard::DeviceKind;
using switchyard::Error;
using switchyard::ErrorCode;
using switchyard::Event;
using switchyard::EventSource;
using switchyard::Stream;

bool aligned64(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

TEST(Buffer, DataIsSixtyFourByteAlignedForOddSizes) {
  for (std::size_t bytes : {1u, 7u, 63u, 64u, 65u, 1000u}) {
    Buffer b(bytes);
    EXPECT_TRUE(aligned64(b.data())) << bytes << " bytes";
    EXPECT_EQ(b.size_bytes(), bytes);
    EXPECT_EQ(b.device(), Device{});
  }
  Buffer empty;
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size_bytes(), 0u);
}

TEST(Buffer, MoveTransfersOwnershipAndEmptiesTheSource) {
  Buffer a(256);
  void* p = a.data();
  Buffer b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size_bytes(), 256u);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(a.size_bytes(), 0u);
  Buffer c(8);
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.capacity_bytes(), 256u);
  static_assert(!std::is_copy_constructible_v<Buffer> && !std::is_copy_assignable_v<Buffer>);
}

TEST(Buffer, ResizeGrowsCapacityKeepsContentsAndNeverShrinks) {
  Buffer b(16);
  std::memset(b.data(), 0x5a, 16);
  b.resize(4096);  // grows: a new allocation, the 16 bytes come along
  EXPECT_EQ(b.capacity_bytes(), 4096u);
  EXPECT_TRUE(aligned64(b.data()));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(static_cast<const unsigned char*>(b.data())[i], 0x5a);
  void* p = b.data();
  b.resize(100);  // shrinks the size, not the capacity: same memory
  EXPECT_EQ(b.size_bytes(), 100u);
  EXPECT_EQ(b.capacity_bytes(), 4096u);
  EXPECT_EQ(b.data(), p);
  b.resize(4096);  // back within capacity: still no allocation
  EXPECT_EQ(b.data(), p);
  b.resize(0);
  EXPECT_EQ(b.capacity_bytes(), 4096u);
  EXPECT_EQ(b.data(), p);
}

TEST(Buffer, TypedViewsCoverTheBytesInUse) {
  Buffer b(10 * sizeof(float));
  auto f = b.span<float>();
  ASSERT_EQ(f.size(), 10u);
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(i) + 0.5f;
  const Buffer& cb = b;
  auto cf = cb.span<const float>();
  EXPECT_EQ(cf.data(), b.data());
  EXPECT_EQ(cf[9], 9.5f);
  EXPECT_EQ(b.span<std::uint8_t>().size(), 40u);
  EXPECT_EQ(b.span<double>().size(), 5u);
  b.resize(6);  // 6 bytes: not a whole number of floats
  EXPECT_THROW(b.span<float>(), Error);
  EXPECT_EQ(b.span<std::uint16_t>().size(), 3u);
}

TEST(Buffer, FailuresAreSwitchyardErrors) {
  try {
    Buffer huge(std::numeric_limits<std::size_t>::max() / 2);
    FAIL() << "allocated " << huge.size_bytes() << " bytes, half the address space";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
  }
  Buffer b(8);
  EXPECT_THROW(b.resize(std::numeric_limits<std::size_t>::max() - 8), Error);
  EXPECT_EQ(b.size_bytes(), 8u);  // unchanged after the failed growth
  EXPECT_THROW(Buffer(8, Device{.kind = DeviceKind::kCuda, .index = 0}), Error);
}

TEST(Event, DefaultAndRecordedCpuEventsAreComplete) {
  Event e;
  EXPECT_TRUE(e.ready());
  e.wait();
  Stream s;
  EXPECT_EQ(s.device().kind, DeviceKind::kCpu);
  Event r = s.record();
  EXPECT_TRUE(r.ready());
  s.synchronize();
  EXPECT_THROW(Stream(Device{.kind = DeviceKind::kCuda}), Error);
  EXPECT_THROW(Stream(Device{.kind = DeviceKind::kCpu, .index = -1}), Error);
}

TEST(Event, BecomesReadyOnlyWhenTheWorkingThreadCompletesIt) {
  EventSource source;
  const Event e = source.event();
  const Event copy = e;
  EXPECT_FALSE(e.ready());
  int value = 0;  // written by the worker before complete(); read after wait()
  std::thread worker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    value = 42;
    source.complete();
  });
  copy.wait();
  EXPECT_EQ(value, 42);
  EXPECT_TRUE(e.ready());
  worker.join();
  EXPECT_THROW(source.complete(), Error);
}

TEST(Stream, WaitOrdersLaterWorkAfterTheEvent) {
  Stream stream;
  EventSource produced;
  std::atomic<int> stage{0};
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    stage = 1;
    produced.complete();
  });
  stream.wait(produced.event());
  // Work submitted after the wait runs after the producer's work.
  const int seen = stage.load();
  stage = 2;
  const Event after = stream.record();
  EXPECT_EQ(seen, 1);
  EXPECT_TRUE(after.ready());
  EXPECT_EQ(stage.load(), 2);
  producer.join();
}

TEST(Event, AFailureIsRethrownAtTheJoinPoint) {
  EventSource source;
  std::thread worker([&] { source.fail(std::make_exception_ptr(Error(ErrorCode::kInternal, "worker failed"))); });
  worker.join();
  try {
    source.event().wait();
    FAIL() << "the failure was lost";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "worker failed");
  }
  Stream stream;
  EXPECT_THROW(stream.wait(source.event()), Error);
  EXPECT_THROW((void)source.event().ready(), Error);
}

}  // namespace
