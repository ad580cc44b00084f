import Testing
@testable import Ledger

// ImportLot: opening lots from a legacy system, idempotent by record key.
// Each test ends with `fx.finish()` (verify must be OK) unless it tampers.

@Suite struct ImportTests {
    func record(_ fx: Fixture, key: String = "legacy:1", client: String = "c", amount: Int64 = 500, center: String = "c1",
                scope: Scope = .any, validFrom: Int64? = nil, validUntil: Int64? = nil, ref: String = "GC-1",
                origin: String = "gift card", price: Int64 = 450, note: String = "row 1") -> ImportLot {
        ImportLot(tenantId: fx.tenant, recordKey: key, clientId: client, amountMinor: amount, centerId: center, scope: scope,
                  validFromMicros: validFrom, validUntilMicros: validUntil, externalRef: ref, legacyOrigin: origin,
                  priceMinor: price, note: note)
    }

    @Test func importCreatesAnImportLotFundedFromFundingImport() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let until = fx.now + 30 * microsPerDay
        let result = try fx.apply(record(fx, scope: Scope(centers: ["c1", "c2"]), validFrom: fx.now - microsPerDay, validUntil: until))
        #expect(result.seq == 1 && !result.expiredAtOnce)
        let lot = try #require(try fx.lot(result.lotId))
        #expect(lot.origin == .import && lot.state == .active)
        #expect(lot.amountMinor == 500 && lot.remainingMinor == 500 && lot.priceMinor == 450)
        #expect(lot.paymentRef == "GC-1" && lot.note == "row 1" && lot.centerId == "c1")
        #expect(lot.validUntilMicros == until && lot.scope.centers == ["c1", "c2"])
        let entries = try fx.entries("c")
        #expect(entries.count == 1)
        let entry = try #require(entries.first)
        #expect(entry.type == .import && entry.amountMinor == 500 && entry.refId == lot.id)
        #expect(entry.debitAccount == Account.imports && entry.creditAccount == Account.available("c"))
        #expect(entry.reason == "gift card" && entry.paymentRef == "GC-1" && entry.idempotencyKey == "legacy:1")
        #expect(try fx.balance("c").summary.availableMinor == 500)
        #expect(try fx.account(Account.imports) == -500)
    }

    @Test func sameRecordAgainReplaysAndChangesNothing() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let first = try fx.apply(record(fx))
        let before = try fx.balance("c")
        let outcome = try fx.ledger.write(record(fx))
        guard case .replayed(_, let resultId, let seq) = outcome else { Issue.record("expected a replay, got \(outcome)"); return }
        #expect(resultId == first.lotId && seq == first.seq)
        #expect(try fx.balance("c") == before)
        #expect(fx.lastSeq == 1)
        #expect(try fx.account(Account.imports) == -500)
    }

    @Test func sameKeyOtherFieldsIsKeyReusedNamingThem() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let first = try fx.apply(record(fx))
        try fx.expectUnchanged("c") {
            fx.expectError(.idempotencyKeyReused(operation: "import", differingFields: ["amount_minor"], existingResultId: first.lotId),
                           record(fx, amount: 501))
            fx.expectError(.idempotencyKeyReused(operation: "import", differingFields: ["external_ref", "note"], existingResultId: first.lotId),
                           record(fx, ref: "GC-2", note: "row 2"))
            fx.expectError(.idempotencyKeyReused(operation: "import", differingFields: ["legacy_origin", "scope", "valid_until"],
                                                 existingResultId: first.lotId),
                           record(fx, scope: Scope(serviceCategories: ["yoga"]), validUntil: fx.now + microsPerDay, origin: "voucher"))
        }
        try fx.expectUnchanged("d") {
            fx.expectError(.idempotencyKeyReused(operation: "import", differingFields: ["client_id"], existingResultId: first.lotId),
                           record(fx, client: "d"))
        }
        // A key used by another operation is reused too.
        let order = try fx.apply(fx.orderCmd("c", 5, key: "order-1"))
        fx.expectError(.idempotencyKeyReused(operation: "credit_order",
                                             differingFields: ["amount_minor", "center_id", "client_id", "external_ref", "legacy_origin", "note",
                                                               "price_minor", "scope", "valid_from", "valid_until"],
                                             existingResultId: order.lot.id),
                       record(fx, key: "order-1"))
        #expect(fx.lastSeq == 2)
    }

    @Test func validationNamesEveryBadField() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let now = fx.now
        let bad = record(fx, key: "", client: "bad id", amount: 0, center: String(repeating: "x", count: 129),
                         scope: Scope(centers: Array(repeating: "c", count: LedgerLimits.maxScopeEntries + 1)),
                         validFrom: now, validUntil: now, ref: "has space", origin: String(repeating: "o", count: 129),
                         price: -1, note: "bell\u{07}")
        guard case .invalidArgument(let violations)? = fx.error(bad) else { Issue.record("expected invalid argument"); return }
        let fields = Set(violations.map(\.field))
        #expect(fields == ["record_key", "client_id", "amount_minor", "center_id", "scope.centers", "valid_until", "external_ref",
                           "legacy_origin", "price_minor", "note"])
        #expect(fx.error(record(fx, amount: LedgerLimits.maxAmountMinor + 1))
                == .invalidArgument([.init("amount_minor", "must be at most \(LedgerLimits.maxAmountMinor)")]))
        #expect(fx.error(record(fx, key: "k\u{00}")) == .invalidArgument([.init("record_key", "must be printable ASCII without spaces")]))
        #expect(fx.error(record(fx, origin: String(repeating: "o", count: 128)).withTenant("nope")) == .notFound(kind: "tenant", id: "nope"))
        #expect(fx.lastSeq == 0)
        // At the bounds: accepted.
        try fx.apply(record(fx, amount: LedgerLimits.maxAmountMinor, origin: String(repeating: "o", count: 128), price: 0, note: ""))
    }

    @Test func pastValidUntilExpiresAtOnceAsBreakage() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let result = try fx.apply(record(fx, validFrom: fx.now - 400 * microsPerDay, validUntil: fx.now - microsPerDay))
        #expect(result.expiredAtOnce && result.seq == 2)
        let lot = try #require(try fx.lot(result.lotId))
        #expect(lot.state == .expired && lot.remainingMinor == 0 && lot.amountMinor == 500)
        #expect(try fx.entries("c").map(\.type) == [.expiry, .import])
        #expect(try fx.balance("c").summary.availableMinor == 0)
        #expect(try fx.account(Account.breakage) == 500)
        #expect(try fx.account(Account.imports) == -500)
        // Replayed, it stays one lot and two entries.
        guard case .replayed(_, let id, let seq) = try fx.ledger.write(record(fx, validFrom: fx.now - 400 * microsPerDay, validUntil: fx.now - microsPerDay)) else {
            Issue.record("expected a replay"); return
        }
        #expect(id == result.lotId && seq == 2 && fx.lastSeq == 2)
    }

    @Test func importedCreditIsSpendable() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.apply(record(fx, amount: 300))
        try fx.spend("c", 200)
        #expect(try fx.balance("c").summary.availableMinor == 100)
    }

    @Test func verifyCatchesTamperedImports() throws {
        let fx = try Fixture()
        defer { fx.ledger.close() }
        let a = try fx.apply(record(fx, key: "r1"))
        let b = try fx.apply(record(fx, key: "r2", client: "d", amount: 70))
        #expect(try fx.ledger.verify().ok)
        let db = try SQLiteConnection(path: fx.path)
        // A lot whose amount was raised together with its client's balance
        // (allocations and balances still agree with each other), an IMPORT
        // entry moved to another lot, and funding:import nudged.
        try db.statement("UPDATE lots SET amount_minor = amount_minor + 1 WHERE id = ?").bind(.text(a.lotId)).run()
        try db.statement("UPDATE entries SET ref_id = 'lot_gone' WHERE ref_id = ? AND type = 'import'").bind(.text(b.lotId)).run()
        try db.statement("UPDATE accounts SET balance_minor = balance_minor + 3 WHERE account = ?").bind(.text(Account.imports)).run()
        let report = try fx.ledger.verify()
        #expect(!report.ok)
        #expect(report.problems.contains { $0.contains("import lot \(a.lotId) of 501: 1 IMPORT entries, 0 of its amount") })
        #expect(report.problems.contains { $0.contains("import lot \(b.lotId) of 70: 0 IMPORT entries") })
        #expect(report.problems.contains { $0.contains("IMPORT entry 2 funds no import lot ('lot_gone')") })
        #expect(report.problems.contains { $0.contains("account funding:import holds -567, imported lots total 571") })
    }

    @Test func verifyCatchesAnotherEntryMovingFundingImport() throws {
        let fx = try Fixture()
        defer { fx.ledger.close() }
        try fx.apply(record(fx, key: "r1"))
        try fx.order("c", 40)
        let db = try SQLiteConnection(path: fx.path)
        try db.statement("UPDATE entries SET debit_account = ? WHERE type = 'order'").bind(.text(Account.imports)).run()
        let report = try fx.ledger.verify()
        #expect(report.problems.contains { $0.contains("1 entries other than IMPORT move funding:import") })
    }
}

extension ImportLot {
    func withTenant(_ tenant: String) -> ImportLot {
        var copy = self
        copy.tenantId = tenant
        return copy
    }
}
