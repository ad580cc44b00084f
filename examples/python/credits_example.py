#!/usr/bin/env python3
"""A whole credits.v1 flow with stock grpcio and stubs generated from proto/:
tenant -> staff key -> credit package -> purchase -> spend -> a refused
overspend (its google.rpc.ErrorInfo decoded) -> statement.

Usage: credits_example.py [--target HOST:PORT] [--admin-token-file FILE] [--gen DIR]
The admin token is the one the server was started with (--admin-key-file).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:50051", help="server address (default 127.0.0.1:50051)")
    ap.add_argument("--admin-token-file", default="data/admin.token", help="file holding the admin token")
    ap.add_argument("--gen", default=str(HERE / "gen"), help="directory with the generated stubs (./run makes it)")
    args = ap.parse_args()

    sys.path.insert(0, args.gen)
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from credits.v1 import admin_pb2, admin_pb2_grpc, common_pb2
    from credits.v1 import credits_pb2, credits_pb2_grpc, packages_pb2, packages_pb2_grpc

    try:
        admin_token = Path(args.admin_token_file).read_text().strip()
    except OSError as e:
        print(f"cannot read the admin token file {args.admin_token_file}: {e.strerror}", file=sys.stderr)
        return 2
    run = uuid.uuid4().hex[:8]  # makes ids and idempotency keys unique per run
    channel = grpc.insecure_channel(args.target)
    timeout = 10

    # 1. A tenant and a staff key, with the admin token.
    admin_md = [("authorization", f"Bearer {admin_token}")]
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    tenant = admin.CreateTenant(admin_pb2.CreateTenantRequest(
        tenant_id=f"gym-{run}", name="Example Gym", currency="EUR"), metadata=admin_md, timeout=timeout)
    print(f"tenant     {tenant.id} ({tenant.currency})")
    key = admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
        tenant_id=tenant.id, role=admin_pb2.ROLE_STAFF, label="example"), metadata=admin_md, timeout=timeout)
    print(f"key        {key.key.id} (role STAFF; token printed once by the server, kept in memory here)")

    # Every later call carries the staff token.
    md = [("authorization", f"Bearer {key.token}")]
    packages = packages_pb2_grpc.CreditPackageServiceStub(channel)
    credit = credits_pb2_grpc.CreditServiceStub(channel)

    # 2. A credit package, bought by a client.
    pkg = packages.CreateCreditPackage(packages_pb2.CreateCreditPackageRequest(
        name="Ten visits", credits_minor=1000, price_minor=900, validity_days=365,
        idempotency_key=f"pkg-{run}"), metadata=md, timeout=timeout)
    print(f"package    {pkg.id} \"{pkg.name}\": {pkg.credits_minor} credits for {pkg.price_minor}")
    bought = credit.PurchaseCreditPackage(credits_pb2.PurchaseCreditPackageRequest(
        client_id="alice", package_id=pkg.id, center_id="c1", payment_ref=f"pay-{run}",
        idempotency_key=f"buy-{run}"), metadata=md, timeout=timeout)
    print(f"purchase   lot {bought.lot.id}: +{bought.lot.amount_minor}, available {bought.balance.available_minor}")

    # 3. A spend within the balance.
    spent = credit.SpendCredits(credits_pb2.SpendCreditsRequest(
        client_id="alice", amount_minor=300, center_id="c1", reason=credits_pb2.SPEND_REASON_SERVICE,
        idempotency_key=f"spend-{run}"), metadata=md, timeout=timeout)
    print(f"spend      {spent.spend.id}: -300, available {spent.balance.available_minor}")

    # 4. A spend beyond it: refused, nothing applied; the reason is in the
    #    google.rpc.Status details (grpc-status-details-bin).
    try:
        credit.SpendCredits(credits_pb2.SpendCreditsRequest(
            client_id="alice", amount_minor=5000, center_id="c1", reason=credits_pb2.SPEND_REASON_SERVICE,
            idempotency_key=f"overspend-{run}"), metadata=md, timeout=timeout)
        print("overspend  was accepted: expected a refusal", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        status = rpc_status.from_call(err)
        info = None
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
        if info is None:
            print(f"overspend  refused without ErrorInfo: {err.code().name} {err.details()}", file=sys.stderr)
            return 1
        meta = " ".join(f"{k}={v}" for k, v in sorted(info.metadata.items()))
        print(f"overspend  refused: {err.code().name} reason={info.reason} domain={info.domain} {meta}")
        print(f"           message: {err.details()}")

    # 5. The statement, oldest first, following page tokens.
    print("statement")
    token = ""
    while True:
        page = credit.ListLedgerEntries(credits_pb2.ListLedgerEntriesRequest(
            client_id="alice", oldest_first=True, page_token=token), metadata=md, timeout=timeout)
        for e in page.entries:
            kind = common_pb2.EntryType.Name(e.type).removeprefix("ENTRY_TYPE_")
            print(f"  seq {e.seq:<3} {kind:<9} {e.amount_minor:>6}  available after {e.available_after_minor}")
        token = page.next_page_token
        if not token:
            break
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
