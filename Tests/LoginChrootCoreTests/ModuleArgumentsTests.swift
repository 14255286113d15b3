import XCTest
@testable import LoginChrootCore

final class ModuleArgumentsTests: XCTestCase {
    func testEmptyList() {
        let arguments = ModuleArguments.parse([])
        XCTAssertEqual(arguments, ModuleArguments())
        XCTAssertEqual(arguments.configPath, Config.defaultPath)
        XCTAssertFalse(arguments.debug)
        XCTAssertEqual(arguments.ignored, [])
    }

    func testDebug() {
        let arguments = ModuleArguments.parse(["debug"])
        XCTAssertTrue(arguments.debug)
        XCTAssertEqual(arguments.ignored, [])
    }

    func testAbsoluteConfig() {
        let arguments = ModuleArguments.parse(["config=/etc/lc/other.conf", "debug"])
        XCTAssertEqual(arguments.configPath, "/etc/lc/other.conf")
        XCTAssertTrue(arguments.debug)
        XCTAssertEqual(arguments.ignored, [])
    }

    func testRelativeOrEmptyConfigIsIgnored() {
        let arguments = ModuleArguments.parse(["config=relative.conf", "config="])
        XCTAssertEqual(arguments.configPath, Config.defaultPath, "a relative config path must never be used")
        XCTAssertEqual(arguments.ignored, ["config=relative.conf", "config="])
    }

    func testOverlongConfigIsIgnored() {
        let long = "config=/" + String(repeating: "x", count: 1100)
        let arguments = ModuleArguments.parse([long])
        XCTAssertEqual(arguments.configPath, Config.defaultPath)
        XCTAssertEqual(arguments.ignored.count, 1)
        XCTAssertEqual(arguments.ignored[0].count, 64, "ignored arguments are truncated for the log")
    }

    func testUnknownArgumentsAreCollected() {
        let arguments = ModuleArguments.parse(["debgu", "use_first_pass", "DEBUG", "config=/ok.conf"])
        XCTAssertEqual(arguments.ignored, ["debgu", "use_first_pass", "DEBUG"])
        XCTAssertFalse(arguments.debug)
        XCTAssertEqual(arguments.configPath, "/ok.conf")
    }

    func testLastConfigWins() {
        XCTAssertEqual(ModuleArguments.parse(["config=/a.conf", "config=/b.conf"]).configPath, "/b.conf")
    }
}
