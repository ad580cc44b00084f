// A whole credits.v1 flow with stock gRPC C++ and stubs generated from proto/
// by protoc and grpc_cpp_plugin: tenant -> staff key -> credit package ->
// purchase -> spend -> a refused overspend (its google.rpc.ErrorInfo decoded
// from grpc-status-details-bin) -> statement.
//
//   credits_example [--target HOST:PORT] [--admin-token-file FILE]
//
// The admin token is the one the server was started with (--admin-key-file).

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "credits/v1/admin.grpc.pb.h"
#include "credits/v1/credits.grpc.pb.h"
#include "credits/v1/packages.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace v1 = credits::v1;

namespace {

const char* kCodeNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                            "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                            "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                            "UNAUTHENTICATED"};

std::string CodeName(grpc::StatusCode code) {
  int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kCodeNames[c] : std::to_string(c);
}

// Each call gets its own context: the bearer token and a 10 s deadline.
std::unique_ptr<grpc::ClientContext> Call(const std::string& token) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return ctx;
}

// Throws with the method name and the status when a call fails.
void Check(const grpc::Status& s, const char* method) {
  if (!s.ok()) {
    throw std::runtime_error(std::string(method) + ": " + CodeName(s.error_code()) + " " + s.error_message());
  }
}

int Run(const std::string& target, const std::string& token_file) {
  std::ifstream in(token_file);
  std::string admin_token;
  if (!in || !(in >> admin_token)) {
    std::cerr << "cannot read the admin token file " << token_file << "\n";
    return 2;
  }
  std::random_device rd;
  char run_buf[9];
  std::snprintf(run_buf, sizeof run_buf, "%08x", rd());
  const std::string run = run_buf;  // makes ids and idempotency keys unique per run

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto admin = v1::AdminService::NewStub(channel);
  auto packages = v1::CreditPackageService::NewStub(channel);
  auto credit = v1::CreditService::NewStub(channel);

  // 1. A tenant and a staff key, with the admin token.
  v1::CreateTenantRequest treq;
  treq.set_tenant_id("gym-" + run);
  treq.set_name("Example Gym");
  treq.set_currency("EUR");
  v1::Tenant tenant;
  Check(admin->CreateTenant(Call(admin_token).get(), treq, &tenant), "CreateTenant");
  std::printf("tenant     %s (%s)\n", tenant.id().c_str(), tenant.currency().c_str());

  v1::CreateApiKeyRequest kreq;
  kreq.set_tenant_id(tenant.id());
  kreq.set_role(v1::ROLE_STAFF);
  kreq.set_label("example");
  v1::CreateApiKeyResponse key;
  Check(admin->CreateApiKey(Call(admin_token).get(), kreq, &key), "CreateApiKey");
  std::printf("key        %s (role STAFF; token printed once by the server, kept in memory here)\n",
              key.key().id().c_str());
  const std::string staff = key.token();  // every later call carries it

  // 2. A credit package, bought by a client.
  v1::CreateCreditPackageRequest preq;
  preq.set_name("Ten visits");
  preq.set_credits_minor(1000);
  preq.set_price_minor(900);
  preq.set_validity_days(365);
  preq.set_idempotency_key("pkg-" + run);
  v1::CreditPackage pkg;
  Check(packages->CreateCreditPackage(Call(staff).get(), preq, &pkg), "CreateCreditPackage");
  std::printf("package    %s \"%s\": %lld credits for %lld\n", pkg.id().c_str(), pkg.name().c_str(),
              static_cast<long long>(pkg.credits_minor()), static_cast<long long>(pkg.price_minor()));

  v1::PurchaseCreditPackageRequest buy;
  buy.set_client_id("alice");
  buy.set_package_id(pkg.id());
  buy.set_center_id("c1");
  buy.set_payment_ref("pay-" + run);
  buy.set_idempotency_key("buy-" + run);
  v1::PurchaseCreditPackageResponse bought;
  Check(credit->PurchaseCreditPackage(Call(staff).get(), buy, &bought), "PurchaseCreditPackage");
  std::printf("purchase   lot %s: +%lld, available %lld\n", bought.lot().id().c_str(),
              static_cast<long long>(bought.lot().amount_minor()),
              static_cast<long long>(bought.balance().available_minor()));

  // 3. A spend within the balance.
  v1::SpendCreditsRequest spend;
  spend.set_client_id("alice");
  spend.set_amount_minor(300);
  spend.set_center_id("c1");
  spend.set_reason(v1::SPEND_REASON_SERVICE);
  spend.set_idempotency_key("spend-" + run);
  v1::SpendCreditsResponse spent;
  Check(credit->SpendCredits(Call(staff).get(), spend, &spent), "SpendCredits");
  std::printf("spend      %s: -300, available %lld\n", spent.spend().id().c_str(),
              static_cast<long long>(spent.balance().available_minor()));

  // 4. A spend beyond it: refused, nothing applied; the reason is in the
  //    google.rpc.Status details (grpc-status-details-bin).
  spend.set_amount_minor(5000);
  spend.set_idempotency_key("overspend-" + run);
  v1::SpendCreditsResponse ignored;
  grpc::Status refused = credit->SpendCredits(Call(staff).get(), spend, &ignored);
  if (refused.ok()) {
    std::cerr << "the overspend was accepted: expected a refusal\n";
    return 1;
  }
  google::rpc::Status details;
  google::rpc::ErrorInfo info;
  bool have_info = false;
  if (details.ParseFromString(refused.error_details())) {
    for (const auto& any : details.details()) {
      if (any.Is<google::rpc::ErrorInfo>() && any.UnpackTo(&info)) have_info = true;
    }
  }
  if (!have_info) {
    std::cerr << "the overspend was refused without ErrorInfo: " << CodeName(refused.error_code()) << " "
              << refused.error_message() << "\n";
    return 1;
  }
  std::map<std::string, std::string> meta(info.metadata().begin(), info.metadata().end());  // sorted
  std::string meta_text;
  for (const auto& [k, v] : meta) meta_text += (meta_text.empty() ? "" : " ") + k + "=" + v;
  std::printf("overspend  refused: %s reason=%s domain=%s %s\n", CodeName(refused.error_code()).c_str(),
              info.reason().c_str(), info.domain().c_str(), meta_text.c_str());
  std::printf("           message: %s\n", refused.error_message().c_str());

  // 5. The statement, oldest first, following page tokens.
  std::printf("statement\n");
  std::string page_token;
  do {
    v1::ListLedgerEntriesRequest lreq;
    lreq.set_client_id("alice");
    lreq.set_oldest_first(true);
    lreq.set_page_token(page_token);
    v1::ListLedgerEntriesResponse page;
    Check(credit->ListLedgerEntries(Call(staff).get(), lreq, &page), "ListLedgerEntries");
    for (const auto& e : page.entries()) {
      std::string kind = v1::EntryType_Name(e.type());
      if (kind.rfind("ENTRY_TYPE_", 0) == 0) kind = kind.substr(11);
      std::printf("  seq %-3lld %-9s %6lld  available after %lld\n", static_cast<long long>(e.seq()), kind.c_str(),
                  static_cast<long long>(e.amount_minor()), static_cast<long long>(e.available_after_minor()));
    }
    page_token = page.next_page_token();
  } while (!page_token.empty());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:50051";
  std::string token_file = "data/admin.token";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--target" && i + 1 < argc) {
      target = argv[++i];
    } else if (a == "--admin-token-file" && i + 1 < argc) {
      token_file = argv[++i];
    } else {
      std::cerr << "usage: " << argv[0] << " [--target HOST:PORT] [--admin-token-file FILE]\n";
      return 2;
    }
  }
  try {
    return Run(target, token_file);
  } catch (const std::exception& e) {
    std::cerr << "credits_example: " << e.what() << "\n";
    return 1;
  }
}
