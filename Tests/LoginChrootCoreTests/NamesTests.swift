import XCTest
import LoginChrootTestSupport
@testable import LoginChrootCore

final class UserNameTests: XCTestCase {
    func testAcceptsTypicalNames() {
        let longest = String(repeating: "a", count: UserName.maxLength)
        for name in ["alice", "a_b", "a.b", "a-b", "user@domain", "Bob42", "_svc", "a", "9lives", longest] {
            let parsed = UserName(name)
            XCTAssertNotNil(parsed, name)
            XCTAssertEqual(parsed?.value, name)
            XCTAssertEqual(parsed?.description, name)
            XCTAssertEqual(UserName(validating: Array(name.utf8)), parsed)
        }
    }

    func testRejectsBadNames() {
        let bad = ["", String(repeating: "a", count: 65), String(repeating: "b", count: 256), String(repeating: "c", count: 300),
                   "a/b", "/", "..", ".", "-rf", ".hidden", "@domain", "a b", " alice", "alice\n", "a\0b",
                   "a+b", "a:b", "ali\tce", "é", "a*", "a\\b"]
        for name in bad {
            XCTAssertNil(UserName(name), "accepted \(name.debugDescription)")
        }
    }

    func testRejectsRawBytes() {
        XCTAssertNil(UserName(validating: [0xFF, 0x61]), "non-UTF-8")
        XCTAssertNil(UserName(validating: [0x61, 0x00]), "NUL")
        XCTAssertNil(UserName(validating: [0x61, 0x0A]), "newline")
        XCTAssertNil(UserName(validating: [0xC3, 0xA9]), "valid UTF-8 but not ASCII")
        XCTAssertNil(UserName(validating: []))
        XCTAssertNotNil(UserName(validating: Array("ok".utf8)))
    }
}

final class RootKeyTests: XCTestCase {
    func testPerUserAndPerSessionFormatting() {
        XCTAssertEqual(RootKey.perUser(user("alice")).value, "alice")
        XCTAssertEqual(RootKey.perSession(user("alice"), serial: 42).value, "alice+42")
        XCTAssertEqual(RootKey.perSession(user("a.b"), serial: UInt64.max).description, "a.b+18446744073709551615")
    }

    func testParsesBack() {
        for key in [RootKey.perUser(user("alice")), .perSession(user("bob"), serial: 7), .perSession(user("u@d"), serial: UInt64.max)] {
            XCTAssertEqual(RootKey(key.value), key)
        }
        XCTAssertEqual(RootKey("alice+7")?.userName, user("alice"))
        XCTAssertEqual(RootKey("alice")?.userName, user("alice"))
        XCTAssertEqual(RootKey("master")?.value, "master")
    }

    func testRejectsGarbage() {
        for bad in ["a+", "a+b", "../x", "a+1+2", "", "+1", "a/b", "a+-1", "a+1 ", "a+" + String(repeating: "1", count: 21),
                    ".x", "a+１"] {
            XCTAssertNil(RootKey(bad), "accepted \(bad.debugDescription)")
        }
    }

    func testOrdering() {
        let keys = ["carol", "alice+2", "alice", "bob"].compactMap(RootKey.init).sorted()
        XCTAssertEqual(keys.map(\.value), ["alice", "alice+2", "bob", "carol"])
    }
}

final class GenerationTests: XCTestCase {
    func testParsing() {
        XCTAssertEqual(Generation("gen-3")?.number, 3)
        XCTAssertEqual(Generation("gen-0")?.number, 0)
        XCTAssertEqual(Generation("gen-18446744073709551615")?.number, UInt64.max)
        for bad in ["gen-03", "gen-", "gen-x", "3", "gen-+3", "gen--3", "Gen-3", "gen-3 ", " gen-3", "gen-3.tmp", "gen-18446744073709551616"] {
            XCTAssertNil(Generation(bad), "accepted \(bad.debugDescription)")
        }
    }

    func testNameNextAndOrdering() {
        let three = Generation(number: 3)
        XCTAssertEqual(three.name, "gen-3")
        XCTAssertEqual(three.description, "gen-3")
        XCTAssertEqual(three.next, Generation(number: 4))
        XCTAssertLessThan(Generation(number: 9), Generation(number: 10), "numeric, not lexicographic")
        let sorted = ["gen-10", "gen-2", "gen-9", "gen-1"].compactMap(Generation.init).sorted()
        XCTAssertEqual(sorted.map(\.number), [1, 2, 9, 10])
    }
}

final class TextTests: XCTestCase {
    func testTrimmedAndWords() {
        XCTAssertEqual(" \t a b \r".trimmed, "a b")
        XCTAssertEqual("  a \t b  c ".words, ["a", "b", "c"])
        XCTAssertEqual("".words, [])
    }

    func testReplacingToken() {
        XCTAssertEqual("/run/user/%u/%u".replacing(token: "%u", with: "1000"), "/run/user/1000/1000")
        XCTAssertEqual("no token".replacing(token: "%u", with: "1"), "no token")
        XCTAssertEqual("abc".replacing(token: "", with: "x"), "abc")
        XCTAssertTrue("hello world".containsLiteral("o w"))
        XCTAssertFalse("hello".containsLiteral("hello!"))
    }

    func testJoinPath() {
        XCTAssertEqual(joinPath("/a", "b"), "/a/b")
        XCTAssertEqual(joinPath("/a/", "/b"), "/a/b")
        XCTAssertEqual(joinPath("/a", "//"), "/a")
        XCTAssertEqual(joinPath("/", "run"), "/run")
    }

    func testParseSize() {
        XCTAssertEqual(parseSize("512"), 512)
        XCTAssertEqual(parseSize("2k"), 2048)
        XCTAssertEqual(parseSize("1T"), 1 << 40)
        XCTAssertNil(parseSize("1P"))
        XCTAssertNil(parseSize("K"))
        XCTAssertNil(parseSize("20000000T"), "overflow")
        XCTAssertNil(parseSize("١٢")) // non-ASCII digits
    }
}
