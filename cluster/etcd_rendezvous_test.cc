// File: cluster/etcd_rendezvous_test.cc
// The rendezvous protocol against a real etcd, ranks as threads (the Gloo side with processes
// is worker/comm/etcd_store_test.cc): rank 1 alone waits and writes nothing; rank 1 started
// before rank 0 joins rank 0's incarnation; Finish leaves only the counter; a newcomer cannot
// claim a taken slot; a new rank 0 supersedes the old incarnation (CheckCurrent Aborted) and
// rank 1 then joins the new one; a rank 0 that goes away abandons its incarnation; options are
// validated.
#include "cluster/etcd_rendezvous.h"

#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/util/etcd_server.h"
#include "tests/util/status_matchers.h"

namespace dapq::cluster {
namespace {
using ::dapq::testing::EtcdServer;
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

std::shared_ptr<EtcdClient> Client(const EtcdServer& etcd) {
  absl::StatusOr<std::unique_ptr<EtcdClient>> c = EtcdClient::FromUrl(etcd.url());
  EXPECT_TRUE(c.ok()) << c.status();
  return std::shared_ptr<EtcdClient>(std::move(*c));
}

EtcdRendezvousOptions Options(int rank, int size = 2) {
  EtcdRendezvousOptions o;
  o.prefix = "/test";
  o.group_id = "g0";
  o.rank = rank;
  o.size = size;
  o.lease_ttl_s = 2;
  return o;
}

absl::Time In(absl::Duration d) { return absl::Now() + d; }

std::vector<std::string> Keys(EtcdClient& client, const std::string& prefix) {
  absl::StatusOr<EtcdRange> range = client.GetPrefix(prefix);
  EXPECT_TRUE(range.ok()) << range.status();
  std::vector<std::string> keys;
  if (range.ok()) {
    for (const EtcdKeyValue& kv : range->kvs) keys.push_back(kv.key);
  }
  return keys;
}

TEST(EtcdRendezvousTest, Rank1AloneWaitsAndWritesNothing) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  EXPECT_THAT(EtcdRendezvous::Join(client, Options(1), In(absl::Milliseconds(300))).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       ::testing::AllOf(HasSubstr("g0"), HasSubstr("rank 1"))));
  EXPECT_TRUE(Keys(*client, "/test/").empty());
}

TEST(EtcdRendezvousTest, Rank1FirstJoinsRank0sIncarnationAndFinishLeavesOnlyTheCounter) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  absl::Notification rank1_started, rank1_joined, mesh_formed;
  absl::StatusOr<std::unique_ptr<EtcdRendezvous>> rank1;
  absl::Status rank1_finish;
  std::thread t([&] {
    rank1_started.Notify();
    rank1 = EtcdRendezvous::Join(client, Options(1), In(absl::Seconds(20)));
    rank1_joined.Notify();
    if (!rank1.ok()) return;
    // Stands for the store exchange and the barrier over the new mesh.
    mesh_formed.WaitForNotification();
    rank1_finish = (*rank1)->Finish(In(absl::Seconds(20)));
  });
  rank1_started.WaitForNotification();
  absl::StatusOr<std::unique_ptr<EtcdRendezvous>> rank0 =
      EtcdRendezvous::Join(client, Options(0), In(absl::Seconds(20)));
  rank1_joined.WaitForNotification();
  ASSERT_TRUE(rank0.ok()) << rank0.status();
  ASSERT_TRUE(rank1.ok()) << rank1.status();
  EXPECT_EQ((*rank0)->incarnation(), 1);
  EXPECT_EQ((*rank1)->incarnation(), 1);
  EXPECT_EQ((*rank0)->store_prefix(), "/test/rendezvous/g0/1/store/");
  EXPECT_EQ((*rank1)->store_prefix(), (*rank0)->store_prefix());
  EXPECT_THAT((*rank0)->CheckCurrent(), IsOk());
  EXPECT_THAT((*rank1)->CheckCurrent(), IsOk());
  // Both ranks' keys live under their leases until Finish.
  ASSERT_THAT(client->Put((*rank0)->store_prefix() + "0", "addr0", (*rank0)->lease_id()).status(),
              IsOk());
  ASSERT_THAT(client->Put((*rank1)->store_prefix() + "1", "addr1", (*rank1)->lease_id()).status(),
              IsOk());
  EXPECT_EQ(Keys(*client, "/test/").size(), 6u);  // counter, open, 2 members, 2 store keys
  mesh_formed.Notify();
  // Rank 1's Finish waits for rank 0's to close the incarnation.
  EXPECT_THAT((*rank0)->Finish(In(absl::Seconds(20))), IsOk());
  t.join();
  EXPECT_THAT(rank1_finish, IsOk());
  EXPECT_EQ(Keys(*client, "/test/"), std::vector<std::string>{"/test/rendezvous/g0/incarnation"});
}

TEST(EtcdRendezvousTest, TakenSlotNewRank0SupersedesAndAbandonedIncarnation) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_OK_AND_ASSIGN(auto rank0, EtcdRendezvous::Join(client, Options(0), In(absl::Seconds(5))));
  ASSERT_OK_AND_ASSIGN(auto rank1, EtcdRendezvous::Join(client, Options(1), In(absl::Seconds(5))));
  EXPECT_EQ(rank1->incarnation(), 1);
  // A second process claiming rank 1 in the same incarnation is kept out.
  EXPECT_THAT(EtcdRendezvous::Join(client, Options(1), In(absl::Milliseconds(300))).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("rank 1 taken")));

  // A restarted rank 0 opens incarnation 2: the old one is superseded for everybody.
  ASSERT_OK_AND_ASSIGN(auto new_rank0,
                       EtcdRendezvous::Join(client, Options(0), In(absl::Seconds(5))));
  EXPECT_EQ(new_rank0->incarnation(), 2);
  EXPECT_THAT(rank1->CheckCurrent(), StatusIs(absl::StatusCode::kAborted, HasSubstr("1")));
  EXPECT_THAT(rank0->CheckCurrent(), StatusIs(absl::StatusCode::kAborted));
  ASSERT_OK_AND_ASSIGN(auto new_rank1,
                       EtcdRendezvous::Join(client, Options(1), In(absl::Seconds(5))));
  EXPECT_EQ(new_rank1->incarnation(), 2);
  EXPECT_THAT(new_rank1->CheckCurrent(), IsOk());

  // Rank 0 goes away without finishing (its lease is revoked): the incarnation is abandoned.
  new_rank0.reset();
  EXPECT_THAT(new_rank1->CheckCurrent(),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("abandoned")));
  rank0.reset();
  rank1.reset();
  new_rank1.reset();
  EXPECT_EQ(Keys(*client, "/test/"), std::vector<std::string>{"/test/rendezvous/g0/incarnation"});
}

TEST(EtcdRendezvousTest, ValidatesOptions) {
  EtcdRendezvousOptions o = Options(0);
  o.group_id = "";
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("group_id")));
  o.group_id = "a/b";
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a/b")));
  o = Options(2, 2);
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank=2")));
  o = Options(0);
  o.lease_ttl_s = 0;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EtcdRendezvous::Join(nullptr, Options(0), In(absl::Seconds(1))).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dapq::cluster
