import XCTest
@testable import LoginChrootCore

final class ConfigParserTests: XCTestCase {

    // MARK: defaults and every key

    func testDefaultsKeepOneRootFromFillingEveryonesSpace() {
        let config = Config()
        XCTAssertLessThanOrEqual(config.volumeSize * 4, config.dataSize, "a root may take at most a quarter of the default pool")
        XCTAssertLessThanOrEqual(config.rootSize * 4, config.storeImageSize, "a quarter of the default btrfs store")
        XCTAssertFalse(config.binds.contains { $0.source.hasPrefix("/run/user") }, "each root has its own runtime directory")
        XCTAssertTrue(config.allowSetuid)
        XCTAssertEqual(config.runtimeDirectorySize, "10%")
    }

    /// The example is the package's conffile, and its bind lines replace the
    /// default list: a default added in the code but not there would never
    /// reach a packaged machine. The man page lists the same lines. The same
    /// holds for the exempt users (the greeters' accounts).
    func testTheShippedExampleAndTheManPageGiveTheDefaultBinds() throws {
        let doc = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../doc")
        let example = try String(contentsOf: doc.appendingPathComponent("loginchroot.conf.example"), encoding: .utf8)
        let shipped = try ConfigParser.parse(example, file: "loginchroot.conf.example")
        XCTAssertEqual(shipped.binds, Config.defaultBinds)
        XCTAssertEqual(shipped.exemptUsers, Config().exemptUsers)
        let bindLines = { (text: String) in text.split(separator: "\n").filter { $0.hasPrefix("bind = ") }
            .map { $0.replacingOccurrences(of: "\\-", with: "-") } }
        let manual = try String(contentsOf: doc.appendingPathComponent("loginchroot.conf.5"), encoding: .utf8)
        let defaultList = manual.components(separatedBy: ".SS \"The default list\"")[1].components(separatedBy: ".fi")[0]
        XCTAssertEqual(bindLines(defaultList), bindLines(example))
    }

    func testSessionHardeningKeys() throws {
        let config = try ConfigParser.parse("[session]\nsetuid = no\nruntime_dir_size = 64M\n", file: "t.conf")
        XCTAssertFalse(config.allowSetuid)
        XCTAssertEqual(config.runtimeDirectorySize, String(64 << 20))
        XCTAssertEqual(try ConfigParser.parse("[session]\nruntime_dir_size = 25%\n", file: "t.conf").runtimeDirectorySize, "25%")
        XCTAssertThrowsError(try ConfigParser.parse("[session]\nruntime_dir_size = 101%\n", file: "t.conf"))
        XCTAssertThrowsError(try ConfigParser.parse("[session]\nsetuid = maybe\n", file: "t.conf"))
    }

