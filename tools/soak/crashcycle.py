"""kill -9 crash-cycle soak of `credits serve` (SPEC §6: an acknowledged write
survives kill -9; an unacknowledged one is fully there or fully absent; every
write is exactly-once through its idempotency key; verify always passes).

Each cycle: start the server on the one SQLite file, run mixed writes from
many threads (credit orders, package purchases, spends, holds, captures,
releases, reversals over a few hundred clients, each request with its own
idempotency key), SIGKILL the server 0.3–3 s in, `credits verify` the file as
the crash left it, restart, resend every request whose outcome is unknown
byte for byte until it gets a definite answer, then check:

* lost = 0: every acknowledged write is found by GetOperation with the same
  result id and original response, a byte-for-byte replay returns the
  original response, and its ledger entries exist;
* doubled = 0: no idempotency key has two entries of one type, every client's
  balance (total, held) equals the sum of the effects of its distinct
  acknowledged operations, every ledger entry belongs to an acknowledged
  operation, and no definitely failed request left anything behind;
* `credits verify --db FILE` exits 0 after every cycle (crash state and after
  the checks).

Entry point: run(...) -> summary dict (see tools/soak/crash-cycle).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

import soaklib as L

SVC = "/credits.v1.CreditService/"
CENTERS = ["c1", "c2", "c3"]
# Weights of the operation mix.
MIX = {"order": 16, "purchase": 10, "spend": 30, "hold": 18, "capture": 9, "release": 8, "reverse": 9}
# Codes that are a definite answer (nothing applied unless OK). Anything else is unknown.
DEFINITE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED}
TIMEOUT = 10.0  # per call; the brief: nothing under 5 s
PACKAGE_CREDITS = 1500
# Ledger entry types each operation writes (capture of part also releases the rest).
ENTRY_TYPES = {"order": ("ENTRY_TYPE_ORDER",), "purchase": ("ENTRY_TYPE_PURCHASE",), "spend": ("ENTRY_TYPE_SPEND",),
               "hold": ("ENTRY_TYPE_HOLD",), "capture": ("ENTRY_TYPE_CAPTURE", "ENTRY_TYPE_RELEASE"),
               "release": ("ENTRY_TYPE_RELEASE",), "reverse": ("ENTRY_TYPE_REVERSAL",)}
METHOD = {"order": "CreateCreditOrder", "purchase": "PurchaseCreditPackage", "spend": "SpendCredits",
          "hold": "CreateHold", "capture": "CaptureHold", "release": "ReleaseHold", "reverse": "ReverseSpend"}


@dataclass
class Req:
    rid: int
    cycle: int
    op: str
    key: str
    client: str
    body: bytes
    amount: int = 0          # the request's amount (capture: 0 = whole hold)
    parent: "Req | None" = None  # capture/release: the hold; reverse: the spend
    status: str = "pending"  # ok | failed | unknown
    reply: bytes | None = None
    code: str = ""
    reason: str = ""
    attempts: int = 0
    was_unknown: bool = False
    resolved_cycle: int | None = None
    checked: bool = False

    @property
    def path(self) -> str:
        return SVC + METHOD[self.op]


class Soak:
    def __init__(self, binary: Path, workdir: Path, cycles: int, threads: int = 16, clients: int = 300,
                 seed: int | None = None, min_kill: float = 0.3, max_kill: float = 3.0, log=print):
        self.stubs = L.load_stubs()
        self.C = self.stubs.credits
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.cycles = cycles
        self.threads = threads
        self.clients = [f"cl-{i:04d}" for i in range(clients)]
        self.seed = seed if seed is not None else random.randrange(1 << 31)
        self.rng = random.Random(self.seed)
        self.min_kill, self.max_kill = min_kill, max_kill
        self.log = log
        self.server = L.Server(self.binary, self.workdir, admin_token=L.new_token())
        self.reqs: list[Req] = []
        self.lock = threading.Lock()
        self.open_holds: list[Req] = []     # acknowledged holds nobody settles yet
        self.spends: list[Req] = []         # acknowledged spends nobody reverses yet
        self.next_rid = 0
        self.tenant = None
        self.package_id = None
        self.problems: list[str] = []
        self.counts = defaultdict(int)
        self.verify_results: list[dict] = []
        self.cycle_stats: list[dict] = []
        self.run_id = f"{int(time.time())}-{self.seed}"

    # ------------------------------------------------------------ setup

    def problem(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        if len(self.problems) < 200:
            self.problems.append(f"{kind}: {text}")
        self.log(f"  PROBLEM {kind}: {text}")

    def md(self):
        return L.bearer(self.tenant.staff)

    def setup(self, channel) -> None:
        self.tenant = L.create_tenant(self.stubs, channel, self.server.admin_token, f"soak-{self.run_id}")
        P = self.stubs.packages
        pkg = self.stubs.packages_grpc.CreditPackageServiceStub(channel).CreateCreditPackage(
            P.CreateCreditPackageRequest(name="Soak pack", credits_minor=PACKAGE_CREDITS, price_minor=1200,
                                         idempotency_key=f"pkg-{self.run_id}"), metadata=self.md(), timeout=TIMEOUT)
        self.package_id = pkg.id
        (self.workdir / "tenant.json").write_text(json.dumps(
            {"tenant": self.tenant.tenant_id, "staff_token": self.tenant.staff, "package_id": pkg.id,
             "admin_key_file": str(self.server.admin_key_file), "db": str(self.server.db)}, indent=1))

    # ------------------------------------------------------------ requests

    def build(self, rng: random.Random, cycle: int) -> Req | None:
        C = self.C
        op = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        with self.lock:
            rid = self.next_rid
            self.next_rid += 1
            parent = None
            if op in ("capture", "release"):
                if not self.open_holds:
                    op = "hold"
                else:
                    parent = self.open_holds.pop(rng.randrange(len(self.open_holds)))
            elif op == "reverse":
                if not self.spends:
                    op = "spend"
                else:
                    parent = self.spends.pop(rng.randrange(len(self.spends)))
        key = f"soak-{self.run_id}-{cycle}-{rid}-{op}"
        client = parent.client if parent else rng.choice(self.clients)
        center = rng.choice(CENTERS)
        amount = 0
        if op == "order":
            amount = rng.randint(100, 3000)
            msg = C.CreateCreditOrderRequest(client_id=client, amount_minor=amount, price_minor=rng.randint(0, amount),
                                             center_id=center, note=f"soak {rid}", idempotency_key=key)
        elif op == "purchase":
            amount = PACKAGE_CREDITS
            msg = C.PurchaseCreditPackageRequest(client_id=client, package_id=self.package_id, center_id=center,
                                                 payment_ref=f"pay-{rid}", idempotency_key=key)
        elif op == "spend":
            amount = rng.randint(1, 2500)  # about what orders and purchases add: some spends keep failing
            msg = C.SpendCreditsRequest(client_id=client, amount_minor=amount, reason=rng.randint(1, 4),
                                        center_id=center, booking_ref=f"bk-{rid}", idempotency_key=key)
        elif op == "hold":
            amount = rng.randint(1, 1500)
            msg = C.CreateHoldRequest(client_id=client, amount_minor=amount, center_id=center, booking_ref=f"bk-{rid}",
                                      expire_time={"seconds": int(time.time()) + 7 * 86400}, idempotency_key=key)
        elif op == "capture":
            amount = 0 if rng.random() < 0.5 else rng.randint(1, parent.amount)
            msg = C.CaptureHoldRequest(hold_id=self.result_id(parent), amount_minor=amount,
                                       reason=rng.randint(0, 4), idempotency_key=key)
        elif op == "release":
            msg = C.ReleaseHoldRequest(hold_id=self.result_id(parent), idempotency_key=key)
        else:  # reverse
            amount = rng.randint(1, parent.amount)
            msg = C.ReverseSpendRequest(spend_id=self.result_id(parent), amount_minor=amount, reason="soak refund",
                                        idempotency_key=key)
        req = Req(rid=rid, cycle=cycle, op=op, key=key, client=client, body=msg.SerializeToString(), amount=amount,
                  parent=parent)
        with self.lock:
            self.reqs.append(req)
        return req

    def reply_type(self, op: str):
        C = self.C
        return {"order": C.CreateCreditOrderResponse, "purchase": C.PurchaseCreditPackageResponse,
                "spend": C.SpendCreditsResponse, "hold": C.HoldResponse, "capture": C.HoldResponse,
                "release": C.HoldResponse, "reverse": C.SpendCreditsResponse}[op]

    def result_id(self, req: Req) -> str:
        r = self.reply_type(req.op).FromString(req.reply)
        if req.op in ("order", "purchase"):
            return r.lot.id
        if req.op in ("spend", "reverse"):
            return r.spend.id
        return r.hold.id

    def send(self, call: L.RawCaller, req: Req) -> str:
        """One attempt; records the outcome. Returns ok | failed | unknown."""
        req.attempts += 1
        try:
            reply = call(req.path, req.body, metadata=self.md(), timeout=TIMEOUT)
        except grpc.RpcError as e:
            code = e.code()
            if code in DEFINITE:
                req.status, req.code, req.reason = "failed", code.name, L.error_reason(e)
            else:
                req.status, req.code = "unknown", code.name
                if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    self.counts[f"status_{code.name}"] += 1
            return req.status
        req.status, req.reply, req.code = "ok", reply, "OK"
        return "ok"

    def after_ok(self, req: Req) -> None:
        """Makes an acknowledged hold or spend available to later captures/releases/reversals."""
        with self.lock:
            if req.op == "hold":
                self.open_holds.append(req)
            elif req.op == "spend":
                self.spends.append(req)

    # ------------------------------------------------------------ one cycle

    def workload(self, cycle: int, stop: threading.Event, out: dict) -> list[threading.Thread]:
        channel = self.server.channel()
        call = L.RawCaller(channel)
        out["channel"] = channel

        def worker(w: int):
            rng = random.Random(f"{self.seed}-{cycle}-{w}")
            while not stop.is_set():
                req = self.build(rng, cycle)
                if self.send(call, req) == "ok":
                    self.after_ok(req)
                elif req.status == "unknown":
                    req.was_unknown = True

        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(self.threads)]
        for t in threads:
            t.start()
        return threads

    def resolve_unknown(self, cycle: int) -> tuple[int, int]:
        """Resends every request of unknown outcome byte for byte until a definite answer."""
        pending = [r for r in self.reqs if r.status == "unknown"]
        if not pending:
            return 0, 0
        channel = self.server.channel()
        call = L.RawCaller(channel)
        resolved = 0

        def one(req: Req):
            for attempt in range(30):
                if self.send(call, req) != "unknown":
                    req.resolved_cycle = cycle
                    if req.status == "ok":
                        self.after_ok(req)
                    return True
                time.sleep(min(2.0, 0.1 * (attempt + 1)))
            return False

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, pending))
        channel.close()
        resolved = sum(results)
        for req, ok in zip(pending, results):
            if not ok:
                self.problem("unresolved", f"{req.op} {req.key}: still {req.code} after {req.attempts} attempts")
        return len(pending), resolved

    def run_cycle(self, cycle: int) -> dict:
        t0 = time.monotonic()
        self.server.start()
        stats = {"cycle": cycle, "port": self.server.port}
        if self.tenant is None:
            ch = self.server.channel()
            self.setup(ch)
            ch.close()
        # Requests left unknown by the previous crash: resend before new load.
        n_unknown, n_resolved = self.resolve_unknown(cycle)
        stats["resent"], stats["resolved"] = n_unknown, n_resolved
        # Check what the previous cycle(s) acknowledged, now that the crash happened.
        self.check(cycle, stats, final=False)
        before = len(self.reqs)
        stop = threading.Event()
        holder: dict = {}
        threads = self.workload(cycle, stop, holder)
        delay = self.rng.uniform(self.min_kill, self.max_kill)
        time.sleep(delay)
        alive_before_kill = self.server.alive()
        self.server.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT + 5)
        holder["channel"].close()
        if not alive_before_kill:
            self.problem("server_died", f"cycle {cycle}: the server exited before the kill\n{self.server.stderr_tail()}")
        mine = self.reqs[before:]
        stats.update(kill_after_s=round(delay, 3), requests=len(mine),
                     acknowledged=sum(r.status == "ok" for r in mine),
                     failed=sum(r.status == "failed" for r in mine),
                     unknown=sum(r.status == "unknown" for r in mine))
        rc, out = L.verify_db(self.binary, self.server.db)
        self.verify_results.append({"cycle": cycle, "when": "after kill", "rc": rc})
        if rc != 0:
            self.problem("verify", f"cycle {cycle} after kill: exit {rc}: {out[-2000:]}")
        stats["verify_after_kill"] = rc
        stats["seconds"] = round(time.monotonic() - t0, 2)
        self.log(f"cycle {cycle}: killed after {delay:.2f}s; {stats['requests']} requests, "
                 f"{stats['acknowledged']} ok, {stats['failed']} failed, {stats['unknown']} unknown; "
                 f"resent at start {n_unknown} ({n_resolved} resolved); verify rc={rc}")
        self.cycle_stats.append(stats)
        return stats

    # ------------------------------------------------------------ checks

    def check(self, cycle: int, stats: dict, final: bool) -> None:
        """Every acknowledged write found (GetOperation + replay); ledger and balances match the model."""
        if not self.reqs:
            return
        C = self.C
        channel = self.server.channel()
        call = L.RawCaller(channel)
        stub = self.stubs.credits_grpc.CreditServiceStub(channel)
        md = self.md()
        # Acknowledged and not checked yet (all of them in the final pass).
        todo = [r for r in self.reqs if r.status == "ok" and (final or not r.checked)]

        def check_op(req: Req):
            try:
                op = stub.GetOperation(C.GetOperationRequest(idempotency_key=req.key), metadata=md, timeout=TIMEOUT)
            except grpc.RpcError as e:
                self.problem("lost", f"{req.op} {req.key} acknowledged in cycle {req.cycle}: GetOperation "
                                     f"{e.code().name} {e.details()}")
                return
            reply_type = self.reply_type(req.op)
            original = reply_type.FromString(req.reply)
            # Operation.response is a google.protobuf.Any of the write's response type.
            stored = (reply_type.FromString(op.response.value)
                      if op.response.type_url == "type.googleapis.com/" + reply_type.DESCRIPTOR.full_name else None)
            if op.result_id != self.result_id(req) or stored != original:
                self.problem("lost", f"{req.op} {req.key}: GetOperation result {op.result_id} / stored response "
                                     f"differs from the acknowledged reply ({self.result_id(req)})")
            if final:
                return
            try:
                again = call(req.path, req.body, metadata=md, timeout=TIMEOUT)
            except grpc.RpcError as e:
                self.problem("replay", f"{req.op} {req.key}: replay answered {e.code().name} {e.details()}")
                return
            if self.reply_type(req.op).FromString(again) != original:
                self.problem("doubled", f"{req.op} {req.key}: replay returned a different reply "
                                        f"(result {self.reply_type(req.op).FromString(again)!r:.200})")
            req.checked = True

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(check_op, todo))
        self.check_ledger(stub, md, final)
        channel.close()
        stats["checked_ops"] = len(todo)

    def check_ledger(self, stub, md, final: bool) -> None:
        C = self.C
        enum = self.stubs.common.EntryType
        by_client: dict[str, list[Req]] = defaultdict(list)
        for r in self.reqs:
            by_client[r.client].append(r)

        def one(client: str):
            reqs = by_client[client]
            entries, token = [], ""
            while True:
                page = stub.ListLedgerEntries(C.ListLedgerEntriesRequest(client_id=client, page_token=token,
                                                                         page_size=1000, oldest_first=True),
                                              metadata=md, timeout=TIMEOUT)
                entries.extend(page.entries)
                token = page.next_page_token
                if not token:
                    break
            bal = stub.GetBalance(C.GetBalanceRequest(client_id=client), metadata=md, timeout=TIMEOUT).summary
            keyed = defaultdict(list)
            for e in entries:
                keyed[e.idempotency_key].append(enum.Name(e.type))
            by_key = {r.key: r for r in reqs}
            for key, types in keyed.items():
                r = by_key.get(key)
                if r is None:
                    self.problem("stray_entry", f"client {client}: entries {types} with key {key!r} of no request")
                    continue
                if len(types) != len(set(types)):
                    self.problem("doubled", f"{r.op} {key}: entries {types}")
                if r.status != "ok":
                    self.problem("failed_but_applied", f"{r.op} {key} answered {r.code} {r.reason}: entries {types}")
                elif not set(types) <= set(ENTRY_TYPES[r.op]) or ENTRY_TYPES[r.op][0] not in types:
                    self.problem("wrong_entries", f"{r.op} {key}: entries {types}")
            total = held = 0
            for r in reqs:
                if r.status != "ok":
                    continue
                if r.key not in keyed:
                    self.problem("lost", f"{r.op} {r.key} acknowledged in cycle {r.cycle}: no ledger entry")
                if r.op in ("order", "purchase"):
                    total += r.amount
                elif r.op == "spend":
                    total -= r.amount
                elif r.op == "hold":
                    held += r.amount
                elif r.op == "capture":
                    total -= r.amount or r.parent.amount
                    held -= r.parent.amount
                elif r.op == "release":
                    held -= r.parent.amount
                elif r.op == "reverse":
                    total += r.amount
            if (bal.total_minor, bal.held_minor, bal.available_minor) != (total, held, total - held):
                self.problem("balance_mismatch", f"client {client}: server total/held/available "
                                                 f"{bal.total_minor}/{bal.held_minor}/{bal.available_minor}, "
                                                 f"model from acknowledged ops {total}/{held}/{total - held}")
            if entries and (entries[-1].available_after_minor, entries[-1].held_after_minor) != (total - held, held):
                self.problem("balance_mismatch", f"client {client}: last entry says available/held "
                                                 f"{entries[-1].available_after_minor}/{entries[-1].held_after_minor}, "
                                                 f"model {total - held}/{held}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, sorted(by_client)))

    # ------------------------------------------------------------ the run

    def run(self) -> dict:
        t0 = time.monotonic()
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.log(f"crash-cycle: {self.cycles} cycles, {self.threads} threads, {len(self.clients)} clients, "
                 f"seed {self.seed}, db {self.server.db}, binary {self.binary}")
        try:
            for cycle in range(1, self.cycles + 1):
                self.run_cycle(cycle)
            # Last restart: resolve what the last kill left unknown, check everything, stop cleanly.
            self.server.start()
            stats = {"cycle": "final"}
            n_unknown, n_resolved = self.resolve_unknown(self.cycles + 1)
            stats.update(resent=n_unknown, resolved=n_resolved)
            self.check(self.cycles + 1, stats, final=False)
            self.check(self.cycles + 1, stats, final=True)
            self.cycle_stats.append(stats)
            rc = self.server.terminate()
            if rc != 0:
                self.problem("shutdown", f"exit code after SIGTERM: {rc}")
            rc, out = L.verify_db(self.binary, self.server.db)
            self.verify_results.append({"cycle": "final", "when": "after clean stop", "rc": rc})
            if rc != 0:
                self.problem("verify", f"final: exit {rc}: {out[-2000:]}")
        finally:
            if self.server.alive():
                self.server.kill9()
        return self.summary(started, time.monotonic() - t0)

    def summary(self, started: str, seconds: float) -> dict:
        reqs = self.reqs
        ok = [r for r in reqs if r.status == "ok"]
        by_op = defaultdict(lambda: defaultdict(int))
        for r in reqs:
            by_op[r.op][r.status] += 1
            if r.status == "failed":
                by_op[r.op][f"failed:{r.reason or r.code}"] += 1
        return {
            "started": started,
            "seconds": round(seconds, 1),
            "binary": str(self.binary),
            "db": str(self.server.db),
            "seed": self.seed,
            "threads": self.threads,
            "clients": len(self.clients),
            "cycles": self.cycles,
            "requests": len(reqs),
            "acknowledged": sum(1 for r in ok if not r.was_unknown),
            "failed_definite": sum(1 for r in reqs if r.status == "failed" and not r.was_unknown),
            "unknown": sum(1 for r in reqs if r.was_unknown),
            "unknown_then_ok": sum(1 for r in reqs if r.was_unknown and r.status == "ok"),
            "unknown_then_failed": sum(1 for r in reqs if r.was_unknown and r.status == "failed"),
            "unresolved": sum(1 for r in reqs if r.status == "unknown"),
            "resend_attempts": sum(r.attempts - 1 for r in reqs if r.was_unknown),
            "lost": self.counts["lost"],
            "doubled": self.counts["doubled"],
            "balance_mismatches": self.counts["balance_mismatch"],
            "failed_but_applied": self.counts["failed_but_applied"],
            "stray_entries": self.counts["stray_entry"],
            "wrong_entries": self.counts["wrong_entries"],
            "replay_errors": self.counts["replay"],
            "server_died": self.counts["server_died"],
            "internal_or_unknown_status": self.counts["status_INTERNAL"] + self.counts["status_UNKNOWN"],
            "verify_runs": len(self.verify_results),
            "verify_passes": sum(1 for v in self.verify_results if v["rc"] == 0),
            "by_op": {k: dict(v) for k, v in sorted(by_op.items())},
            "cycle_stats": self.cycle_stats,
            "problems": self.problems,
        }


def passed(s: dict) -> bool:
    return (s["lost"] == 0 and s["doubled"] == 0 and s["balance_mismatches"] == 0 and s["failed_but_applied"] == 0
            and s["stray_entries"] == 0 and s["wrong_entries"] == 0 and s["unresolved"] == 0
            and s["replay_errors"] == 0 and s["server_died"] == 0 and s["verify_passes"] == s["verify_runs"])


def format_summary(s: dict) -> str:
    lines = [
        f"crash-cycle summary ({s['seconds']} s, seed {s['seed']}, {s['threads']} threads, {s['clients']} clients)",
        f"  cycles                 {s['cycles']}",
        f"  requests               {s['requests']}",
        f"  acknowledged (1st try) {s['acknowledged']}",
        f"  failed definite        {s['failed_definite']}",
        f"  unknown, resent        {s['unknown']} (then ok {s['unknown_then_ok']}, then failed "
        f"{s['unknown_then_failed']}, unresolved {s['unresolved']}; {s['resend_attempts']} resends)",
        f"  lost                   {s['lost']}",
        f"  doubled                {s['doubled']}",
        f"  balance mismatches     {s['balance_mismatches']}",
        f"  failed but applied     {s['failed_but_applied']}",
        f"  stray/wrong entries    {s['stray_entries']}/{s['wrong_entries']}",
        f"  INTERNAL/UNKNOWN seen  {s['internal_or_unknown_status']}",
        f"  verify passes          {s['verify_passes']}/{s['verify_runs']}",
        "  by operation:",
    ]
    for op, c in s["by_op"].items():
        extra = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k.startswith("failed:"))
        lines.append(f"    {op:9s} ok {c.get('ok', 0):6d}  failed {c.get('failed', 0):5d}"
                     + (f" ({extra})" if extra else ""))
    if s["problems"]:
        lines.append("  problems:")
        lines += [f"    {p[:400]}" for p in s["problems"][:30]]
    lines.append("  RESULT: " + ("PASS" if passed(s) else "FAIL"))
    return "\n".join(lines)


def run(cycles: int, binary: Path, workdir: Path, threads: int = 16, clients: int = 300, seed: int | None = None,
        min_kill: float = 0.3, max_kill: float = 3.0, json_path: Path | None = None, log=print) -> dict:
    soak = Soak(binary, workdir, cycles, threads=threads, clients=clients, seed=seed, min_kill=min_kill,
                max_kill=max_kill, log=log)
    s = soak.run()
    if json_path:
        Path(json_path).write_text(json.dumps(s, indent=1))
    return s
