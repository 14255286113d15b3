// The labels of the files the module writes into a root (SELinux), with a
// fake label source: the label of the file a write replaces wins; a new
// file, or one replacing a symlink, gets the policy's label for its path.
import Foundation
import Glibc
import XCTest
import LoginChrootTestSupport
import LoginChrootCore
@testable import LoginChrootPlatform

/// Labels kept by file name; the policy answers from a table of paths.
final class FakeLabels: FileLabels {
    var existing: [String: String] = [:]
    var policy: [String: String] = [:]
    var asked: [String] = []
    var set: [String: String] = [:]

    func label(of file: Descriptor) -> String? {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: file.procPath)) ?? ""
        return existing[(path as NSString).lastPathComponent]
    }
    func policyLabel(for path: String, mode: mode_t) throws -> String? {
        asked.append(path)
        XCTAssertEqual(mode & S_IFMT, S_IFREG)
        return policy[path]
    }
    func creatingFiles<T>(labelled label: String, path: String, _ create: () throws -> T) throws -> T {
        set[path] = label
        return try create()
    }
}

final class FileLabelTests: XCTestCase {
    var image = ""

    override func setUpWithError() throws {
        image = NSTemporaryDirectory() + "labels-\(getpid())-\(UUID().uuidString)"
        for directory in ["etc", "run"] {
            try FileManager.default.createDirectory(atPath: image + "/" + directory, withIntermediateDirectories: true)
        }
        try "root:x:0:0:root:/root:/bin/sh\n".write(toFile: image + "/etc/passwd", atomically: false, encoding: .utf8)
        try "root:x:0:\n".write(toFile: image + "/etc/group", atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: image + "/etc/hostname", withDestinationPath: "/etc/shadow")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: image) }

    private func write(labels: FakeLabels?) throws {
        let account = testAccount(groups: [])
        var config = Config()
        config.copyFiles = ["/etc/hostname"]  // the host's, over the image's symlink
        let plan = RootPlan.make(key: .perUser(account.name), account: account, config: config,
                                    rootMounts: [], rootSubpath: "")
        try RootAssembler(plan: plan, staging: image, log: { _ in }, labels: labels)
            .writeFiles(into: try Descriptor.openDirectory(image))
    }

    func testAReplacedFileKeepsItsLabelAndANewFileGetsThePolicys() throws {
        let labels = FakeLabels()
        labels.existing["passwd"] = "system_u:object_r:passwd_file_t:s0"
        labels.policy[RootMarker.path] = "system_u:object_r:var_run_t:s0"
        try write(labels: labels)
        XCTAssertEqual(labels.set["/etc/passwd"], "system_u:object_r:passwd_file_t:s0")
        XCTAssertFalse(labels.asked.contains("/etc/passwd"), "the replaced file's label is taken, not looked up")
        XCTAssertEqual(labels.set[RootMarker.path], "system_u:object_r:var_run_t:s0")
        XCTAssertTrue(try String(contentsOfFile: image + "/etc/passwd", encoding: .utf8).contains("alice:x:1000"),
                      "the control: the entry was written")
    }

    func testASymlinkReplacedIsNotFollowedForItsLabel() throws {
        let labels = FakeLabels()
        labels.existing["shadow"] = "system_u:object_r:shadow_t:s0"  // what following it would find
        labels.policy["/etc/hostname"] = "system_u:object_r:etc_t:s0"
        try write(labels: labels)
        XCTAssertEqual(labels.set["/etc/hostname"], "system_u:object_r:etc_t:s0")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: image + "/etc/hostname")[.type] as? FileAttributeType,
                       .typeRegular, "the symlink was replaced, never followed")
    }

    func testAPathThePolicyDoesNotLabelIsLeftAsCreated() throws {
        let labels = FakeLabels()
        try write(labels: labels)
        XCTAssertEqual(labels.set, [:])
        XCTAssertTrue(labels.asked.contains(RootMarker.path), "the control: the policy was asked")
    }
}
