import CreditsProto

/// "0a07..." -> bytes.
func hex(_ s: String) -> [UInt8] {
    precondition(s.utf8.count % 2 == 0)
    var out: [UInt8] = []
    var high: UInt8? = nil
    for c in s.utf8 {
        let v: UInt8
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
        default: preconditionFailure("bad hex")
        }
        if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
    }
    return out
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef")
    return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
}

func roundTrip<M: ProtoMessage>(_ m: M) throws -> M {
    try M(serializedBytes: m.serializedBytes())
}