    func testEmptyFileGivesDefaults() throws {
        let config = try ConfigParser.parse("", file: "/etc/test.conf")
        XCTAssertEqual(config, Config())
        XCTAssertEqual(config.backend, .btrfs)
        XCTAssertEqual(config.storePath, "/var/lib/loginchroot")
        XCTAssertEqual(config.storeImage, "/var/lib/loginchroot.img")
        XCTAssertEqual(config.storeImageSize, 8 << 30)
        XCTAssertEqual(config.keepGenerations, 2)
        XCTAssertEqual(config.mode, .perUser)
        XCTAssertEqual(config.onError, .deny)
        XCTAssertEqual(config.exemptUsers, ["root", "Debian-gdm", "lightdm", "_greetd", "sddm"])
        XCTAssertEqual(config.exemptGroups, [])
        XCTAssertEqual(config.stateDir, "/run/loginchroot")
        XCTAssertTrue(config.addUserEntries)
        XCTAssertEqual(config.copyFiles, ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"])
        XCTAssertEqual(config.killTimeoutSeconds, 5)
        XCTAssertEqual(config.overlayUpper, .tmpfs(sizeBytes: 1 << 30))
        XCTAssertEqual(config.binds, Config.defaultBinds)
        XCTAssertTrue(config.updateCommand.hasPrefix("apt-get update"))
    }

    func testCommentsBlankLinesAndEmptySectionsGiveDefaults() {
        let text = """
        # a comment

           # an indented comment
        \t
        [store]
        [session]
          # a comment between sections
        [overlay]
        [binds]
        [master]

        """
        XCTAssertEqual(parseConfig(text), Config())
    }

    func testEveryKeyOfEverySection() throws {
        let text = """
        [store]
        backend = overlay
        path = /srv//loginchroot/
        image = /srv/loginchroot.img
        image_size = 512M
        keep_generations = 7

        [session]
        mode = per-session
        on_error = allow
        exempt_users = root, admin\talice
        exempt_groups = wheel,sudo
        state_dir = /run/lc
        add_user_entries = no
        copy_files = /etc/resolv.conf   /etc/localtime
        kill_timeout = 30

        [overlay]
        upper = tmpfs
        tmpfs_size = 2G

        [binds]
        bind = /proc recursive

        [master]
        update_command = dnf -y upgrade
        """
        let config = try ConfigParser.parse(text, file: "/etc/test.conf")
        XCTAssertEqual(config.backend, .overlay)
        XCTAssertEqual(config.storePath, "/srv/loginchroot", "paths are normalised")
        XCTAssertEqual(config.storeImage, "/srv/loginchroot.img")
        XCTAssertEqual(config.storeImageSize, 512 << 20)
        XCTAssertEqual(config.keepGenerations, 7)
        XCTAssertEqual(config.mode, .perSession)
        XCTAssertEqual(config.onError, .allow)
        XCTAssertEqual(config.exemptUsers, ["root", "admin", "alice"])
        XCTAssertEqual(config.exemptGroups, ["wheel", "sudo"])
        XCTAssertEqual(config.stateDir, "/run/lc")
        XCTAssertFalse(config.addUserEntries)
        XCTAssertEqual(config.copyFiles, ["/etc/resolv.conf", "/etc/localtime"])
        XCTAssertEqual(config.killTimeoutSeconds, 30)
        XCTAssertEqual(config.overlayUpper, .tmpfs(sizeBytes: 2 << 30))
        XCTAssertEqual(config.binds, [BindEntry(source: "/proc", recursive: true)])
        XCTAssertEqual(config.updateCommand, "dnf -y upgrade")
    }

    func testOverlayUpperDirectoryAndEmptyImage() throws {
        let config = try ConfigParser.parse("""
        [store]
        image =
        [overlay]
        upper = /var/lib/loginchroot-upper
        """, file: "/etc/test.conf")
        XCTAssertEqual(config.storeImage, "")
        XCTAssertEqual(config.overlayUpper, .directory("/var/lib/loginchroot-upper"))
    }

    func testTmpfsSizeBeforeUpperKeepsTheSize() throws {
        let config = try ConfigParser.parse("[overlay]\ntmpfs_size = 100K\nupper = tmpfs\n", file: "/etc/test.conf")
        XCTAssertEqual(config.overlayUpper, .tmpfs(sizeBytes: 100 << 10))
        XCTAssertNil(config.overlayUpperDirectory)
        XCTAssertEqual(config.overlayTmpfsSize, 100 << 10)
    }

    func testBooleanSpellings() throws {
        for (word, expected) in [("yes", true), ("true", true), ("1", true), ("no", false), ("false", false), ("0", false)] {
            let config = try ConfigParser.parse("[session]\nadd_user_entries = \(word)", file: "/etc/test.conf")
            XCTAssertEqual(config.addUserEntries, expected, word)
        }
    }

    func testSizeSuffixes() throws {
        for (text, bytes) in [("4096", UInt64(4096)), ("1k", 1 << 10), ("3M", 3 << 20), ("8g", 8 << 30), ("1T", 1 << 40)] {
            let config = try ConfigParser.parse("[store]\nimage_size = \(text)", file: "/etc/test.conf")
            XCTAssertEqual(config.storeImageSize, bytes, text)
        }
    }

    func testIntegerRangeBoundsAccepted() throws {
        var config = try ConfigParser.parse("[store]\nkeep_generations = 1\n[session]\nkill_timeout = 300", file: "/etc/test.conf")
        XCTAssertEqual(config.keepGenerations, 1)
        XCTAssertEqual(config.killTimeoutSeconds, 300)
        config = try ConfigParser.parse("[store]\nkeep_generations = 1000\n[session]\nkill_timeout = 1", file: "/etc/test.conf")
        XCTAssertEqual(config.keepGenerations, 1000)
        XCTAssertEqual(config.killTimeoutSeconds, 1)
    }

    func testEmptyExemptListsAreAllowed() throws {
        let config = try ConfigParser.parse("[session]\nexempt_users =\nexempt_groups =", file: "/etc/test.conf")
        XCTAssertEqual(config.exemptUsers, [])
        XCTAssertEqual(config.exemptGroups, [])
    }

    func testSectionMayBeReopened() throws {
        let config = try ConfigParser.parse("[store]\nbackend = overlay\n[session]\nmode = per-session\n[store]\nkeep_generations = 4",
                                            file: "/etc/test.conf")
        XCTAssertEqual(config.backend, .overlay)
        XCTAssertEqual(config.keepGenerations, 4)
        XCTAssertEqual(config.mode, .perSession)
    }

    // MARK: errors: file, line and fix

    func testUnknownSection() {
        assertConfigError("# header\n\n[stroe]\nbackend = btrfs", line: 3, problemContains: "unknown section [stroe]")
    }

    func testMalformedSectionHeaders() {
        assertConfigError("[store", line: 1, problemContains: "malformed section header")
        assertConfigError("[store]\n[]", line: 2, problemContains: "malformed section header")
        assertConfigError("[ ]", line: 1, problemContains: "unknown section")
    }

    func testUnknownKey() {
        assertConfigError("[store]\nbackend = btrfs\nbakend = btrfs", line: 3, problemContains: "unknown key 'bakend' in [store]")
        assertConfigError("[binds]\nbinds = /x", line: 2, problemContains: "unknown key 'binds'")
        // A key that exists, but in another section.
        assertConfigError("[session]\nbackend = btrfs", line: 2, problemContains: "unknown key 'backend' in [session]")
        assertConfigError("[store]\n= btrfs", line: 2, problemContains: "unknown key ''")
    }

    func testDuplicateKey() {
        assertConfigError("[store]\nbackend = btrfs\n\nbackend = overlay", line: 4, problemContains: "'backend' set twice in [store]")
        // Also when the section is reopened in between.
        assertConfigError("[session]\nmode = per-user\n[store]\n[session]\nmode = per-user", line: 5, problemContains: "set twice")
    }

    func testMissingEquals() {
        assertConfigError("[session]\n\nmode per-user", line: 3, problemContains: "expected 'key = value'")
    }

    func testKeyOutsideSection() {
        assertConfigError("# comment\nmode = per-user\n[session]", line: 2, problemContains: "outside any section")
    }

    func testBadEnumValues() {
        assertConfigError("[store]\nbackend = zfs", line: 2, problemContains: "unknown backend 'zfs'")
        assertConfigError("[store]\nbackend = Btrfs", line: 2, problemContains: "unknown backend")
        assertConfigError("[session]\nmode = per-host", line: 2, problemContains: "unknown mode")
        assertConfigError("[session]\non_error = maybe", line: 2, problemContains: "unknown on_error")
    }

    func testDmThinSection() throws {
        let config = try ConfigParser.parse("""
            [store]
            backend = dm-thin
            [dm-thin]
            pool_name = lab_1
            data_device = /dev/vg0/lcdata
            metadata_device = /dev/vg0/lcmeta
            volume_size = 20G
            block_size = 128K
            filesystem = xfs
            """, file: "/etc/test.conf")
        XCTAssertEqual(config.backend, .dmThin)
        XCTAssertEqual(config.poolName, "lab_1")
        XCTAssertEqual(config.dataDevice, "/dev/vg0/lcdata")
        XCTAssertEqual(config.metadataDevice, "/dev/vg0/lcmeta")
        XCTAssertEqual(config.volumeSize, 20 << 30)
        XCTAssertEqual(config.thinBlockSize, 128 << 10)
        XCTAssertEqual(config.filesystem, .xfs)
        XCTAssertEqual(config.filesystem.mountOptions, "nouuid")
        XCTAssertEqual(Config().poolName, "loginchroot")
        XCTAssertEqual(Config().filesystem.mountOptions, "")

        assertConfigError("[dm-thin]\npool_name = a/b", line: 2, problemContains: "pool_name 'a/b'")
        assertConfigError("[dm-thin]\nblock_size = 96K", line: 2, problemContains: "not a multiple of 64K")
        assertConfigError("[dm-thin]\nfilesystem = btrfs", line: 2, problemContains: "unknown filesystem")
        assertConfigError("[store]\nmin_free = 95%", line: 2, problemContains: "0...90")
        assertConfigError("[dm-thin]\nmin_free = 5%", line: 2, problemContains: "unknown key 'min_free'")
        XCTAssertEqual(try ConfigParser.parse("[store]\nmin_free = 15%", file: "f").minFreePercent, 15)
        XCTAssertEqual(try ConfigParser.parse("[store]\nmin_free = 0", file: "f").minFreePercent, 0)
        assertConfigError("[dm-thin]\nmetadata_size = 1M", line: 2, problemContains: "outside 2M...16G")
        assertConfigError("[dm-thin]\ndata_device = /dev/sdb", line: 0, problemContains: "only one of data_device and metadata_device")
    }

    func testRelativePaths() {
        assertConfigError("[store]\npath = var/lib/loginchroot", line: 2, problemContains: "must be an absolute path")
        assertConfigError("[session]\nstate_dir = run", line: 2, problemContains: "must be an absolute path")
        assertConfigError("[session]\ncopy_files = /etc/hosts etc/resolv.conf", line: 2, problemContains: "absolute path")
        assertConfigError("[overlay]\nupper = upper", line: 2, problemContains: "absolute path")
        assertConfigError("[store]\nimage = img", line: 2, problemContains: "absolute path")
    }

    func testDotDotAndDotInPaths() {
        assertConfigError("[store]\npath = /var/../etc", line: 2, problemContains: "contains . or ..")
        assertConfigError("[store]\npath = /var/lib/..", line: 2, problemContains: "contains . or ..")
        assertConfigError("[session]\nstate_dir = /run/./lc", line: 2, problemContains: "contains . or ..")
        assertConfigError("[binds]\nbind = /srv:/../etc", line: 2, problemContains: "contains . or ..")
    }

    func testBadSizes() {
        for bad in ["8X", "0", "G", "-1G", "1.5G", "99999999999T", "", "8 G"] {
            assertConfigError("[store]\nimage_size = \(bad)", line: 2, problemContains: "is not a size")
        }
        assertConfigError("[overlay]\ntmpfs_size = lots", line: 2, problemContains: "is not a size")
        assertConfigError("[store]\nroot_size = 512K", line: 2, problemContains: "is less than 1M")
        XCTAssertEqual(try ConfigParser.parse("[store]\nroot_size = 64M", file: "f").rootSize, 64 << 20)
    }

    func testBadIntegers() {
        for bad in ["0", "1001", "two", "", "1e3", "2.0"] {
            assertConfigError("[store]\nkeep_generations = \(bad)", line: 2, problemContains: "is not a number in 1...1000")
        }
        assertConfigError("[session]\nkill_timeout = 301", line: 2, problemContains: "is not a number in 1...300")
        assertConfigError("[session]\nlock_timeout = 0", line: 2, problemContains: "is not a number in 1...600")
        XCTAssertEqual(try ConfigParser.parse("[session]\nlock_timeout = 600", file: "f").lockTimeoutSeconds, 600)
        assertConfigError("[session]\nkill_timeout = 0", line: 2, problemContains: "is not a number in 1...300")
    }

    func testBadBoolean() {
        for bad in ["maybe", "YES", "on", ""] {
            assertConfigError("[session]\nadd_user_entries = \(bad)", line: 2, problemContains: "is not yes or no")
        }
    }

    func testBadExemptNames() {
        assertConfigError("[session]\nexempt_users = root, bad/name", line: 2, problemContains: "entry 'bad/name' is not a valid")
        assertConfigError("[session]\nexempt_users = -rf", line: 2, problemContains: "not a valid user or group name")
        assertConfigError("[session]\nexempt_groups = wheel, ..", line: 2, problemContains: "entry '..'")
        assertConfigError("[session]\nexempt_groups = a:b", line: 2, problemContains: "not a valid")
        assertConfigError("[session]\nexempt_users = \(String(repeating: "a", count: 65))", line: 2, problemContains: "not a valid")
    }

    func testEmptyUpdateCommand() {
        assertConfigError("[master]\nupdate_command =   ", line: 2, problemContains: "update_command is empty")
    }

    func testHashStartsACommentOnlyAtLineStart() throws {
        let config = try ConfigParser.parse("[master]\n  # indented comment\nupdate_command = make -C /src # all\n", file: "/etc/test.conf")
        XCTAssertEqual(config.updateCommand, "make -C /src # all", "a '#' inside a value belongs to the value")
        assertConfigError("[store]\nbackend = btrfs # fast", line: 2, problemContains: "unknown backend 'btrfs # fast'")
        assertConfigError("[session] # sessions", line: 1, problemContains: "malformed section header")
    }

    func testTheLowerLayerIsADirectoryOrErofsOnTheOverlayBackendOnly() throws {
        XCTAssertEqual(try ConfigParser.parse("[store]\nbackend = overlay\n", file: "/etc/test.conf").overlayLower, .directory)
        XCTAssertEqual(try ConfigParser.parse("[store]\nbackend = overlay\n[overlay]\nlower = erofs\n", file: "/etc/test.conf")
                        .overlayLower, .erofs)
        assertConfigError("[store]\nbackend = overlay\n[overlay]\nlower = squashfs", line: 4, problemContains: "unknown lower 'squashfs'")
        assertConfigError("[store]\nbackend = btrfs\n[overlay]\nlower = erofs", line: 0,
                          problemContains: "lower = erofs, but the backend is btrfs")
    }

    func testTheFleetSection() throws {
        let defaults = try ConfigParser.parse("", file: "/etc/test.conf")
        XCTAssertEqual(defaults.fleetRef, "loginchroot/golden")
        XCTAssertEqual(defaults.fleetSigningKey, "", "no key: a login machine signs nothing")
        XCTAssertEqual(defaults.fleetGPGHome, "/etc/loginchroot/gpg")
        XCTAssertEqual(defaults.fleetKeepCommits, 5)
        XCTAssertEqual(defaults.fleetURL, "", "no url: the build host pulls nothing")
        XCTAssertEqual(defaults.fleetKeyring, "/etc/loginchroot/fleet.asc")
        XCTAssertEqual(defaults.fleetPullAttempts, 5)
        let machine = try ConfigParser.parse("[fleet]\nurl = https://build.example.org/lc/repo\nkeyring = /srv/fleet.asc\n"
                                             + "pull_attempts = 3\n", file: "/etc/test.conf")
        XCTAssertEqual(machine.fleetURL, "https://build.example.org/lc/repo")
        XCTAssertEqual(machine.fleetKeyring, "/srv/fleet.asc")
        XCTAssertEqual(machine.fleetPullAttempts, 3)
        for url in ["build.example.org/repo", "ftp://build/repo", "file://relative", "https://build/re po"] {
            assertConfigError("[fleet]\nurl = \(url)", line: 2, problemContains: "is not an https://")
        }
        let config = try ConfigParser.parse("""
            [fleet]
            ref = lab/debian-12.x86_64
            signing_key = 0123456789ABCDEFabcdef0123456789ABCDEF01
            gpg_home = /srv/keys
            keep_commits = 2
            """, file: "/etc/test.conf")
        XCTAssertEqual(config.fleetRef, "lab/debian-12.x86_64")
        XCTAssertEqual(config.fleetSigningKey, "0123456789ABCDEFabcdef0123456789ABCDEF01")
        XCTAssertEqual(config.fleetGPGHome, "/srv/keys")
        XCTAssertEqual(config.fleetKeepCommits, 2)
        for ref in ["", "/golden", "golden/", "a/../b", "gold en", "gold;en", "gölden"] {
            assertConfigError("[fleet]\nref = \(ref)", line: 2, problemContains: "is not an OSTree branch name")
        }
        assertConfigError("[fleet]\nsigning_key = alice@example.org", line: 2, problemContains: "is not a key id or fingerprint")
        assertConfigError("[fleet]\nkeep_commits = 1", line: 2, problemContains: "keep_commits")
        assertConfigError("[fleet]\ngpg_home = keys", line: 2, problemContains: "absolute")
    }

    func testTmpfsSizeWithDirectoryUpperIsAnError() {
        assertConfigError("[overlay]\nupper = /var/lib/upper\ntmpfs_size = 2G", line: 0, problemContains: "tmpfs_size is set but upper is a directory")
        assertConfigError("[overlay]\ntmpfs_size = 2G\nupper = /var/lib/upper", line: 0, problemContains: "tmpfs_size is set but upper is a directory")
    }

    func testPathsWithBlanksOrHashAreRejected() {
        // A trailing comment must not silently become part of a path.
        assertConfigError("[store]\npath = /var/lib/x # old store", line: 2, problemContains: "blank or '#'")
        assertConfigError("[session]\nstate_dir = /run/a#b", line: 2, problemContains: "blank or '#'")
        XCTAssertEqual(parseConfig("[master]\nupdate_command = apt-get update # nightly")?.updateCommand, "apt-get update # nightly")
    }

    func testControlCharacters() {
        assertConfigError("[store]\nbackend = btrfs\u{07}", line: 2, problemContains: "control character")
        assertConfigError("[store]\n\n# a NUL \u{00} even in a comment", line: 3, problemContains: "control character")
        assertConfigError("[store]\u{1B}", line: 1, problemContains: "control character")
        // Tabs and a carriage return at the end of a line are whitespace; one inside a value is not.
        assertConfigError("[store]\nbackend = over\rlay", line: 2, problemContains: "control character")
        XCTAssertEqual(parseConfig("[store]\nbackend\t=\toverlay\r")?.backend, .overlay)
    }

    /// The parser trims '\r' and exempts it from the control-character check,
    /// so CRLF files are meant to parse. They do not: Swift treats "\r\n" as one
    /// Character, `split(separator: "\n")` never splits there, and the whole
    /// file is one line that fails with "control character" on line 1.
    func testCRLFLineEndings() throws {
        let text = "[store]\r\nbackend = overlay\r\n[session]\r\nmode = per-session\r\n"
        do {
            let config = try ConfigParser.parse(text, file: "/etc/test.conf")
            XCTAssertEqual(config.backend, .overlay)
            XCTAssertEqual(config.mode, .perSession)
        } catch {
            XCTFail("CRLF config must parse: \(error)")
        }
    }

    func testOverlongLine() {
        let long = "# " + String(repeating: "x", count: ConfigParser.maxLineBytes)
        assertConfigError("[store]\n\(long)", line: 2, problemContains: "longer than 4096 bytes")
        // Exactly the limit is fine.
        let atLimit = "#" + String(repeating: "x", count: ConfigParser.maxLineBytes - 1)
        XCTAssertNotNil(parseConfig("[store]\n\(atLimit)"))
    }

    func testFileTooLarge() {
        let text = String(repeating: "# padding padding padding padding\n", count: (1 << 20) / 30)
        XCTAssertGreaterThan(text.utf8.count, 1 << 20)
        assertConfigError(text, line: 0, problemContains: "larger than 1 MiB")
    }

    func testErrorsNameTheGivenFile() {
        do {
            _ = try ConfigParser.parse("[nope]", file: "/somewhere/else.conf")
            XCTFail("expected an error")
        } catch let error as ConfigError {
            XCTAssertEqual(error.file, "/somewhere/else.conf")
            XCTAssertEqual(error.description, "/somewhere/else.conf:1: \(error.problem) (fix: \(error.fix))")
        } catch {
            XCTFail("\(error)")
        }
        XCTAssertEqual(ConfigError(file: "/f", line: 0, problem: "p", fix: "x").description, "/f: p (fix: x)")
    }

    // MARK: binds

    func testBindLinesAccumulateAndReplaceDefaults() throws {
        let config = try ConfigParser.parse("""
        [binds]
        bind = /proc recursive
        bind = /home
        [session]
        mode = per-user
        [binds]
        bind = /run/user/%u optional
        """, file: "/etc/test.conf")
        XCTAssertEqual(config.binds, [
            BindEntry(source: "/proc", recursive: true),
            BindEntry(source: "/home"),
            BindEntry(source: "/run/user/%u", optional: true),
        ])
        XCTAssertFalse(config.binds.contains(BindEntry(source: "/dev")), "defaults must be replaced, not extended")
    }

    func testBindOptions() throws {
        var entry = try ConfigParser.parseBind("/srv/data:/data ro recursive optional private")
        XCTAssertEqual(entry, BindEntry(source: "/srv/data", target: "/data", readOnly: true, recursive: true,
                                        propagation: .private, optional: true))
        entry = try ConfigParser.parseBind("/srv shared")
        XCTAssertEqual(entry.propagation, .shared)
        XCTAssertEqual(entry.target, "/srv")
        XCTAssertFalse(entry.readOnly)
        XCTAssertFalse(entry.recursive)
        XCTAssertFalse(entry.optional)
        entry = try ConfigParser.parseBind("/srv slave")
        XCTAssertEqual(entry.propagation, .slave)
        entry = try ConfigParser.parseBind("/srv")
        XCTAssertEqual(entry.propagation, .slave, "slave is the default propagation")
        entry = try ConfigParser.parseBind("/srv ro rw")
        XCTAssertFalse(entry.readOnly, "a later rw overrides ro")
        entry = try ConfigParser.parseBind("\t/a//b/:/c/d/  ro")
        XCTAssertEqual(entry.source, "/a/b")
        XCTAssertEqual(entry.target, "/c/d")
        XCTAssertTrue(entry.readOnly)
    }

    /// loginchroot.conf(5): "Neither path can contain blanks or a colon." The
    /// parser splits SOURCE:TARGET at the first colon only and drops empty
    /// halves, so these malformed lines are accepted instead of rejected.
    func testMalformedSourceTargetIsRejected() throws {
        var accepted: [String] = []
        for value in ["/a:/b:/c", "/srv/data:", ":/srv/data", "/a::/b"] {
            if let entry = try? ConfigParser.parseBind(value) {
                accepted.append("'\(value)' -> source \(entry.source), target \(entry.target)")
            }
        }
        XCTAssertEqual(accepted, [], "malformed bind lines must be rejected")
    }

    func testBindTargetRootIsRejected() {
        assertConfigError("[binds]\nbind = /srv:/", line: 2, problemContains: "bind target '/'")
        assertConfigError("[binds]\nbind = /", line: 2, problemContains: "bind target '/'")
        assertConfigError("[binds]\nbind = //", line: 2, problemContains: "bind target '/'")
        assertConfigError("[binds]\nbind = /srv:// ro", line: 2, problemContains: "bind target '/'")
    }

    func testBadBinds() {
        assertConfigError("[binds]\nbind =", line: 2, problemContains: "bind needs a path")
        assertConfigError("[binds]\nbind = /srv rox", line: 2, problemContains: "unknown bind option 'rox'")
        assertConfigError("[binds]\nbind = srv", line: 2, problemContains: "absolute path")
        assertConfigError("[binds]\nbind = /srv:data", line: 2, problemContains: "absolute path")
        assertConfigError("[binds]\nbind = /ok\nbind = /bad private slave nonsense", line: 3, problemContains: "unknown bind option")
    }

    func testBindResolvesUid() {
        let entry = BindEntry(source: "/run/user/%u", target: "/x/%u/%u", optional: true).resolved(uid: 1234)
        XCTAssertEqual(entry.source, "/run/user/1234")
        XCTAssertEqual(entry.target, "/x/1234/1234")
        XCTAssertTrue(entry.optional)
    }

    // MARK: property test: random input parses or throws ConfigError, never crashes

    static let validConfig = """
    # loginchroot.conf
    [store]
    backend = btrfs
    path = /var/lib/loginchroot
    image = /var/lib/loginchroot.img
    image_size = 8G
    keep_generations = 2

    [session]
    mode = per-user
    on_error = deny
    exempt_users = root
    exempt_groups = wheel
    state_dir = /run/loginchroot
    add_user_entries = yes
    copy_files = /etc/resolv.conf /etc/hosts
    kill_timeout = 5

    [overlay]
    upper = tmpfs
    tmpfs_size = 1G

    [binds]
    bind = /proc recursive
    bind = /sys ro recursive
    bind = /srv/data:/data ro private optional
    bind = /run/user/%u optional

    [master]
    update_command = apt-get update && apt-get -y dist-upgrade
    """

    func testValidConfigParses() {
        XCTAssertEqual(parseConfig(Self.validConfig)?.binds.count, 4)
    }

    func testRandomBytesParseOrThrowConfigError() {
        var random = SplitMix64(seed: 0x5EED_0001)
        let alphabet = Array("[]=#:/. \t\r\nabcdegiklmnoprstuy-_%0123456789GM".utf8)
        var held = 0
        for _ in 0..<CorruptInputTests.rounds {
            let length = random.below(200)
            var bytes: [UInt8] = []
            for _ in 0..<length {
                // Mostly config-ish characters so the parser gets past the first line; some raw bytes.
                bytes.append(random.below(4) == 0 ? UInt8(truncatingIfNeeded: random.next()) : alphabet[random.below(alphabet.count)])
            }
            if checkParseOrConfigError(String(decoding: bytes, as: UTF8.self)) { held += 1 }
        }
        recordReliability("random bytes as loginchroot.conf (seeded)", tries: CorruptInputTests.rounds, held: held)
    }

    func testTokenSoupParsesOrThrowsConfigError() {
        var random = SplitMix64(seed: 0x5EED_0002)
        let sections = ["[store]", "[session]", "[overlay]", "[binds]", "[master]", "[dm-thin]", "[x]", "[", "[]"]
        let keys = ["backend", "path", "image", "image_size", "keep_generations", "min_free", "pool_name", "volume_size",
                    "data_size", "metadata_size", "block_size", "filesystem", "data_device", "metadata_device", "mode", "on_error", "exempt_users",
                    "exempt_groups", "state_dir", "add_user_entries", "copy_files", "kill_timeout", "lock_timeout", "setuid",
                    "runtime_dir_size", "upper", "tmpfs_size",
                    "bind", "update_command", "", "bogus"]
        let values = ["btrfs", "overlay", "/a", "/a/../b", "rel", "/", "//", "8G", "0", "-1", "1001", "7", "yes", "no",
                      "per-user", "per-session", "deny", "allow", "root, alice", "-x", "tmpfs", "/a:/b ro", "/a:/",
                      "/a recursive slave optional", "/a bogus", "", "%u", "/run/user/%u", "a=b", "# c", "\u{7F}", "é",
                      "10%", "91%", "64K", "65K", "2M", "17G", "ext4", "xfs", "/dev/vda", "lc_pool", "18446744073709551616"]
        var held = 0
        for _ in 0..<CorruptInputTests.rounds {
            var lines: [String] = []
            for _ in 0..<random.below(12) {
                switch random.below(5) {
                case 0: lines.append(sections[random.below(sections.count)])
                case 1: lines.append("# comment")
                default:
                    let value = (0..<random.below(3) + 1).map { _ in values[random.below(values.count)] }.joined(separator: " ")
                    lines.append("\(keys[random.below(keys.count)]) = \(value)")
                }
            }
            if checkParseOrConfigError(lines.joined(separator: "\n")) { held += 1 }
        }
        recordReliability("random sections, keys and values as loginchroot.conf (seeded)", tries: CorruptInputTests.rounds, held: held)
    }

    func testMutatedValidConfigParsesOrThrowsConfigError() {
        let interesting = Array("[]=#:/.\t\n\r \0\u{1}%-+".utf8) + [0xFF, 0xC3, 0x80]
        let held = countHolding(mutationsOf: Self.validConfig, seed: 0x5EED_0003, interesting: interesting,
                                rounds: CorruptInputTests.rounds) { checkParseOrConfigError($0) }
        recordReliability("random mutations of a valid loginchroot.conf (seeded)", tries: CorruptInputTests.rounds, held: held)
    }

    /// True (and no assertion fails) when `text` parses to a config that
    /// keeps the parser's guarantees, or is refused with a ConfigError that
    /// names the file, a line within it, the problem and the fix.
    @discardableResult
    private func checkParseOrConfigError(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> Bool {
        var broken: [String] = []
        func expect(_ condition: Bool, _ what: @autoclosure () -> String) { if !condition { broken.append(what()) } }
        do {
            let config = try ConfigParser.parse(text, file: "/fuzz.conf")
            for bind in config.binds {
                expect(bind.source.hasPrefix("/") && bind.target.hasPrefix("/"), "relative bind \(bind)")
                expect(bind.target != "/", "bind over / \(bind)")
                expect(!bind.source.split(separator: "/").contains { $0 == ".." || $0 == "." }, "dot in bind \(bind)")
            }
            expect((1...1000).contains(config.keepGenerations), "keep_generations \(config.keepGenerations)")
            expect((1...300).contains(config.killTimeoutSeconds), "kill_timeout \(config.killTimeoutSeconds)")
            expect(config.storePath.hasPrefix("/") && config.stateDir.hasPrefix("/"), "relative store or state path")
            expect(config.storeImageSize > 0, "image_size 0")
            expect(!config.updateCommand.isEmpty, "empty update_command")
            expect((0...90).contains(config.minFreePercent), "min_free \(config.minFreePercent)")
            for name in config.exemptUsers + config.exemptGroups { expect(UserName(name) != nil, "exempt name \(name)") }
        } catch let error as ConfigError {
            // As the parser counts: "\r\n" is one Character in Swift.
            let lineCount = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).count
            expect(error.file == "/fuzz.conf", "error names \(error.file)")
            expect((0...lineCount).contains(error.line), "line \(error.line) of \(lineCount)")
            expect(!error.problem.isEmpty && !error.fix.isEmpty, "error without problem or fix: \(error)")
        } catch {
            expect(false, "non-ConfigError thrown: \(error)")
        }
        XCTAssertEqual(broken, [], "input: \(text.debugDescription)", file: file, line: line)
        return broken.isEmpty
    }
}
