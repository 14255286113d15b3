// swift-tools-version:6.0
// loginchroot: a PAM session module and an admin helper that give every login
// its own copy-on-write root.
//
// Layering (each layer only imports the ones above it):
//   LoginChrootCore      pure logic: config, names, policy, plan, state machine
//   CLinux               C wrappers for what Swift cannot call (unshare, ioctls)
//   CDeviceMapper        libdevmapper calls, its logging captured (never printed)
//   CSELinux             libselinux's file-context lookup (SELinux machines only)
//   LoginChrootPlatform  the only place where syscalls happen; typed errors
//   LoginChroot          backends behind one protocol, and the session manager
//   CPamShim + PamModule pam_loginchroot.so (C shim + Swift entry points)
//   loginchroot          the admin CLI, one file per verb
import PackageDescription

let packageDir = Context.packageDirectory

// The PAM module must load in processes that have no Swift toolchain, so the
// runtime is linked in statically (release builds only: tests link debug).
// `make build` points .build/static-libstdcxx/libstdc++.a at gcc's archive,
// so that the runtime's -lstdc++ links statically too: loading libstdc++.so
// cost every login about 4 ms (BENCHMARKS.md). Without it, it links dynamically.
let staticStdlib: [SwiftSetting] = [.unsafeFlags(["-static-stdlib"], .when(configuration: .release))]
// Debian's hardening (lintian checks it in the package): fortified libc
// calls in the C parts, and every binary bound at load time.
let fortified: [CSetting] = [.define("_FORTIFY_SOURCE", to: "2", .when(configuration: .release))]
let moduleLinkFlags: [LinkerSetting] = [
    .unsafeFlags(["-static-stdlib", "-L\(packageDir)/.build/static-libstdcxx"], .when(configuration: .release)),
    .unsafeFlags([
        "-Xlinker", "--version-script=\(packageDir)/CModule/exports.map",
        "-Xlinker", "-soname=pam_loginchroot.so",
        // pam_end() dlcloses us; unloading a Swift runtime crashes the host later.
        "-Xlinker", "-z", "-Xlinker", "nodelete",
        "-Xlinker", "-z", "-Xlinker", "now",
        "-Xlinker", "-z", "-Xlinker", "relro",
        "-Xlinker", "-z", "-Xlinker", "defs",
    ]),
    .linkedLibrary("pam"),
]

let package = Package(
    name: "loginchroot",
    products: [
        .library(name: "loginchroot_pam", type: .dynamic, targets: ["PamModule", "CPamShim"]),
        .executable(name: "loginchroot", targets: ["loginchroot"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "LoginChrootCore", swiftSettings: staticStdlib),
        .target(name: "CLinux", cSettings: fortified),
        // libdevmapper is dlopened on first use (devmapper.c); only its header is needed.
        .target(name: "CDeviceMapper", cSettings: fortified),
        // libselinux too, and only where SELinux is on (selinux.c).
        .target(name: "CSELinux", cSettings: fortified),
        .target(name: "LoginChrootPlatform", dependencies: ["CLinux", "CDeviceMapper", "CSELinux", "LoginChrootCore"],
                swiftSettings: staticStdlib),
        .target(
            name: "LoginChroot",
            dependencies: ["LoginChrootCore", "LoginChrootPlatform"],
            swiftSettings: staticStdlib),
        .target(name: "CPamShim", path: "CModule", exclude: ["exports.map"], cSettings: fortified),
        .target(
            name: "PamModule",
            dependencies: ["LoginChroot", "CPamShim"],
            swiftSettings: staticStdlib,
            linkerSettings: moduleLinkFlags),
        .executableTarget(
            name: "loginchroot",
            dependencies: [
                "LoginChroot",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            // Installed machines need no toolchain for the CLI either.
            // (ArgumentParser pulls in FoundationEssentials, whose C shims the
            // static link has to name.)
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-Xlinker", "-z", "-Xlinker", "now"], .when(configuration: .release)),
                             .linkedLibrary("_FoundationCShims", .when(configuration: .release)),
                             .linkedLibrary("_FoundationCollections", .when(configuration: .release)),
                             .linkedLibrary("swiftSynchronization", .when(configuration: .release))]),
        // Tests, one target per module they test, and what both share.
        .target(name: "LoginChrootTestSupport", dependencies: ["LoginChrootCore"], path: "Tests/LoginChrootTestSupport"),
        .testTarget(name: "LoginChrootCoreTests", dependencies: ["LoginChrootCore", "LoginChrootTestSupport"]),
        .testTarget(name: "LoginChrootTests",
                    dependencies: ["LoginChroot", "LoginChrootCore", "LoginChrootPlatform", "LoginChrootTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
