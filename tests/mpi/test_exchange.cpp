// MpiExchange: the data-plane all-to-all-v of rows, asynchronous and ordered
// by events. Every row encodes {sender, receiver, position in its block,
// tag}, so what each rank must receive follows from the encoding alone.
// Rows from s to d (uneven, zero for some pairs):
//   rows(s, d) = (3s + 5d + 1) % 4; with 4 ranks, s down, d across:
//        d0 d1 d2 d3
//   s0    1  2  3  0
//   s1    0  1  2  3
//   s2    3  0  1  2
//   s3    2  3  0  1
// The second exchange in flight uses rows2(s, d) = (s + 2d) % 3.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "switchyard/comm/exchange.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/runtime/buffer.hpp"

namespace {

using namespace switchyard;

struct Row {
  std::int64_t sender, receiver, position, tag;
};

using RowCount = std::int64_t (*)(int s, int d);
std::int64_t rows_a(int s, int d) { return (3 * s + 5 * d + 1) % 4; }
std::int64_t rows_b(int s, int d) { return (s + 2 * d) % 3; }
std::int64_t no_rows(int, int) { return 0; }

// One rank's side of an exchange: send rows packed by destination, a
// receive buffer one row longer than needed, filled with a sentinel.
struct Side {
  std::vector<std::int64_t> send_rows, recv_rows;
  Buffer send, recv;
};

Side make_side(int me, int R, RowCount rows, std::int64_t tag) {
  Side side;
  std::int64_t num_send = 0, num_recv = 0;
  for (int r = 0; r < R; ++r) {
    side.send_rows.push_back(rows(me, r));
    side.recv_rows.push_back(rows(r, me));
    num_send += rows(me, r);
    num_recv += rows(r, me);
  }
  side.send = Buffer(static_cast<std::size_t>(num_send) * sizeof(Row));
  side.recv = Buffer(static_cast<std::size_t>(num_recv + 1) * sizeof(Row));
  auto send = side.send.span<Row>();
  std::size_t i = 0;
  for (int d = 0; d < R; ++d)
    for (std::int64_t p = 0; p < rows(me, d); ++p) send[i++] = Row{me, d, p, tag};
  for (Row& row : side.recv.span<Row>()) row = Row{-1, -1, -1, -1};
  return side;
}

// What rank `me` must hold: from each sender in rank order, its rows in
// position order, then the untouched sentinel row.
void expect_received(const Side& side, int me, int R, RowCount rows, std::int64_t tag) {
  auto recv = side.recv.span<const Row>();
  std::size_t i = 0;
  for (int s = 0; s < R; ++s)
    for (std::int64_t p = 0; p < rows(s, me); ++p, ++i) {
      const Row& got = recv[i];
      EXPECT_TRUE(got.sender == s && got.receiver == me && got.position == p && got.tag == tag)
          << "rank " << me << " row " << i << ": want {" << s << "," << me << "," << p << "," << tag << "} got {"
          << got.sender << "," << got.receiver << "," << got.position << "," << got.tag << "}";
    }
  ASSERT_EQ(i + 1, recv.size());
  EXPECT_EQ(recv[i].sender, -1) << "rank " << me << ": a row beyond the expected ones was written";
}

Event start(comm::Exchange& ex, Side& side, const Event& previous, Stream& stream) {
  return ex.alltoallv(side.send.data(), side.send_rows.data(), side.recv.data(), side.recv_rows.data(), sizeof(Row),
                      previous, stream);
}

TEST(MpiExchange, UnevenCountsIncludingZeroLandInSenderOrder) {
  comm::MpiExchange ex(MPI_COMM_WORLD);
  const int R = ex.size(), me = ex.rank();
  int same = MPI_UNEQUAL;
  MPI_Comm_compare(ex.handle(), MPI_COMM_WORLD, &same);
  EXPECT_EQ(same, MPI_CONGRUENT) << "the data plane must run on its own duplicate";
  if (R > 1) {
    EXPECT_EQ(rows_a(1, 0), 0) << "the fixture must include an empty block";
  }
  Stream stream;
  Side side = make_side(me, R, rows_a, 7);
  Event done = start(ex, side, Event(), stream);
  while (!done.ready()) std::this_thread::yield();
  done.wait();
  expect_received(side, me, R, rows_a, 7);
  EXPECT_GT(side.recv.size_bytes(), sizeof(Row)) << "every rank receives rows from rank 0";
}

TEST(MpiExchange, TwoExchangesInFlightCompleteInEitherOrder) {
  comm::MpiExchange ex(MPI_COMM_WORLD);
  comm::MpiCommunicator control(MPI_COMM_WORLD);
  const int R = ex.size(), me = ex.rank();
  Stream stream;
  Side a = make_side(me, R, rows_a, 1), b = make_side(me, R, rows_b, 2);
  Event done_a = start(ex, a, Event(), stream);
  Event done_b = start(ex, b, Event(), stream);
  // A control-plane collective while both are in flight matches only its own.
  std::int64_t one = 1;
  control.allreduce_sum(&one, 1);
  EXPECT_EQ(one, R);
  done_b.wait();
  done_a.wait();
  expect_received(a, me, R, rows_a, 1);
  expect_received(b, me, R, rows_b, 2);
}

TEST(MpiExchange, StartsOnlyAfterThePreviousEvent) {
  comm::MpiExchange ex(MPI_COMM_WORLD);
  const int R = ex.size(), me = ex.rank();
  Stream stream;
  Side side = make_side(me, R, rows_a, 3);
  // The send rows are written by another thread that finishes later; an
  // exchange that started early would send the placeholder tag 0.
  const auto send_rows = side.send.span<Row>();
  const std::vector<Row> ready_rows(send_rows.begin(), send_rows.end());
  for (Row& row : send_rows) row.tag = 0;
  EventSource filled;
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto send = side.send.span<Row>();
    for (std::size_t i = 0; i < send.size(); ++i) send[i] = ready_rows[i];
    filled.complete();
  });
  Event done = start(ex, side, filled.event(), stream);
  done.wait();
  producer.join();
  expect_received(side, me, R, rows_a, 3);
}

TEST(MpiExchange, AllZeroCountsComplete) {
  comm::MpiExchange ex(MPI_COMM_WORLD);
  Stream stream;
  Side side = make_side(ex.rank(), ex.size(), no_rows, 4);
  start(ex, side, stream.record(), stream).wait();
  EXPECT_EQ(side.recv.span<const Row>()[0].sender, -1);
}

TEST(MpiExchange, RejectsBadArgumentsOnEveryRank) {
  comm::MpiExchange ex(MPI_COMM_WORLD);
  Stream stream;
  std::vector<std::int64_t> rows(static_cast<std::size_t>(ex.size()), 0);
  EXPECT_THROW(ex.alltoallv(nullptr, rows.data(), nullptr, rows.data(), 0, Event(), stream), Error);
  rows[0] = -1;
  EXPECT_THROW(ex.alltoallv(nullptr, rows.data(), nullptr, rows.data(), 8, Event(), stream), Error);
}

}  // namespace
