import XCTest
@testable import LoginChrootCore

final class PamStackTests: XCTestCase {
    func testSessionLinesIncludesAndBracketedControls() {
        let text = """
            # comment: session required pam_loginchroot.so
            @include common-account
            session [success=ok default=1] pam_permit.so
            session\trequired\tpam_unix.so
            -session optional pam_systemd.so
            session include common-session-noninteractive
            session requisite /opt/lc/pam_loginchroot.so config=/etc/x # trailing comment
            auth required pam_loginchroot.so
            """
        let parsed = PamStack.parse(text)
        XCTAssertEqual(parsed.includes, ["common-account", "common-session-noninteractive"])
        XCTAssertEqual(parsed.lines.map(\.module), ["pam_permit.so", "pam_unix.so", "pam_systemd.so", "/opt/lc/pam_loginchroot.so"])
        XCTAssertEqual(parsed.lines.first?.control, "[success=ok default=1]")
        XCTAssertEqual(parsed.lines.last, PamSessionLine(number: 7, control: "requisite", module: "/opt/lc/pam_loginchroot.so"))
    }

    func testTheModuleMustComeAfterPamSystemd() {
        let after = PamStack.parse("session optional pam_systemd.so\nsession requisite pam_loginchroot.so\n").lines
        XCTAssertNil(PamStack.misplacement(in: after))
        let before = PamStack.parse("session requisite pam_loginchroot.so\nsession optional pam_systemd.so\n").lines
        XCTAssertEqual(PamStack.misplacement(in: before), "pam_loginchroot.so (line 1) comes before pam_systemd.so (line 2)")
        XCTAssertNil(PamStack.misplacement(in: PamStack.parse("session requisite pam_loginchroot.so\n").lines),
                     "without pam_systemd (no logind) any place is right")
    }
}
