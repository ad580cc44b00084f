// cxx-write-server: the issue-16 bar for the spend benchmark. A plain C++
// gRPC server (Debian's gRPC 1.51, callback API) serving
// credits.v1.CreditService/SpendCredits with our generated messages, so the
// same `loadgen --scenario spend` drives it unchanged.
//
// What one SpendCredits does (nothing more: no tenants, no lots, no
// idempotency records, no auth; the metadata is ignored):
//   - validates client_id (1..128 bytes) and amount_minor (> 0),
//   - in the writer's current transaction: debits the client's balance row
//     (created on first use holding --seed-amount; refused with
//     FAILED_PRECONDITION if it would go below 0) and inserts one debit row,
//   - answers a SpendCreditsResponse (spend id "sp-<seq>", seq, amount,
//     client, center, create_time; balance available/total/seq, currency EUR)
//     only after the COMMIT holding it has returned.
// Group commit: one writer thread takes up to --batch (<= 256) queued calls,
// BEGIN IMMEDIATE, applies them, COMMIT (journal_mode=WAL,
// synchronous=FULL: the commit is durable when it returns), then finishes
// each call. If any statement or the COMMIT fails, the batch is rolled back
// and every call in it fails with INTERNAL (a failure status means nothing
// was applied). The queue holds at most --max-queue calls; past that a call
// is refused with RESOURCE_EXHAUSTED.
//
// B-tree writes per spend: the balance row (WITHOUT ROWID table keyed by
// client_id) and the debit row (rowid table, no secondary index): 2.
//
// Usage: cxx-write-server --db PATH [--host 127.0.0.1] [--port 0]
//                         [--batch 256] [--max-queue 65536]
//                         [--seed-amount 1000000000000]
// Prints "listening on HOST:PORT" to stderr once it serves; on SIGTERM or
// SIGINT it stops accepting calls, finishes the queued ones, and prints one
// JSON line of counters to stdout: spends, refused, batches, mean batch,
// writer thread CPU seconds and writer CPU per spend (µs).
#include <grpcpp/grpcpp.h>
#include <sqlite3.h>

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <cassert>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "credits/v1/credits.grpc.pb.h"

namespace {

using credits::v1::CreditService;
using credits::v1::SpendCreditsRequest;
using credits::v1::SpendCreditsResponse;

constexpr int kMaxBatch = 256;
constexpr size_t kMaxClientIdBytes = 128;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "cxx-write-server: %s\n", what.c_str());
  std::exit(2);
}

int64_t WallMicros() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// One call waiting for the writer; the pointers stay valid until Finish.
struct Pending {
  const SpendCreditsRequest* request;
  SpendCreditsResponse* response;
  grpc::ServerUnaryReactor* reactor;
};

// What applying one call produced, kept until the batch's COMMIT returns.
struct Outcome {
  bool applied = false;  // false: refused (insufficient), nothing written
  int64_t seq = 0;
  int64_t available_after = 0;
  int64_t time_micros = 0;
};

