import Testing
@testable import Ledger

@Suite struct BoundedDictionaryTests {
    @Test func evictsOldestOneAtATime() {
        var d = BoundedDictionary<Int, String>(capacity: 3)
        for i in 0..<3 { #expect(d.insert(i, "\(i)") == nil) }
        let evicted = d.insert(3, "3")
        #expect(evicted?.key == 0 && evicted?.value == "0")
        #expect(d.count == 3 && d[0] == nil && d[1] == "1" && d[3] == "3")
    }

    @Test func replacedKeyCountsAsNewAndUpdateKeepsAge() {
        var d = BoundedDictionary<Int, Int>(capacity: 2)
        d.insert(1, 1)
        d.insert(2, 2)
        d.insert(1, 10)  // 1 is now the newest
        #expect(d.insert(3, 3)?.key == 2)
        #expect(d.update(1) { $0 += 1 } && d[1] == 11)
        #expect(d.insert(4, 4)?.key == 1)  // update kept 1's age
        #expect(!d.update(99) { $0 = 0 })
    }

    @Test func removalsAndChurnStayBounded() {
        var d = BoundedDictionary<Int, Int>(capacity: 100)
        for i in 0..<100_000 {
            d.insert(i % 150, i)
            if i % 3 == 0 { d.removeValue(forKey: (i * 7) % 150) }
            #expect(d.count <= 100)
        }
        var drained = 0
        while d.evictOldest() != nil { drained += 1 }
        #expect(drained <= 100 && d.isEmpty)
    }
}