class Store {
 public:
  Store(const std::string& path, int64_t seed_amount) : seed_amount_(seed_amount) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK)
      Die("open " + path + ": " + Error());
    Exec("PRAGMA journal_mode=WAL");
    Exec("PRAGMA synchronous=FULL");
    Exec(
        "CREATE TABLE IF NOT EXISTS balances ("
        "  client_id TEXT PRIMARY KEY,"
        "  available_minor INTEGER NOT NULL CHECK (available_minor >= 0)) STRICT, WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS debits ("
        "  seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL,"
        "  amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),"
        "  center_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,"
        "  available_after_minor INTEGER NOT NULL, time_micros INTEGER NOT NULL) STRICT;");
    begin_ = Prepare("BEGIN IMMEDIATE");
    commit_ = Prepare("COMMIT");
    rollback_ = Prepare("ROLLBACK");
    // The balance after the debit, or no row when the debit would overdraw.
    debit_ = Prepare(
        "INSERT INTO balances (client_id, available_minor) VALUES (?1, ?2 - ?3) "
        "ON CONFLICT (client_id) DO UPDATE SET available_minor = available_minor - ?3 "
        "WHERE available_minor >= ?3 RETURNING available_minor");
    insert_ = Prepare(
        "INSERT INTO debits (client_id, amount_minor, center_id, idempotency_key, available_after_minor, time_micros) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  }

  ~Store() {
    for (sqlite3_stmt* s : {begin_, commit_, rollback_, debit_, insert_}) sqlite3_finalize(s);
    sqlite3_close(db_);
  }

  // Applies every call of the batch in one transaction. False if a statement
  // or the COMMIT failed: then the transaction is rolled back and nothing of
  // the batch is applied.
  bool ApplyBatch(const std::vector<Pending>& batch, std::vector<Outcome>* outcomes) {
    assert(!batch.empty() && batch.size() <= size_t(kMaxBatch));
    outcomes->assign(batch.size(), Outcome{});
    if (!Step(begin_)) return false;
    for (size_t i = 0; i < batch.size(); i++) {
      if (!ApplyOne(*batch[i].request, &(*outcomes)[i])) {
        std::fprintf(stderr, "cxx-write-server: batch failed: %s\n", Error().c_str());
        Step(rollback_);
        return false;
      }
    }
    if (!Step(commit_)) {
      std::fprintf(stderr, "cxx-write-server: COMMIT failed: %s\n", Error().c_str());
      Step(rollback_);
      return false;
    }
    return true;
  }

 private:
  // False on a storage error. A refused call (the debit would overdraw, or
  // a new client asks for more than --seed-amount) returns true with
  // out->applied false and writes nothing.
  bool ApplyOne(const SpendCreditsRequest& r, Outcome* out) {
    const int64_t amount = r.amount_minor();
    assert(amount > 0);
    out->time_micros = WallMicros();
    sqlite3_bind_text(debit_, 1, r.client_id().data(), int(r.client_id().size()), SQLITE_STATIC);
    sqlite3_bind_int64(debit_, 2, seed_amount_);
    sqlite3_bind_int64(debit_, 3, amount);
    int rc = sqlite3_step(debit_);
    bool debited = false;
    if (rc == SQLITE_ROW) {
      debited = true;
      out->available_after = sqlite3_column_int64(debit_, 0);
      rc = sqlite3_step(debit_);
    }
    sqlite3_reset(debit_);
    sqlite3_clear_bindings(debit_);
    if (rc == SQLITE_CONSTRAINT) return true;  // a new client's row would start below 0: refused
    if (rc != SQLITE_DONE) return false;
    if (!debited) return true;  // insufficient: the upsert's WHERE left the row as it was
    assert(out->available_after >= 0);

    sqlite3_bind_text(insert_, 1, r.client_id().data(), int(r.client_id().size()), SQLITE_STATIC);
    sqlite3_bind_int64(insert_, 2, amount);
    sqlite3_bind_text(insert_, 3, r.center_id().data(), int(r.center_id().size()), SQLITE_STATIC);
    sqlite3_bind_text(insert_, 4, r.idempotency_key().data(), int(r.idempotency_key().size()), SQLITE_STATIC);
    sqlite3_bind_int64(insert_, 5, out->available_after);
    sqlite3_bind_int64(insert_, 6, out->time_micros);
    const bool ok = Step(insert_);
    if (!ok) return false;
    out->seq = sqlite3_last_insert_rowid(db_);
    out->applied = true;
    return true;
  }

  // Steps a statement to SQLITE_DONE and resets it.
  bool Step(sqlite3_stmt* s) {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE;
  }

  sqlite3_stmt* Prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      Die(std::string("prepare ") + sql + ": " + Error());
    return s;
  }

  void Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK)
      Die(std::string(sql) + ": " + (err ? err : "?"));
  }

  std::string Error() const { return sqlite3_errmsg(db_); }

  sqlite3* db_ = nullptr;
  sqlite3_stmt *begin_ = nullptr, *commit_ = nullptr, *rollback_ = nullptr, *debit_ = nullptr, *insert_ = nullptr;
  const int64_t seed_amount_;
};

class Writer {
 public:
  Writer(Store* store, int max_batch, size_t max_queue)
      : store_(store), max_batch_(max_batch), max_queue_(max_queue) {
    assert(max_batch >= 1 && max_batch <= kMaxBatch);
  }

  // False when the queue is full or the writer is stopping (the caller refuses the call).
  bool Submit(const Pending& p) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || queue_.size() >= max_queue_) return false;
      queue_.push_back(p);
    }
    cv_.notify_one();
    return true;
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
  }

  // The writer thread: batches until stopped and the queue is empty.
  void Run() {
    std::vector<Pending> batch;
    std::vector<Outcome> outcomes;
    batch.reserve(size_t(max_batch_));
    for (;;) {
      batch.clear();
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) break;  // stopping and drained
        while (!queue_.empty() && batch.size() < size_t(max_batch_)) {
          batch.push_back(queue_.front());
          queue_.pop_front();
        }
      }
      const bool committed = store_->ApplyBatch(batch, &outcomes);
      batches_++;
      for (size_t i = 0; i < batch.size(); i++) Answer(batch[i], committed, outcomes[i]);
    }
    writer_cpu_seconds_ = ThreadCpuSeconds();
  }

  void PrintCounters() const {
    const double per_spend = spends_ ? writer_cpu_seconds_ * 1e6 / double(spends_) : 0;
    std::printf(
        "{\"spends\":%lld,\"refused\":%lld,\"failed\":%lld,\"batches\":%lld,\"mean_batch\":%.1f,"
        "\"writer_cpu_s\":%.3f,\"writer_cpu_us_per_spend\":%.1f}\n",
        (long long)spends_, (long long)refused_, (long long)failed_, (long long)batches_,
        batches_ ? double(spends_ + refused_ + failed_) / double(batches_) : 0.0, writer_cpu_seconds_, per_spend);
    std::fflush(stdout);
  }

 private:
  void Answer(const Pending& p, bool committed, const Outcome& o) {
    if (!committed) {
      failed_++;
      p.reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "the batch's transaction failed; nothing applied"));
      return;
    }
    if (!o.applied) {
      refused_++;
      p.reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "insufficient credits"));
      return;
    }
    spends_++;
    const SpendCreditsRequest& r = *p.request;
    auto* spend = p.response->mutable_spend();
    spend->set_id("sp-" + std::to_string(o.seq));
    spend->set_client_id(r.client_id());
    spend->set_amount_minor(r.amount_minor());
    spend->set_reason(r.reason());
    spend->set_center_id(r.center_id());
    spend->set_booking_ref(r.booking_ref());
    spend->set_seq(o.seq);
    spend->mutable_create_time()->set_seconds(o.time_micros / 1000000);
    spend->mutable_create_time()->set_nanos(int32_t(o.time_micros % 1000000) * 1000);
    auto* balance = p.response->mutable_balance();
    balance->set_client_id(r.client_id());
    balance->set_available_minor(o.available_after);
    balance->set_total_minor(o.available_after);
    balance->set_seq(o.seq);
    balance->set_currency("EUR");
    p.reactor->Finish(grpc::Status::OK);
  }

  Store* store_;
  const int max_batch_;
  const size_t max_queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  // Written by the writer thread only; read after it is joined.
  int64_t spends_ = 0, refused_ = 0, failed_ = 0, batches_ = 0;
  double writer_cpu_seconds_ = 0;
};

class Service final : public CreditService::CallbackService {
 public:
  explicit Service(Writer* writer) : writer_(writer) {}

  grpc::ServerUnaryReactor* SpendCredits(grpc::CallbackServerContext* context, const SpendCreditsRequest* request,
                                         SpendCreditsResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const size_t id_bytes = request->client_id().size();
    if (id_bytes == 0 || id_bytes > kMaxClientIdBytes || request->amount_minor() <= 0) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "client_id 1-128 bytes and amount_minor > 0"));
      return reactor;
    }
    if (!writer_->Submit(Pending{request, response, reactor}))
      reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "write queue full"));
    return reactor;
  }

 private:
  Writer* writer_;
};

int64_t ParseInt(const char* flag, const char* v, int64_t lo, int64_t hi) {
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (!v[0] || *end || x < lo || x > hi)
    Die(std::string(flag) + " must be an integer in " + std::to_string(lo) + "..." + std::to_string(hi));
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  std::string db, host = "127.0.0.1";
  int64_t port = 0, batch = kMaxBatch, max_queue = 65536, seed_amount = 1000000000000LL;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Die("missing value after " + a);
    const char* v = argv[++i];
    if (a == "--db") db = v;
    else if (a == "--host") host = v;
    else if (a == "--port") port = ParseInt("--port", v, 0, 65535);
    else if (a == "--batch") batch = ParseInt("--batch", v, 1, kMaxBatch);
    else if (a == "--max-queue") max_queue = ParseInt("--max-queue", v, 1, 1 << 20);
    else if (a == "--seed-amount") seed_amount = ParseInt("--seed-amount", v, 1, INT64_MAX / 2);
    else Die("unknown flag " + a);
  }
  if (db.empty()) Die("--db PATH is required");

  // SIGTERM/SIGINT are taken by sigwait below; blocked before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Store store(db, seed_amount);
  Writer writer(&store, int(batch), size_t(max_queue));
  std::thread writer_thread([&] { writer.Run(); });
  Service service(&writer);

  int selected_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::InsecureServerCredentials(), &selected_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || selected_port == 0) Die("could not listen on " + host + ":" + std::to_string(port));
  std::fprintf(stderr, "cxx-write-server: listening on %s:%d (batch %lld, db %s)\n", host.c_str(), selected_port,
               (long long)batch, db.c_str());

  int sig = 0;
  sigwait(&stop_signals, &sig);
  // Stop accepting; calls already queued are answered by the writer meanwhile.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  writer.Stop();
  writer_thread.join();
  server->Wait();
  writer.PrintCounters();
  return 0;
}
